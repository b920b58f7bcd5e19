"""The repository and the engine over fake runtime sessions: routing, versions, draining, errors, statistics.

The sessions compute ``y[:, j] = sum(x) + j + 100 * major`` so every answer shows which version ran
it; a session can be held inside ``infer`` (a gate) to put a request "in flight" deterministically.
Bundles are real (``tests.support.bundles``) where installation is under test; the runtimes are not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.runtimes import InferenceFailed, InvalidInput, ModelLoadFailed
from edge_agent.serving import (
    BatchingConfig,
    InferenceEngine,
    InferenceError,
    InferRequest,
    InputTensor,
    InstalledBundle,
    InvalidRequest,
    LoadFailed,
    ModelNotFound,
    ModelRepository,
    ModelState,
    ServerUnavailable,
    encode_raw,
)
from hw_profiles.schema import RuntimeName
from models.bundle import FileEntry, Manifest, QuantParams, RuntimeSpec, TensorSpec
from models.versioning import parse_version
from tests.support.bundles import build_test_bundle, fixed_private_key, flip_byte

X = TensorSpec(name="x", dtype="float32", shape=[-1, 4])
Y = TensorSpec(name="y", dtype="float32", shape=[-1, 2])
Q = TensorSpec(
    name="x", dtype="int8", shape=[-1, 4], quantization=QuantParams(scale=0.5, zero_point=0, dtype="int8")
)


def installed(
    name: str = "m", version: str = "1.0.0", *, sha: str = "a", inputs: list[TensorSpec] | None = None
) -> InstalledBundle:
    manifest = Manifest(
        name=name,
        version=version,
        profile="generic-x86",
        format="onnx",
        precision="fp32",
        runtime=RuntimeSpec(name="onnxruntime"),
        model_file="model.onnx",
        inputs=inputs or [X],
        outputs=[Y],
        files={"model.onnx": FileEntry(sha256="0" * 64, size=1)},
    )
    return InstalledBundle(manifest, Path("/nonexistent"), Path(f"{name}-{version}.efb"), sha * 64, "key")


class FakeSession:
    runtime = RuntimeName.ONNXRUNTIME
    provider = "FakeExecutionProvider"

    def __init__(self, bundle: InstalledBundle, gate: threading.Event | None = None) -> None:
        self.inputs = list(bundle.manifest.inputs)
        self.outputs = list(bundle.manifest.outputs)
        self.fallbacks: list[str] = []
        self.major = parse_version(bundle.version).major
        self.gate = gate
        self.entered = threading.Event()
        self.closed = False
        self.raw_calls: list[bool] = []

    def infer(self, feeds: Mapping[str, Any], *, raw: bool = False) -> dict[str, np.ndarray]:
        if self.closed:
            raise InferenceFailed("the session is closed")
        self.raw_calls.append(raw)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(60)
        x = np.asarray(feeds["x"], dtype=np.float32)
        if np.isnan(x).any():
            raise InferenceFailed("the kernel choked on a NaN", hint="check the feeds")
        if x.shape[1] != 4:
            raise InvalidInput("x must have 4 columns")
        width = self.outputs[0].shape[1]
        y = x.sum(axis=1, keepdims=True) + np.arange(width, dtype=np.float32) + 100 * self.major
        return {"y": y.astype(np.float32)}

    def describe(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Opener:
    """Opens fake sessions, remembers them, and fails for the names in ``broken``."""

    def __init__(self) -> None:
        self.sessions: dict[tuple[str, str], FakeSession] = {}
        self.gates: dict[tuple[str, str], threading.Event] = {}
        self.broken: set[str] = set()

    def __call__(self, bundle: InstalledBundle) -> FakeSession:
        if bundle.name in self.broken:
            raise ModelLoadFailed(f"cannot read {bundle.name}", hint="rebuild it")
        key = (bundle.name, bundle.version)
        self.sessions[key] = FakeSession(bundle, self.gates.get(key))
        return self.sessions[key]


def expected(x: np.ndarray, major: int, width: int = 2) -> np.ndarray:
    return (x.sum(axis=1, keepdims=True) + np.arange(width) + 100 * major).astype(np.float32)


def request(model: str = "m", x: np.ndarray | None = None, **kwargs: Any) -> InferRequest:
    x = np.ones((2, 4), np.float32) if x is None else x
    return InferRequest(model_name=model, inputs=[InputTensor.from_array("x", x)], **kwargs)


@pytest.fixture
def opener() -> Opener:
    return Opener()


@pytest.fixture
def engine(opener: Opener) -> Iterator[InferenceEngine]:
    repository = ModelRepository(opener, BatchingConfig(max_batch=1), drain_timeout_s=60)
    engine = InferenceEngine(repository)
    for version in ("1.0.0", "2.0.0"):
        repository.add(installed(version=version, sha=version[0]))
        repository.load("m", version)
    yield engine
    engine.close()


# --- routing and versions -------------------------------------------------------------------------


def test_a_request_without_a_version_goes_to_the_highest_loaded_one(engine: InferenceEngine) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    latest = engine.infer(request(x=x))
    pinned = engine.infer(request(x=x, model_version="1.0.0"))
    assert latest.model_version == "2.0.0" and pinned.model_version == "1.0.0"
    np.testing.assert_array_equal(latest.as_dict()["y"], expected(x, 2))
    np.testing.assert_array_equal(pinned.as_dict()["y"], expected(x, 1))


def test_versions_sort_semantically_not_alphabetically(opener: Opener) -> None:
    repository = ModelRepository(opener)
    for version in ("9.0.0", "10.0.0", "10.0.0-rc.1"):
        repository.add(installed(version=version, sha=version[:2]))
    repository.load("m")
    assert repository.ready_versions("m") == ["9.0.0", "10.0.0-rc.1", "10.0.0"]
    with repository.lease("m") as model:
        assert model.version == "10.0.0"
    repository.close()


def test_unknown_models_and_versions_are_not_found_with_what_exists(engine: InferenceEngine) -> None:
    with pytest.raises(ModelNotFound, match=r"'nope'.*known models: m") as caught:
        engine.infer(request("nope"))
    assert caught.value.status == "NOT_FOUND"
    with pytest.raises(ModelNotFound, match=r"no version '3\.0\.0'.*loaded versions: 1\.0\.0, 2\.0\.0"):
        engine.infer(request(model_version="3.0.0"))
    assert not engine.model_ready("m", "3.0.0") and not engine.model_ready("nope")
    assert engine.model_ready("m") and engine.model_ready("m", "1.0.0")


def test_unload_then_load_again(engine: InferenceEngine) -> None:
    assert engine.unload_model("m") == ["1.0.0", "2.0.0"]
    assert not engine.model_ready("m")
    with pytest.raises(ModelNotFound, match="not loaded"):
        engine.infer(request())
    assert {(row.version, row.state) for row in engine.index()} == {
        ("1.0.0", ModelState.UNAVAILABLE),
        ("2.0.0", ModelState.UNAVAILABLE),
    }
    assert engine.index(ready_only=True) == []
    assert engine.load_model("m", version="1.0.0") == ["1.0.0"]
    assert engine.infer(request()).model_version == "1.0.0"


def test_the_same_bundle_twice_is_harmless_but_a_different_one_under_a_known_version_is_refused(
    opener: Opener,
) -> None:
    repository = ModelRepository(opener)
    assert repository.add(installed(sha="a")) is True
    assert repository.add(installed(sha="a")) is False
    with pytest.raises(LoadFailed, match=r"already known.*higher version"):
        repository.add(installed(sha="b"))


def test_a_model_that_cannot_load_is_unavailable_with_the_reason(opener: Opener) -> None:
    opener.broken.add("bad")
    repository = ModelRepository(opener)
    repository.add(installed("bad"))
    with pytest.raises(LoadFailed, match="cannot read bad") as caught:
        repository.load("bad")
    assert caught.value.status == "FAILED_PRECONDITION" and caught.value.hint == "rebuild it"
    (row,) = repository.index()
    assert row.state is ModelState.UNAVAILABLE and "cannot read bad" in row.reason


# --- the swap: an in-flight request finishes on its version ----------------------------------------


def test_unloading_a_version_waits_for_its_request_in_flight(opener: Opener) -> None:
    gate = threading.Event()
    opener.gates[("m", "1.0.0")] = gate
    repository = ModelRepository(opener, BatchingConfig(max_batch=1), drain_timeout_s=60)
    engine = InferenceEngine(repository)
    repository.add(installed(version="1.0.0", sha="1"))
    repository.load("m")
    x = np.full((1, 4), 2.0, np.float32)
    answers: dict[str, Any] = {}
    in_flight = threading.Thread(target=lambda: answers.update(old=engine.infer(request(x=x))))
    in_flight.start()
    old_session = opener.sessions[("m", "1.0.0")]
    assert old_session.entered.wait(60)  # the request is running inside version 1.0.0

    repository.add(installed(version="2.0.0", sha="2"))
    repository.load("m", "2.0.0")
    unloading = threading.Thread(target=lambda: answers.update(unloaded=repository.unload("m", "1.0.0")))
    unloading.start()
    while dict((r.version, r.state) for r in repository.index())["1.0.0"] is not ModelState.UNLOADING:
        threading.Event().wait(0.001)

    # While 1.0.0 drains, new requests go to 2.0.0 and the old session stays open.
    assert engine.infer(request(x=x)).model_version == "2.0.0"
    assert unloading.is_alive() and not old_session.closed
    with pytest.raises(ModelNotFound, match="UNLOADING"):
        engine.infer(request(x=x, model_version="1.0.0"))

    gate.set()
    in_flight.join(60)
    unloading.join(60)
    assert answers["old"].model_version == "1.0.0"
    np.testing.assert_array_equal(answers["old"].as_dict()["y"], expected(x, 1))
    assert answers["unloaded"] == ["1.0.0"] and old_session.closed
    engine.close()


# --- requests -------------------------------------------------------------------------------------


def test_requested_outputs_and_the_request_id_come_back(engine: InferenceEngine) -> None:
    response = engine.infer(request(outputs=["y"], id="req-7"))
    assert response.id == "req-7" and [o.name for o in response.outputs] == ["y"]
    assert response.outputs[0].datatype == "FP32" and response.outputs[0].shape == (2, 2)


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        (InputTensor("x", "FP64", (1, 4), raw=bytes(32)), "expected datatype FP32, got FP64"),
        (InputTensor("x", "FP32", (1, 5), raw=bytes(20)), "expected shape [-1, 4], got [1, 5]"),
        (InputTensor("x", "FP32", (2, 4), raw=bytes(16)), "hold 16 bytes"),
        (InputTensor("z", "FP32", (1, 4), raw=bytes(16)), "unknown input(s) ['z']"),
        (InputTensor("x", "FP32", (1, 4), typed={"fp32_contents": [1.0]}), "holds 1 values"),
    ],
)
def test_bad_requests_are_invalid_and_counted_as_failures(
    engine: InferenceEngine, tensor: InputTensor, fragment: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        engine.infer(InferRequest(model_name="m", inputs=[tensor]))
    assert fragment in str(caught.value) and caught.value.status == "INVALID_ARGUMENT"
    (stats,) = engine.statistics("m", "2.0.0")
    assert stats.inference.fail.count == 1 and stats.inference.success.count == 0


def test_raw_and_typed_payloads_decode_to_the_same_answer(engine: InferenceEngine) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    raw = engine.infer(InferRequest("m", [InputTensor("x", "FP32", (3, 4), raw=encode_raw(x))]))
    typed = engine.infer(
        InferRequest("m", [InputTensor("x", "FP32", (3, 4), typed={"fp32_contents": x.ravel().tolist()})])
    )
    np.testing.assert_array_equal(raw.as_dict()["y"], expected(x, 2))
    np.testing.assert_array_equal(typed.as_dict()["y"], raw.as_dict()["y"])


def test_a_runtime_failure_is_internal_and_the_model_stays_loaded(engine: InferenceEngine) -> None:
    bad = np.full((1, 4), np.nan, np.float32)
    with pytest.raises(InferenceError, match="choked") as caught:
        engine.infer(request(x=bad))
    assert caught.value.status == "INTERNAL"
    assert engine.model_ready("m")
    assert engine.infer(request()).model_version == "2.0.0"
    (stats,) = engine.statistics("m", "2.0.0")
    assert (stats.inference.fail.count, stats.inference.success.count) == (1, 1)


def test_a_runtime_complaint_about_the_input_is_invalid_argument(opener: Opener) -> None:
    any_width = TensorSpec(name="x", dtype="float32", shape=[-1, -1])  # the signature takes any width
    repository = ModelRepository(opener)
    repository.add(installed("wide", inputs=[any_width]))
    repository.load("wide")
    engine = InferenceEngine(repository)
    with pytest.raises(InvalidRequest, match="4 columns"):  # ... but the runtime does not
        engine.infer(request("wide", x=np.ones((1, 3), np.float32)))
    assert engine.model_ready("wide")
    engine.close()


def test_statistics_count_samples_requests_and_time(engine: InferenceEngine) -> None:
    for rows in (1, 2, 3):
        engine.infer(request(x=np.ones((rows, 4), np.float32)))
    (stats,) = engine.statistics("m", "2.0.0")
    assert stats.inference.success.count == 3 and stats.inference_count == 6
    assert stats.execution_count == 3 and [b.batch_size for b in stats.batches] == [1, 2, 3]
    assert stats.inference.compute_infer.count == 3 and stats.inference.success.ns > 0
    assert stats.last_inference_ms > 0
    assert [s.version for s in engine.statistics()] == ["1.0.0", "2.0.0"]
    with pytest.raises(ModelNotFound):
        engine.statistics("nope")


def test_a_quantized_input_takes_float_unless_the_request_asks_for_raw(opener: Opener) -> None:
    repository = ModelRepository(opener)
    repository.add(installed("q", inputs=[Q]))
    repository.load("q")
    engine = InferenceEngine(repository)
    ints = np.ones((1, 4), np.int8)
    assert engine.infer(request("q", x=np.ones((1, 4), np.float32))).outputs[0].shape == (1, 2)
    with pytest.raises(InvalidRequest, match=r"expected datatype FP32, got INT8.*raw=true"):
        engine.infer(request("q", x=ints))
    assert engine.infer(request("q", x=ints, raw=True)).outputs[0].shape == (1, 2)
    assert opener.sessions[("q", "1.0.0")].raw_calls == [False, True]
    assert engine.model_metadata("q").inputs[0].datatype == "FP32"
    engine.close()


def test_metadata_lists_loaded_versions_and_the_client_contract(engine: InferenceEngine) -> None:
    metadata = engine.model_metadata("m")
    assert metadata.versions == ["1.0.0", "2.0.0"] and metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, t.shape) for t in metadata.inputs] == [("x", "FP32", (-1, 4))]
    assert engine.model_metadata("m", "1.0.0").versions == ["1.0.0"]


def test_a_closed_engine_refuses_requests_and_reports_not_ready(
    engine: InferenceEngine, opener: Opener
) -> None:
    engine.close()
    assert not engine.server_ready() and engine.server_live()
    with pytest.raises(ServerUnavailable):
        engine.infer(request())
    assert all(session.closed for session in opener.sessions.values())


def test_dynamic_batching_serves_concurrent_callers_through_the_engine(opener: Opener) -> None:
    repository = ModelRepository(opener, BatchingConfig(max_batch=8, max_delay_s=0.05))
    repository.add(installed())
    repository.load("m")
    engine = InferenceEngine(repository)
    assert repository.loaded("m")[0].batched
    inputs = [np.full((1 + i % 2, 4), float(i), np.float32) for i in range(12)]
    results: list[Any] = [None] * len(inputs)

    def call(i: int) -> None:
        results[i] = engine.infer(request(x=inputs[i])).as_dict()["y"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, expected(x, 1))
    (stats,) = engine.statistics("m")
    assert stats.inference.success.count == len(inputs)
    assert stats.inference_count == sum(len(x) for x in inputs)
    engine.close()


# --- installing bundles ---------------------------------------------------------------------------


@pytest.fixture
def installing_engine(tmp_path: Path, opener: Opener) -> Iterator[InferenceEngine]:
    engine = InferenceEngine.create(
        data_dir=tmp_path / "data", trusted_keys=[fixed_private_key().public_key()], opener=opener
    )
    yield engine
    engine.close()


def test_installing_verifies_extracts_and_loads(installing_engine: InferenceEngine, tmp_path: Path) -> None:
    bundle = build_test_bundle(tmp_path / "b")
    installed_bundle = installing_engine.install(bundle.path)
    assert installing_engine.model_ready("tiny-linear", "1.0.0")
    assert (installed_bundle.directory / "model.onnx").is_file()
    assert installed_bundle.directory.parent == tmp_path / "data" / "models" / "tiny-linear"
    assert not any((tmp_path / "data" / "staging").iterdir())


def test_loading_a_bundle_under_another_name_is_refused(
    installing_engine: InferenceEngine, tmp_path: Path
) -> None:
    bundle = build_test_bundle(tmp_path / "b")
    with pytest.raises(InvalidRequest, match="holds model 'tiny-linear', not 'other'"):
        installing_engine.load_model("other", bundle=bundle.path)


def test_a_tampered_bundle_is_refused_with_the_verifiers_message(
    installing_engine: InferenceEngine, tmp_path: Path
) -> None:
    bundle = build_test_bundle(tmp_path / "b")
    tampered = flip_byte(bundle.path, tmp_path / "tampered.efb", "model.onnx", 10)
    with pytest.raises(LoadFailed, match=r"refused.*model\.onnx") as caught:
        installing_engine.load_model("tiny-linear", bundle=tampered)
    assert caught.value.hint and "download" in caught.value.hint
    assert not installing_engine.model_ready("tiny-linear")
    assert not (tmp_path / "data" / "models").exists() or not any(
        (tmp_path / "data" / "models").rglob("*.onnx")
    )


# --- observers ------------------------------------------------------------------------------------


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def on_inference(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray] | None,
        status: str,
        latency_s: float,
        queue_s: float,
        batch_size: int,
    ) -> None:
        self.calls.append(
            {
                "model": (model, version),
                "inputs": dict(inputs),
                "outputs": outputs,
                "status": status,
                "latency_s": latency_s,
                "queue_s": queue_s,
                "batch_size": batch_size,
            }
        )
        if self.fail:
            raise RuntimeError("observer bug")


def test_observers_hear_of_every_request_that_reached_a_model(engine: InferenceEngine) -> None:
    recorder, broken = Recorder(), Recorder(fail=True)
    engine.add_observer(broken)  # a failing observer neither fails the request nor silences the next one
    engine.add_observer(recorder)
    x = np.ones((3, 4), np.float32)
    engine.infer(request(x=x))
    with pytest.raises(InvalidRequest):
        engine.infer(InferRequest("m", [InputTensor("x", "FP64", (1, 4), raw=bytes(32))]))
    with pytest.raises(InferenceError):
        engine.infer(request(x=np.full((1, 4), np.nan, np.float32)))
    with pytest.raises(ModelNotFound):
        engine.infer(request("nope"))
    ok, invalid, internal = recorder.calls
    assert ok["model"] == ("m", "2.0.0") and ok["status"] == "OK" and ok["batch_size"] == 3
    np.testing.assert_array_equal(ok["inputs"]["x"], x)
    np.testing.assert_array_equal(ok["outputs"]["y"], expected(x, 2))
    assert ok["latency_s"] > 0 and ok["queue_s"] >= 0
    assert invalid["status"] == "INVALID_ARGUMENT" and invalid["inputs"] == {} and invalid["outputs"] is None
    assert internal["status"] == "INTERNAL" and internal["inputs"]["x"].shape == (1, 4)
    assert len(broken.calls) == 3
