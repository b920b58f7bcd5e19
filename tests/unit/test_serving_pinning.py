"""The updater's repository over fake sessions: a pinned default version, and relocatable bundles."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.serving import (
    BatchingConfig,
    InferenceEngine,
    InferRequest,
    InputTensor,
    InstalledBundle,
    ModelRepository,
)
from hw_profiles.schema import RuntimeName
from models.bundle import FileEntry, Manifest, RuntimeSpec, TensorSpec
from models.versioning import parse_version


def _installed(version: str, *, sha: str, directory: str = "/nonexistent") -> InstalledBundle:
    manifest = Manifest(
        name="m",
        version=version,
        profile="generic-x86",
        format="onnx",
        precision="fp32",
        runtime=RuntimeSpec(name="onnxruntime"),
        model_file="model.onnx",
        inputs=[TensorSpec(name="x", dtype="float32", shape=[-1, 1])],
        outputs=[TensorSpec(name="y", dtype="float32", shape=[-1, 1])],
        files={"model.onnx": FileEntry(sha256="0" * 64, size=1)},
    )
    return InstalledBundle(manifest, Path(directory), Path("m.efb"), sha * 64, "key")


class _Session:
    """Answers ``major version * 100``, and can hold a request in flight."""

    runtime = RuntimeName.ONNXRUNTIME
    provider = "Fake"

    def __init__(self, bundle: InstalledBundle, opened_from: list[Path]) -> None:
        self.inputs, self.outputs = list(bundle.manifest.inputs), list(bundle.manifest.outputs)
        self.fallbacks: list[str] = []
        self.major = parse_version(bundle.version).major
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        opened_from.append(bundle.directory)

    def infer(self, feeds: Mapping[str, Any], *, raw: bool = False) -> dict[str, np.ndarray]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        return {"y": np.full((len(feeds["x"]), 1), 100.0 * self.major, dtype=np.float32)}

    def describe(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


@pytest.fixture
def opened() -> list[Path]:
    return []


@pytest.fixture
def repository(opened: list[Path]) -> Iterator[ModelRepository]:
    sessions: dict[str, _Session] = {}

    def opener(bundle: InstalledBundle) -> _Session:
        sessions[bundle.version] = _Session(bundle, opened)
        return sessions[bundle.version]

    repo = ModelRepository(opener, BatchingConfig(max_batch=1), drain_timeout_s=30)  # type: ignore[arg-type]
    repo.sessions = sessions  # type: ignore[attr-defined]
    for version, sha in (("1.0.0", "a"), ("2.0.0", "b")):
        repo.add(_installed(version, sha=sha))
        repo.load("m", version)
    yield repo
    repo.close()


def _answer(engine: InferenceEngine, version: str = "") -> str:
    request = InferRequest(
        "m", [InputTensor.from_array("x", np.ones((1, 1), np.float32))], model_version=version
    )
    return engine.infer(request).model_version


def test_unpinned_the_highest_loaded_version_serves(repository: ModelRepository) -> None:
    assert _answer(InferenceEngine(repository)) == "2.0.0"
    assert repository.pinned_default("m") is None


def test_a_pinned_version_serves_requests_that_name_none(repository: ModelRepository) -> None:
    engine = InferenceEngine(repository)
    repository.pin_default("m", "1.0.0")
    assert _answer(engine) == "1.0.0"
    assert _answer(engine, "2.0.0") == "2.0.0"  # a named version is never redirected
    assert engine.model_metadata("m").name == "m"
    repository.pin_default("m", None)
    assert _answer(engine) == "2.0.0"


def test_a_pin_on_a_version_that_is_not_loaded_is_ignored(repository: ModelRepository) -> None:
    engine = InferenceEngine(repository)
    repository.pin_default("m", "1.0.0")
    repository.unload("m", "1.0.0")
    assert _answer(engine) == "2.0.0"
    repository.pin_default("m", "9.9.9")
    assert _answer(engine) == "2.0.0"


def test_the_status_names_the_version_that_serves_by_default(repository: ModelRepository) -> None:
    from edge_agent.agent import model_states

    engine = InferenceEngine(repository)

    def defaults() -> dict[str, bool | None]:
        return {state.version: state.default for state in model_states(engine)}

    assert repository.default_version("m") == _answer(engine) == "2.0.0"
    assert defaults() == {"1.0.0": False, "2.0.0": True}
    repository.pin_default("m", "1.0.0")  # an OTA update that went back during its watch window
    assert repository.default_version("m") == _answer(engine) == "1.0.0"
    assert defaults() == {"1.0.0": True, "2.0.0": False}
    assert repository.default_version("unknown") is None


def test_moving_the_pin_lets_a_request_in_flight_finish_on_its_version(
    repository: ModelRepository,
) -> None:
    engine = InferenceEngine(repository)
    repository.pin_default("m", "1.0.0")
    session = repository.sessions["1.0.0"]  # type: ignore[attr-defined]
    session.gate = threading.Event()
    answers: list[str] = []
    worker = threading.Thread(target=lambda: answers.append(_answer(engine)))
    worker.start()
    assert session.entered.wait(10)
    repository.pin_default("m", "2.0.0")
    assert _answer(engine) == "2.0.0"  # new requests go to the new default at once
    session.gate.set()
    worker.join(10)
    assert answers == ["1.0.0"]


def test_the_same_bundle_extracted_elsewhere_moves_while_unloaded(
    repository: ModelRepository, opened: list[Path]
) -> None:
    repository.unload("m", "1.0.0")
    assert repository.add(_installed("1.0.0", sha="a", directory="/slots/m/b/1.0.0-aaaa")) is False
    repository.load("m", "1.0.0")
    assert opened[-1] == Path("/slots/m/b/1.0.0-aaaa")


def test_a_loaded_version_does_not_move(repository: ModelRepository, opened: list[Path]) -> None:
    repository.add(_installed("2.0.0", sha="b", directory="/elsewhere"))
    repository.unload("m", "2.0.0")
    repository.load("m", "2.0.0")
    assert opened[-1] == Path("/nonexistent")
