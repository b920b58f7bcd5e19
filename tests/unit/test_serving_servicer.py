"""The gRPC shell: protobuf to engine types and back, load parameters, and error-to-status mapping."""

from __future__ import annotations

import json
from typing import Any

import grpc
import numpy as np
import pytest

from edge_agent.proto import inference_pb2 as pb
from edge_agent.serving import InferResponse, ModelStats, OutputTensor
from edge_agent.serving.errors import InvalidRequest, ModelNotFound
from edge_agent.serving.servicer import (
    infer_request_from_proto,
    infer_response_to_proto,
    load_options,
    rpc,
    statistics_to_proto,
)
from edge_agent.serving.statistics import BatchStats, Duration, InferStats


def infer_request(raw: list[bytes] | None = None) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m", model_version="1.0.0", id="r")
    message.inputs.add(name="a", datatype="FP32", shape=[1, 2])
    message.inputs.add(name="b", datatype="INT64", shape=[3])
    message.raw_input_contents.extend(raw or [])
    message.outputs.add(name="y")
    return message


def test_raw_inputs_keep_their_order_and_bytes() -> None:
    request = infer_request([b"\x00" * 8, b"\x01" * 24])
    converted = infer_request_from_proto(request)
    assert (converted.model_name, converted.model_version, converted.id) == ("m", "1.0.0", "r")
    assert [(t.name, t.datatype, t.shape, t.raw) for t in converted.inputs] == [
        ("a", "FP32", (1, 2), b"\x00" * 8),
        ("b", "INT64", (3,), b"\x01" * 24),
    ]
    assert list(converted.outputs) == ["y"] and converted.raw is False


def test_typed_inputs_carry_the_fields_that_are_set() -> None:
    request = infer_request()
    request.inputs[0].contents.fp32_contents.extend([1.5, 2.5])
    request.inputs[1].contents.int64_contents.extend([1, 2, 3])
    converted = infer_request_from_proto(request)
    assert converted.inputs[0].typed == {"fp32_contents": [1.5, 2.5]}
    np.testing.assert_array_equal(converted.inputs[1].decode(), np.array([1, 2, 3]))


def test_the_raw_contents_count_must_match_the_inputs() -> None:
    with pytest.raises(InvalidRequest, match="1 raw_input_contents entries for 2 inputs"):
        infer_request_from_proto(infer_request([b"\x00" * 8]))


def test_an_input_cannot_be_both_raw_and_typed() -> None:
    request = infer_request([b"\x00" * 8, b"\x00" * 24])
    request.inputs[1].contents.int64_contents.extend([1, 2, 3])
    with pytest.raises(InvalidRequest, match="'b' has both"):
        infer_request_from_proto(request)


def test_the_raw_parameter_must_be_a_bool() -> None:
    request = infer_request([b"\x00" * 8, b"\x00" * 24])
    request.parameters["raw"].bool_param = True
    assert infer_request_from_proto(request).raw is True
    request.parameters["raw"].string_param = "true"
    with pytest.raises(InvalidRequest, match="'raw' must be a bool"):
        infer_request_from_proto(request)


def test_outputs_are_answered_raw_little_endian_in_order() -> None:
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    z = np.array([True, False])
    response = InferResponse(
        "m", "1.0.0", "r", [OutputTensor("y", "FP32", (2, 3), y), OutputTensor("z", "BOOL", (2,), z)]
    )
    message = infer_response_to_proto(response)
    assert [(o.name, o.datatype, list(o.shape)) for o in message.outputs] == [
        ("y", "FP32", [2, 3]),
        ("z", "BOOL", [2]),
    ]
    assert message.raw_output_contents[0] == y.astype("<f4").tobytes()
    assert message.raw_output_contents[1] == b"\x01\x00"
    assert (message.model_name, message.model_version, message.id) == ("m", "1.0.0", "r")


def test_statistics_fill_tritons_fields() -> None:
    stats = ModelStats(
        name="m",
        version="1.0.0",
        last_inference_ms=1234,
        inference_count=10,
        execution_count=3,
        inference=InferStats(success=Duration(4, 400), fail=Duration(1, 10), queue=Duration(4, 40)),
        batches=(BatchStats(batch_size=4, compute_infer=Duration(2, 200)),),
    )
    message = statistics_to_proto(stats)
    assert (message.name, message.version, message.last_inference) == ("m", "1.0.0", 1234)
    assert (message.inference_count, message.execution_count) == (10, 3)
    assert (message.inference_stats.success.count, message.inference_stats.success.ns) == (4, 400)
    assert (message.inference_stats.fail.count, message.inference_stats.queue.ns) == (1, 40)
    assert message.batch_stats[0].batch_size == 4 and message.batch_stats[0].compute_infer.ns == 200


def repository_parameters(**values: Any) -> dict[str, pb.ModelRepositoryParameter]:
    parameters = {}
    for key, value in values.items():
        parameter = pb.ModelRepositoryParameter()
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, bytes):
            parameter.bytes_param = value
        else:
            parameter.string_param = value
        parameters[key] = parameter
    return parameters


def test_load_options_come_from_parameters_or_from_the_config_json() -> None:
    assert load_options(repository_parameters(version="1.2.0")) == {"version": "1.2.0"}
    config = json.dumps({"bundle": "/data/m-2.0.0.efb"})
    assert load_options(repository_parameters(config=config)) == {"bundle": "/data/m-2.0.0.efb"}
    assert load_options({}) == {}


@pytest.mark.parametrize(
    ("parameters", "fragment"),
    [
        (repository_parameters(config="{oops"), "not JSON"),
        (repository_parameters(config="[1]"), "JSON object"),
        (repository_parameters(config='{"max_batch": 4}'), "unknown key(s) ['max_batch']"),
        (repository_parameters(config='{"version": 2}'), "must be strings"),
        (repository_parameters(version=True), "'version' must be a string"),
        (repository_parameters(**{"file:1/model.onnx": b"..."}), "signed bundles"),
    ],
)
def test_bad_load_options_are_invalid(
    parameters: dict[str, pb.ModelRepositoryParameter], fragment: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        load_options(parameters)
    assert fragment in str(caught.value)


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted


class Handlers:
    @rpc
    def not_found(self, request: object, context: Any) -> None:
        raise ModelNotFound("no model named 'x'", hint="check the name")

    @rpc
    def broken(self, request: object, context: Any) -> None:
        raise ZeroDivisionError("division by zero")

    @rpc
    def fine(self, request: object, context: Any) -> str:
        return "ok"


@pytest.mark.parametrize(
    ("handler", "code", "details"),
    [
        ("not_found", grpc.StatusCode.NOT_FOUND, "no model named 'x' (check the name)"),
        ("broken", grpc.StatusCode.INTERNAL, "internal error in broken: division by zero"),
    ],
)
def test_errors_become_statuses_and_nothing_escapes(
    handler: str, code: grpc.StatusCode, details: str
) -> None:
    context = FakeContext()
    with pytest.raises(Aborted):
        getattr(Handlers(), handler)(object(), context)
    assert context.code == code and context.details == details
    assert Handlers().fine(object(), FakeContext()) == "ok"
