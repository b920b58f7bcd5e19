"""Swapping a model's version under load: no request is dropped or failed.

Client threads keep sending requests without naming a version while version 2.0.0 is added and
loaded (from a signed bundle, through tritonclient's ``load_model`` config) and 1.0.0 is then
unloaded. Every request must succeed with the right answer; the answers move from 1.0.0 to 2.0.0.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton

from edge_agent.proto import inference_pb2 as pb
from edge_agent.proto import inference_pb2_grpc as pb_grpc
from tests.support.agent_process import AgentProcess, running_agent
from tests.support.digits_bundles import (
    INPUT_NAME,
    OUTPUT_NAME,
    BundleSet,
    rebuild_with_version,
    shared_bundles,
)

pytestmark = pytest.mark.integration

CLIENTS = 4


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> BundleSet:
    return shared_bundles(tmp_path_factory)


@pytest.fixture(scope="module")
def version_two(digits: BundleSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rebuild_with_version(digits, "onnx", "2.0.0", tmp_path_factory.mktemp("v2"))


@pytest.fixture
def agent(digits: BundleSet, tmp_path: Path) -> Iterator[AgentProcess]:
    with running_agent(
        [digits.path("onnx")], digits.public_key_path, tmp_path, extra=["--max-batch", "8"]
    ) as agent:
        yield agent


class Load:
    """Client threads that send requests until stopped, recording each answer's version or error."""

    def __init__(self, url: str, model: str, batch: np.ndarray, expected: np.ndarray) -> None:
        self.url, self.model, self.batch, self.expected = url, model, batch, expected
        self.versions: list[str] = []
        self.errors: list[str] = []
        self.wrong: int = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(CLIENTS)]

    def _run(self) -> None:
        with triton.InferenceServerClient(self.url) as client:
            tensor = triton.InferInput(INPUT_NAME, list(self.batch.shape), "FP32")
            tensor.set_data_from_numpy(self.batch)
            while not self._stop.is_set():
                try:
                    result = client.infer(self.model, [tensor])
                except Exception as exc:
                    with self._lock:
                        self.errors.append(repr(exc))
                    continue
                correct = np.allclose(result.as_numpy(OUTPUT_NAME), self.expected, atol=1e-4, rtol=1e-3)
                with self._lock:
                    self.versions.append(result.get_response().model_version)
                    self.wrong += 0 if correct else 1

    def answered(self, version: str | None = None) -> int:
        with self._lock:
            return len(self.versions) if version is None else self.versions.count(version)

    def wait_for(self, version: str, at_least: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.answered(version) < at_least:
            assert time.monotonic() < deadline, f"only {self.answered(version)} answers from {version}"
            assert not self.errors, self.errors[:3]
            time.sleep(0.01)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def unload_version(url: str, model: str, version: str) -> None:
    """tritonclient's unload_model cannot name a version; the protocol's parameters can."""
    with grpc.insecure_channel(url) as channel:
        request = pb.RepositoryModelUnloadRequest(model_name=model)
        request.parameters["version"].string_param = version
        pb_grpc.GRPCInferenceServiceStub(channel).RepositoryModelUnload(request, timeout=60)


def test_swapping_versions_under_load_fails_no_request(
    agent: AgentProcess, digits: BundleSet, version_two: Path
) -> None:
    model = digits.name("onnx")
    batch, expected = digits.golden_inputs[:4], digits.golden_outputs[:4]
    with triton.InferenceServerClient(agent.url) as client, Load(agent.url, model, batch, expected) as load:
        load.wait_for("1.0.0", at_least=20)
        client.load_model(model, config=json.dumps({"bundle": str(version_two)}))
        assert client.is_model_ready(model, "2.0.0")
        assert client.is_model_ready(model, "1.0.0")
        load.wait_for("2.0.0", at_least=20)
        unload_version(agent.url, model, "1.0.0")
        assert not client.is_model_ready(model, "1.0.0")
        answered_at_unload = load.answered()
        load.wait_for("2.0.0", at_least=load.answered("2.0.0") + 20)
        index = {
            row["version"]: row["state"] for row in client.get_model_repository_index(as_json=True)["models"]
        }
        metadata = client.get_model_metadata(model, as_json=True)
    assert load.errors == []
    assert load.wrong == 0
    assert index == {"1.0.0": "UNAVAILABLE", "2.0.0": "READY"}
    assert metadata["versions"] == ["2.0.0"]
    # The unload returned once 1.0.0 had finished its requests: apart from answers still on their
    # way back to the clients then (one per client at most), every later answer is from 2.0.0.
    assert "1.0.0" not in load.versions[answered_at_unload + CLIENTS :]


def test_a_bundle_signed_by_an_untrusted_key_is_refused_at_load(
    agent: AgentProcess, digits: BundleSet, tmp_path: Path
) -> None:
    from models.bundle import extract_bundle, pack_bundle
    from tests.support.bundles import fixed_private_key

    model = digits.name("onnx")
    extracted = extract_bundle(digits.path("onnx"), tmp_path / "x", [digits.private_key.public_key()])
    manifest = extracted.manifest.model_copy(update={"version": "3.0.0"})
    sources = {name: tmp_path / "x" / name for name in manifest.files}
    rogue = pack_bundle(tmp_path / "rogue.efb", manifest, sources, fixed_private_key(seed=42))
    with triton.InferenceServerClient(agent.url) as client:
        with pytest.raises(triton.InferenceServerException) as caught:
            client.load_model(model, config=json.dumps({"bundle": str(rogue)}))
        assert caught.value.status() == "StatusCode.FAILED_PRECONDITION"
        assert "refused" in caught.value.message() and "trusted" in caught.value.message()
        assert not client.is_model_ready(model, "3.0.0")
        assert client.is_model_ready(model, "1.0.0")
