"""Helpers for the end-to-end rollout tests (no tests here; the module sits beside the tests).

- ``rollout_releases``: the OTA tests' digits releases, packed again with frozen drift bins
  (``reference_stats.json``, from the 1.0.0 model's outputs on the evaluation split), plus a
  drifted release: 2.0.0's model with a bias that makes class 0 win every time, whose golden
  outputs come from that model (so the device's golden check passes) while its reference does
  not (a conversion bug the golden check cannot see, which live outputs reveal).
- ``RolloutAgent``: the real ``edgefleet agent run`` with one-second metrics, short drift windows
  and a short watch window.
- ``Traffic``: tritonclient requests to many agents from threads, cycling through the golden
  inputs in small batches; every failure is kept.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import (
    GOLDEN_NAME,
    REFERENCE_STATS_NAME,
    FileRole,
    build_manifest_files,
    extract_bundle,
    load_trusted_keys,
    pack_bundle,
)
from models.stats import build_reference_stats
from tests.integration.test_ota_agent_support import OtaAgentProcess
from tests.support.bundles import fixed_private_key, npz_bytes
from tests.support.digits_bundles import INPUT_NAME, OUTPUT_NAME
from tests.support.ota_bundles import DigitsReleases, Release, digits_releases

DRIFT_BIAS = 50.0  # added to class 0's logit: it wins every time


@dataclass(frozen=True)
class RolloutReleases:
    releases: dict[str, Release]
    public_key_path: Path
    golden_inputs: np.ndarray

    def __getitem__(self, kind: str) -> Release:
        return self.releases[kind]


_SHARED: dict[str, RolloutReleases] = {}


def rollout_releases(tmp_path_factory: Any) -> RolloutReleases:
    """Built once per test session (the digits releases come from the OTA tests' builder)."""
    if "releases" not in _SHARED:
        digits = digits_releases(tmp_path_factory)
        _SHARED["releases"] = build_rollout_releases(digits, tmp_path_factory.mktemp("rollout-releases"))
    return _SHARED["releases"]


def build_rollout_releases(digits: DigitsReleases, out_dir: Path) -> RolloutReleases:
    import onnxruntime as ort

    from models.zoo import get_reference

    keys = load_trusted_keys([digits.public_key_path])
    eval_inputs = np.ascontiguousarray(get_reference("digits-cnn").datasets().eval_inputs, dtype=np.float32)
    v1_dir = _extract(digits["v1"], out_dir / "v1", keys)
    session = ort.InferenceSession(str(v1_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    outputs = session.run([OUTPUT_NAME], {INPUT_NAME: eval_inputs})[0]
    reference = build_reference_stats(
        {INPUT_NAME: eval_inputs}, {OUTPUT_NAME: outputs}, layouts={INPUT_NAME: "NCHW", OUTPUT_NAME: "NC"}
    )
    reference_path = out_dir / REFERENCE_STATS_NAME
    reference_path.write_text(json.dumps(reference.to_dict()))

    plan = {
        "older": ("older", "0.9.0"),
        "v1": ("v1", "1.0.0"),
        "v2": ("v2", "2.0.0"),
        "v21": ("v2", "2.1.0"),
        "v22": ("v2", "2.2.0"),
        "broken": ("broken", "3.0.0"),
        "slow": ("slow", "4.0.0"),
    }
    releases: dict[str, Release] = {}
    for kind, (source, version) in plan.items():
        extracted = _extract(digits[source], out_dir / f"src-{kind}", keys)
        releases[kind] = _repack(extracted, out_dir, version, reference_path)
    drifted = _extract(digits["v2"], out_dir / "src-drifted", keys)
    _add_output_bias(drifted, DRIFT_BIAS)
    releases["drifted"] = _repack(drifted, out_dir, "5.0.0", reference_path)
    return RolloutReleases(releases, digits.public_key_path, digits.golden_inputs)


def _extract(release: Release, directory: Path, keys: Any) -> Path:
    extract_bundle(release.path, directory, keys)
    return directory


def _repack(directory: Path, out_dir: Path, version: str, reference_path: Path) -> Release:
    from models.bundle import Manifest

    manifest = Manifest.model_validate_json((directory / "manifest.json").read_text())
    roles: dict[str, tuple[Path, FileRole]] = {
        name: (directory / name, entry.role) for name, entry in manifest.files.items()
    }
    roles[REFERENCE_STATS_NAME] = (reference_path, "reference_stats")
    updated = manifest.model_copy(
        update={
            "version": version,
            "files": build_manifest_files(roles),
            "reference_stats": REFERENCE_STATS_NAME,
        }
    )
    sources = {name: path for name, (path, _) in roles.items()}
    path = pack_bundle(out_dir / f"{manifest.name}-{version}.efb", updated, sources, fixed_private_key())
    return Release.of(path, updated)


def _add_output_bias(directory: Path, bias: float) -> None:
    """``logits + [bias, 0, ...]`` in the ONNX graph, and golden outputs from the changed model."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model_path = directory / "model.onnx"
    model = onnx.load(str(model_path))
    output = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{output}_unbiased" if name == output else name for name in node.output]
    classes = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value or 10
    offsets = np.zeros((1, classes), dtype=np.float32)
    offsets[0, 0] = bias
    model.graph.initializer.append(numpy_helper.from_array(offsets, "drift_bias"))
    model.graph.node.append(helper.make_node("Add", [f"{output}_unbiased", "drift_bias"], [output]))
    onnx.checker.check_model(model)
    onnx.save(model, str(model_path))
    with np.load(directory / GOLDEN_NAME) as golden:
        inputs = golden[INPUT_NAME]
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    outputs = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]
    (directory / GOLDEN_NAME).write_bytes(npz_bytes({INPUT_NAME: inputs, OUTPUT_NAME: outputs}))


# --- agents --------------------------------------------------------------------------------------


@dataclass
class RolloutAgent(OtaAgentProcess):
    """The real ``edgefleet agent run`` (its updater wired in), pointed at the fleet server, with
    metrics every second, drift windows of 64 samples (or 2 s) and a 2 s watch window, so that
    gates judge quickly. ``latency_ratio`` is the device's own watch limit on p95 latency."""

    fleet_url: str = ""
    latency_ratio: float = 2.0

    def command(self) -> list[str]:
        args = super().command()
        module = args.index("-m")
        args[module + 1 : module + 2] = ["edgefleet", "agent", "run"]  # not the OTA tests' harness
        args[args.index("--metrics-interval-s") + 1] = "1"
        return [
            *args,
            "--drift-window",
            "64",
            "--drift-window-s",
            "2",
            "--fleet-url",
            self.fleet_url,
            "--ota-watch-s",
            "2",
            "--ota-max-latency-ratio",
            str(self.latency_ratio),
        ]


# --- traffic -------------------------------------------------------------------------------------


@dataclass
class DeviceLoad:
    answers: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class Traffic:
    """Requests to each agent from its own thread: batches of ``batch`` golden inputs in turn."""

    def __init__(self, model: str, inputs: np.ndarray, *, batch: int = 4, pause_s: float = 0.1) -> None:
        self.model = model
        self.batches = [
            np.ascontiguousarray(inputs[i : i + batch], dtype=np.float32)
            for i in range(0, len(inputs), batch)
        ]
        self.pause_s = pause_s
        self.loads: dict[str, DeviceLoad] = {}
        self._stops: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}

    def start(self, agent: OtaAgentProcess) -> None:
        self.stop(agent.device)
        stop = threading.Event()
        load = self.loads.setdefault(agent.device, DeviceLoad())
        thread = threading.Thread(target=self._run, args=(agent.grpc_port, load, stop), daemon=True)
        self._stops[agent.device], self._threads[agent.device] = stop, thread
        thread.start()

    def stop(self, device: str) -> None:
        stop, thread = self._stops.pop(device, None), self._threads.pop(device, None)
        if stop is not None and thread is not None:
            stop.set()
            thread.join(60)

    def running(self, device: str) -> bool:
        return device in self._threads

    def stop_all(self) -> None:
        for device in list(self._threads):
            self.stop(device)

    def reset(self) -> None:
        for load in self.loads.values():
            load.answers.clear()
            load.failures.clear()

    def failures(self) -> dict[str, list[str]]:
        return {device: list(load.failures) for device, load in self.loads.items() if load.failures}

    def _run(self, port: int, load: DeviceLoad, stop: threading.Event) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            turn = 0
            while not stop.is_set():
                batch = self.batches[turn % len(self.batches)]
                turn += 1
                tensor = grpcclient.InferInput(INPUT_NAME, list(batch.shape), "FP32")
                tensor.set_data_from_numpy(batch)
                try:
                    result = client.infer(self.model, [tensor], client_timeout=60)
                    load.answers.append(str(result.get_response().model_version))
                except InferenceServerException as exc:
                    load.failures.append(str(exc))
                stop.wait(self.pause_s)
        finally:
            client.close()


def wait_until(condition: Any, what: str, timeout: float = 120.0, interval: float = 0.25) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
