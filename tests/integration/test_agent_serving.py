"""A real ``edgefleet agent serve`` process, driven by the standard tritonclient.

One agent per module serves the digits CNN as ONNX, TFLite and OpenVINO bundles plus a model that
fails at run time for some inputs; every acceptance call and every error case goes through
``tritonclient.grpc.InferenceServerClient`` (a raw gRPC stub only where tritonclient cannot send
what a test needs: typed contents and malformed requests).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from edge_agent.api import LocalInference
from edge_agent.proto import inference_pb2 as pb
from edge_agent.proto import inference_pb2_grpc as pb_grpc
from models.bundle import inspect_bundle
from tests.support.agent_process import AgentProcess, running_agent
from tests.support.digits_bundles import (
    FAULTY_NAME,
    FORMATS,
    INPUT_NAME,
    OUTPUT_NAME,
    BundleSet,
    build_faulty_bundle,
    faulty_forward,
    shared_bundles,
)

pytestmark = pytest.mark.integration

MAX_MESSAGE_MB = 8
PLATFORMS = {"onnx": "onnxruntime_onnx", "tflite": "litert_tflite", "openvino": "openvino_ir"}
SAMPLE_BYTES = 1 * 8 * 8 * 4


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> BundleSet:
    return shared_bundles(tmp_path_factory)


@pytest.fixture(scope="module")
def faulty_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_faulty_bundle(tmp_path_factory.mktemp("faulty"))


@pytest.fixture(scope="module")
def agent(
    digits: BundleSet, faulty_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    bundles = [digits.path(fmt) for fmt in FORMATS] + [faulty_bundle]
    # A generous batch delay: concurrent requests reliably share batches, and a lone request
    # never waits for it (the batcher sees that nobody else is coming).
    extra = ["--max-message-mb", str(MAX_MESSAGE_MB), "--max-batch", "8", "--batch-delay-ms", "50"]
    with running_agent(
        bundles, digits.public_key_path, tmp_path_factory.mktemp("agent"), extra=extra
    ) as process:
        yield process


@pytest.fixture(scope="module")
def local(digits: BundleSet, faulty_bundle: Path) -> Iterator[LocalInference]:
    """The in-process API over the same bundles (no batching): the reference for the agent's answers."""
    bundles = [digits.path(fmt) for fmt in FORMATS] + [faulty_bundle]
    with LocalInference(bundles, trusted_keys=[digits.public_key_path], max_batch=1) as api:
        yield api


@pytest.fixture
def client(agent: AgentProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(agent.url) as connection:
        yield connection


@pytest.fixture
def stub(agent: AgentProcess) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(agent.url) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def digits_input(batch: np.ndarray, datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput(INPUT_NAME, list(batch.shape), datatype)
    tensor.set_data_from_numpy(batch)
    return tensor


def random_digits(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 1, 8, 8), dtype=np.float32)


def expect_error(status: str, call: object, *fragments: str) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()  # type: ignore[operator]
    assert caught.value.status() == f"StatusCode.{status}", caught.value.message()
    message = str(caught.value.message())
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def statistics(client: triton.InferenceServerClient, model: str) -> dict[str, object]:
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"]
    assert len(stats) == 1
    return dict(stats[0])


def count(stats: dict[str, object], *path: str) -> int:
    value: object = stats
    for key in path:
        value = value.get(key, 0) if isinstance(value, dict) else 0
    return int(value)  # type: ignore[call-overload]


# --- health, metadata, repository -----------------------------------------------------------------


def test_server_is_live_and_ready_and_describes_itself(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "edgefleet-agent"
    assert {"model_repository", "statistics"} <= set(metadata["extensions"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_is_ready_by_name_and_version(
    client: triton.InferenceServerClient, digits: BundleSet, fmt: str
) -> None:
    name = digits.name(fmt)
    assert client.is_model_ready(name)
    assert client.is_model_ready(name, "1.0.0")
    assert not client.is_model_ready(name, "9.9.9")
    assert not client.is_model_ready(f"{name}-missing")


@pytest.mark.parametrize("fmt", FORMATS)
def test_model_metadata_gives_the_manifest_signature(
    client: triton.InferenceServerClient, digits: BundleSet, fmt: str
) -> None:
    metadata = client.get_model_metadata(digits.name(fmt), as_json=True)
    assert metadata["name"] == digits.name(fmt)
    assert metadata["versions"] == ["1.0.0"]
    assert metadata["platform"] == PLATFORMS[fmt]
    assert metadata["inputs"] == [{"name": INPUT_NAME, "datatype": "FP32", "shape": ["-1", "1", "8", "8"]}]
    assert metadata["outputs"] == [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": ["-1", "10"]}]


def test_repository_index_lists_every_model(client: triton.InferenceServerClient, digits: BundleSet) -> None:
    index = client.get_model_repository_index(as_json=True)["models"]
    rows = {(row["name"], row["version"]): row["state"] for row in index}
    for fmt in FORMATS:
        assert rows[(digits.name(fmt), "1.0.0")] == "READY"
    assert rows[(FAULTY_NAME, "1.0.0")] == "READY"


@pytest.mark.parametrize("fmt", FORMATS)
def test_unload_then_load_through_tritonclient(
    client: triton.InferenceServerClient, digits: BundleSet, fmt: str
) -> None:
    name = digits.name(fmt)
    batch = digits.golden_inputs[:2]
    client.unload_model(name)
    try:
        assert not client.is_model_ready(name)
        states = {
            row["name"]: row.get("state") for row in client.get_model_repository_index(as_json=True)["models"]
        }
        assert states[name] == "UNAVAILABLE"
        expect_error("NOT_FOUND", lambda: client.infer(name, [digits_input(batch)]), name, "not loaded")
    finally:
        client.load_model(name)
    assert client.is_model_ready(name)
    result = client.infer(name, [digits_input(batch)])
    assert result.as_numpy(OUTPUT_NAME).shape == (2, 10)


def test_load_with_a_config_naming_an_unknown_version_is_not_found(
    client: triton.InferenceServerClient, digits: BundleSet
) -> None:
    name = digits.name("onnx")
    expect_error(
        "NOT_FOUND", lambda: client.load_model(name, config=json.dumps({"version": "7.0.0"})), "7.0.0"
    )
    expect_error("INVALID_ARGUMENT", lambda: client.load_model(name, config="{not json"), "not JSON")
    assert client.is_model_ready(name)


# --- inference ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "uds"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_infer_matches_the_in_process_api_within_golden_tolerance(
    agent: AgentProcess, local: LocalInference, digits: BundleSet, fmt: str, transport: str
) -> None:
    name = digits.name(fmt)
    golden = inspect_bundle(digits.path(fmt)).golden
    assert golden is not None
    batch = digits.golden_inputs
    url = agent.url if transport == "tcp" else agent.uds_url
    with triton.InferenceServerClient(url) as connection:
        result = connection.infer(
            name, [digits_input(batch)], outputs=[triton.InferRequestedOutput(OUTPUT_NAME)]
        )
    served = result.as_numpy(OUTPUT_NAME)
    in_process = local.infer(name, {INPUT_NAME: batch})[OUTPUT_NAME]
    assert result.get_response().model_version == "1.0.0"
    assert served.dtype == np.float32 and served.shape == (len(batch), 10)
    np.testing.assert_allclose(served, in_process, atol=golden.atol, rtol=golden.rtol)
    np.testing.assert_allclose(served, digits.golden_outputs, atol=golden.atol, rtol=golden.rtol)


def test_typed_contents_give_the_same_answer_as_raw(
    client: triton.InferenceServerClient, stub: pb_grpc.GRPCInferenceServiceStub, digits: BundleSet
) -> None:
    name = digits.name("onnx")
    batch = digits.golden_inputs[:3]
    request = pb.ModelInferRequest(model_name=name)
    request.inputs.add(name=INPUT_NAME, datatype="FP32", shape=batch.shape).contents.fp32_contents.extend(
        batch.ravel().tolist()
    )
    response = stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == [OUTPUT_NAME]
    typed = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(
        tuple(response.outputs[0].shape)
    )
    raw = client.infer(name, [digits_input(batch)]).as_numpy(OUTPUT_NAME)
    np.testing.assert_array_equal(typed, raw)


def test_a_request_above_grpc_default_4mb_is_served(
    client: triton.InferenceServerClient, digits: BundleSet
) -> None:
    rows = (5 * 1024 * 1024) // SAMPLE_BYTES + 1  # just over 5 MB: grpcio alone would refuse it
    batch = random_digits(rows, seed=5)
    result = client.infer(digits.name("onnx"), [digits_input(batch)])
    assert result.as_numpy(OUTPUT_NAME).shape == (rows, 10)


def test_concurrent_requests_each_get_their_own_answer(
    agent: AgentProcess, local: LocalInference, digits: BundleSet
) -> None:
    name = digits.name("onnx")
    callers = 24
    batches = [random_digits(1 + i % 3, seed=100 + i) for i in range(callers)]
    expected = [local.infer(name, {INPUT_NAME: batch})[OUTPUT_NAME] for batch in batches]
    answers: list[np.ndarray | None] = [None] * callers
    errors: list[BaseException] = []
    barrier = threading.Barrier(callers)

    def call(i: int) -> None:
        try:
            with triton.InferenceServerClient(agent.url) as connection:
                assert connection.is_server_live()  # connect first: the requests then arrive together
                barrier.wait()
                answers[i] = connection.infer(name, [digits_input(batches[i])]).as_numpy(OUTPUT_NAME)
        except BaseException as exc:
            errors.append(exc)

    with triton.InferenceServerClient(agent.url) as connection:
        before = statistics(connection, name)
        threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        after = statistics(connection, name)
    assert not errors
    golden = inspect_bundle(digits.path("onnx")).golden
    assert golden is not None
    for answer, want in zip(answers, expected, strict=True):
        assert answer is not None and answer.shape == want.shape
        np.testing.assert_allclose(answer, want, atol=golden.atol, rtol=golden.rtol)
    requests = count(after, "inference_stats", "success", "count") - count(
        before, "inference_stats", "success", "count"
    )
    executions = count(after, "execution_count") - count(before, "execution_count")
    assert requests == callers
    assert executions < callers, "dynamic batching never put two requests in one execution"
    batch_stats = after["batch_stats"]
    assert isinstance(batch_stats, list)
    assert max(int(row["batch_size"]) for row in batch_stats) > 3


# --- statistics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_statistics_count_requests_samples_and_time(
    client: triton.InferenceServerClient, digits: BundleSet, fmt: str
) -> None:
    name = digits.name(fmt)
    before = statistics(client, name)
    for seed in range(3):
        client.infer(name, [digits_input(random_digits(2, seed))])
    expect_error(
        "INVALID_ARGUMENT", lambda: client.infer(name, [digits_input(random_digits(2, 9).reshape(2, 8, 8))])
    )
    after = statistics(client, name)

    def delta(*path: str) -> int:
        return count(after, *path) - count(before, *path)

    assert after["version"] == "1.0.0"
    assert delta("inference_stats", "success", "count") == 3
    assert delta("inference_stats", "fail", "count") == 1
    assert delta("inference_count") == 6
    assert delta("inference_stats", "compute_infer", "count") == 3
    assert delta("inference_stats", "queue", "count") == 3
    assert delta("inference_stats", "success", "ns") > 0
    assert delta("inference_stats", "compute_infer", "ns") > 0
    assert count(after, "last_inference") > 0


def test_statistics_of_an_unknown_model_is_not_found(client: triton.InferenceServerClient) -> None:
    expect_error("NOT_FOUND", lambda: client.get_inference_statistics("no-such-model"), "no-such-model")


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_model_is_not_found(client: triton.InferenceServerClient, digits: BundleSet) -> None:
    batch = digits.golden_inputs[:1]
    expect_error("NOT_FOUND", lambda: client.infer("no-such-model", [digits_input(batch)]), "no-such-model")
    assert client.is_server_live()


def test_unknown_version_is_not_found(client: triton.InferenceServerClient, digits: BundleSet) -> None:
    batch = digits.golden_inputs[:1]
    name = digits.name("onnx")
    expect_error(
        "NOT_FOUND",
        lambda: client.infer(name, [digits_input(batch)], model_version="4.2.0"),
        "4.2.0",
        "1.0.0",
    )
    assert client.infer(name, [digits_input(batch)]).as_numpy(OUTPUT_NAME).shape == (1, 10)


@pytest.mark.parametrize("fmt", FORMATS)
def test_wrong_datatype_is_invalid_argument_naming_the_input(
    client: triton.InferenceServerClient, digits: BundleSet, fmt: str
) -> None:
    batch = digits.golden_inputs[:2].astype(np.float64)
    expect_error(
        "INVALID_ARGUMENT",
        lambda: client.infer(digits.name(fmt), [digits_input(batch, "FP64")]),
        f"input '{INPUT_NAME}'",
        "expected datatype FP32",
        "got FP64",
    )


@pytest.mark.parametrize("shape", [(2, 8, 8), (2, 1, 8, 9), (2, 3, 8, 8)])
def test_wrong_shape_is_invalid_argument_naming_the_input(
    client: triton.InferenceServerClient, digits: BundleSet, shape: tuple[int, ...]
) -> None:
    batch = np.zeros(shape, dtype=np.float32)
    expect_error(
        "INVALID_ARGUMENT",
        lambda: client.infer(digits.name("onnx"), [digits_input(batch)]),
        f"input '{INPUT_NAME}'",
        "expected shape [-1, 1, 8, 8]",
        f"got [{', '.join(map(str, shape))}]",
    )


def test_wrong_byte_count_is_invalid_argument_naming_the_input(
    client: triton.InferenceServerClient, digits: BundleSet
) -> None:
    tensor = digits_input(digits.golden_inputs[:2])
    tensor.set_shape([3, 1, 8, 8])  # declares three samples, carries the bytes of two
    expect_error(
        "INVALID_ARGUMENT",
        lambda: client.infer(digits.name("tflite"), [tensor]),
        f"input '{INPUT_NAME}'",
        f"hold {2 * SAMPLE_BYTES} bytes",
        f"needs {3 * SAMPLE_BYTES} bytes",
    )


def test_oversized_request_is_resource_exhausted_and_the_server_keeps_serving(
    client: triton.InferenceServerClient, digits: BundleSet
) -> None:
    rows = (MAX_MESSAGE_MB * 1024 * 1024) // SAMPLE_BYTES + 64
    batch = random_digits(rows, seed=7)
    expect_error("RESOURCE_EXHAUSTED", lambda: client.infer(digits.name("onnx"), [digits_input(batch)]))
    assert client.infer(digits.name("onnx"), [digits_input(batch[:4])]).as_numpy(OUTPUT_NAME).shape == (4, 10)


def test_runtime_failure_is_internal_and_the_model_stays_loaded(client: triton.InferenceServerClient) -> None:
    indices = triton.InferInput("indices", [3], "INT64")
    indices.set_data_from_numpy(np.array([1, 42, 3], dtype=np.int64))
    expect_error("INTERNAL", lambda: client.infer(FAULTY_NAME, [indices]), "Gather", "42")
    assert client.is_model_ready(FAULTY_NAME)
    good = np.array([0, 4, 9], dtype=np.int64)
    indices.set_data_from_numpy(good)
    np.testing.assert_array_equal(
        client.infer(FAULTY_NAME, [indices]).as_numpy("values"), faulty_forward(good)
    )


# --- fuzzing --------------------------------------------------------------------------------------

_DATATYPES = st.sampled_from(["FP32", "FP64", "FP16", "INT8", "INT64", "BOOL", "BYTES", "", "fp32", "NOPE"])
_NAMES = st.sampled_from([INPUT_NAME, "indices", "x", ""])
_SHAPES = st.lists(st.integers(-3, 9), max_size=5)


@st.composite
def malformed_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(
        # Not the faulty model: its out-of-range indices fail at run time, legitimately INTERNAL.
        model_name=draw(
            st.sampled_from(["digits-cnn-onnx", "digits-cnn-tflite", "digits-cnn-openvino", "nope", ""])
        ),
        model_version=draw(st.sampled_from(["", "1.0.0", "1", "0.0.1"])),
    )
    raw_mode = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(name=draw(_NAMES), datatype=draw(_DATATYPES), shape=draw(_SHAPES))
        if not raw_mode:
            field = draw(
                st.sampled_from(["fp32_contents", "int64_contents", "bool_contents", "int_contents"])
            )
            values = draw(st.lists(st.integers(-300, 300), max_size=70))
            getattr(tensor.contents, field).extend(
                [bool(v) for v in values] if field == "bool_contents" else values
            )
    if raw_mode:
        for _ in range(draw(st.integers(0, 3))):
            request.raw_input_contents.append(draw(st.binary(max_size=600)))
    if draw(st.booleans()):
        parameter = request.parameters["raw"]
        if draw(st.booleans()):
            parameter.bool_param = draw(st.booleans())
        else:
            parameter.string_param = "yes"
    for name in draw(st.lists(st.sampled_from([OUTPUT_NAME, "values", "nope"]), max_size=2)):
        request.outputs.add(name=name)
    return request


def test_fuzzed_malformed_requests_never_break_the_server(
    stub: pb_grpc.GRPCInferenceServiceStub, client: triton.InferenceServerClient, digits: BundleSet
) -> None:
    answered: dict[str, int] = {}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(malformed_requests())
    def send(request: pb.ModelInferRequest) -> None:
        try:
            response = stub.ModelInfer(request, timeout=30)
        except grpc.RpcError as exc:
            code = exc.code()
            assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), exc.details()
            assert exc.details()
            answered[code.name] = answered.get(code.name, 0) + 1
        else:
            assert len(response.raw_output_contents) == len(response.outputs) > 0
            answered["OK"] = answered.get("OK", 0) + 1

    send()
    assert answered.get("INVALID_ARGUMENT", 0) > 0 and answered.get("NOT_FOUND", 0) > 0
    assert client.is_server_live() and client.is_server_ready()
    batch = digits.golden_inputs[:2]
    assert client.infer(digits.name("onnx"), [digits_input(batch)]).as_numpy(OUTPUT_NAME).shape == (2, 10)
