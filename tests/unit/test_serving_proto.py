"""Our ``inference.proto`` against tritonclient's compiled one: every message, field, number and type.

tritonclient talks to the agent unchanged only if each message we declare matches Triton's
exactly (names, numbers, types, labels, nested and map types, oneofs), and each method we serve
has Triton's request and response types at Triton's path.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tritonclient.grpc import service_pb2 as triton_pb

from edge_agent.proto import inference_pb2 as pb
from edge_agent.proto import inference_pb2_grpc as pb_grpc
from edge_agent.serving.servicer import InferenceServicer

OURS = pb.DESCRIPTOR
THEIRS = triton_pb.DESCRIPTOR


def field_signature(field: FieldDescriptor) -> dict[str, Any]:
    message = field.message_type
    return {
        "number": field.number,
        "type": field.type,
        "repeated": field.is_repeated,
        "message": message.full_name if message is not None else None,
        "map": bool(message is not None and message.GetOptions().map_entry),
        "oneof": field.containing_oneof.name if field.containing_oneof is not None else None,
    }


def message_signature(message: Descriptor) -> dict[str, Any]:
    """Everything about a message that reaches the wire, recursively through nested and map types."""
    return {
        "full_name": message.full_name,
        "fields": {field.name: field_signature(field) for field in message.fields},
        "nested": {nested.name: message_signature(nested) for nested in message.nested_types},
        "oneofs": sorted(oneof.name for oneof in message.oneofs),
    }


def test_the_package_and_service_are_tritons() -> None:
    assert OURS.package == THEIRS.package == "inference"
    assert list(OURS.services_by_name) == ["GRPCInferenceService"]


@pytest.mark.parametrize("name", sorted(OURS.message_types_by_name))
def test_every_message_matches_tritons(name: str) -> None:
    assert name in THEIRS.message_types_by_name, f"Triton has no message {name}"
    assert message_signature(OURS.message_types_by_name[name]) == message_signature(
        THEIRS.message_types_by_name[name]
    )


def test_every_message_a_served_method_uses_is_declared() -> None:
    service = OURS.services_by_name["GRPCInferenceService"]
    used = {m.input_type.name for m in service.methods} | {m.output_type.name for m in service.methods}
    assert used <= set(OURS.message_types_by_name)
    assert len(OURS.message_types_by_name) >= 27  # the core calls, statistics and the repository


@pytest.mark.parametrize("method", [m.name for m in OURS.services_by_name["GRPCInferenceService"].methods])
def test_every_method_has_tritons_types(method: str) -> None:
    ours = OURS.services_by_name["GRPCInferenceService"].methods_by_name[method]
    theirs = THEIRS.services_by_name["GRPCInferenceService"].methods_by_name[method]
    assert (ours.input_type.full_name, ours.output_type.full_name) == (
        theirs.input_type.full_name,
        theirs.output_type.full_name,
    )
    assert not ours.client_streaming and not ours.server_streaming


def test_the_calls_the_issue_requires_are_served() -> None:
    served = set(OURS.services_by_name["GRPCInferenceService"].methods_by_name)
    assert served == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelStatistics",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    }
    for name in served:  # each one is ours, not the generated base's UNIMPLEMENTED answer
        assert getattr(InferenceServicer, name) is not getattr(pb_grpc.GRPCInferenceServiceServicer, name)


def test_bytes_written_by_one_side_parse_identically_on_the_other() -> None:
    ours = pb.ModelInferRequest(model_name="m", model_version="1.0.0", id="r1")
    tensor = ours.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    tensor.parameters["p"].int64_param = 7
    ours.parameters["raw"].bool_param = True
    ours.outputs.add(name="y")
    ours.raw_input_contents.append(b"\x00" * 16)
    theirs = triton_pb.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.SerializeToString(deterministic=True) == ours.SerializeToString(deterministic=True)
    assert theirs.inputs[0].parameters["p"].int64_param == 7 and theirs.parameters["raw"].bool_param


def test_our_messages_live_in_a_private_pool() -> None:
    # Both sets of descriptors are loaded in this process: that only works because ours are private.
    assert pb.POOL.FindMessageTypeByName("inference.ModelInferRequest") is pb.ModelInferRequest.DESCRIPTOR
    assert pb.ModelInferRequest.DESCRIPTOR is not triton_pb.ModelInferRequest.DESCRIPTOR
