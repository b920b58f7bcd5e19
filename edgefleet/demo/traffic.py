"""Inference traffic through tritonclient: one thread per device, for the rest of the demo.

Each thread sends one evaluation image at a time to its device's Open Inference Protocol server
(``tritonclient.grpc``, the client a real application would use), without naming a version, so
the device answers with whichever version it serves. A device that does not serve the model yet
(before its first install) is asked again every half second rather than sent requests that could
only fail. Every answer counts as a success, under the version that gave it; every error as a
failure, with the last message kept.

``set_brightness(site, 1.5)`` scales the pixels sent to one site's devices (clipped to the
model's [0, 1] range), as a camera whose exposure changed would: the drift the server must notice.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

READY_POLL_S = 0.5
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Target:
    device_id: str
    site: str
    address: str


@dataclass
class DeviceCounts:
    ok: int = 0
    failed: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None
    serving: bool = False

    def copy(self) -> DeviceCounts:
        return DeviceCounts(self.ok, self.failed, Counter(self.versions), self.last_error, self.serving)


def brighten(sample: np.ndarray, factor: float) -> np.ndarray:
    """Pixels scaled by ``factor`` and clipped to [0, 1]. Pure."""
    if factor == 1.0:
        return sample
    return np.clip(sample * np.float32(factor), 0.0, 1.0).astype(np.float32)


class TrafficGenerator:
    def __init__(
        self,
        model: str,
        input_name: str,
        samples: np.ndarray,
        targets: Sequence[Target],
        *,
        pause_s: float,
    ) -> None:
        self.model = model
        self.input_name = input_name
        self.samples = np.ascontiguousarray(samples, dtype=np.float32)
        self.targets = list(targets)
        self.pause_s = pause_s
        self._counts = {t.device_id: DeviceCounts() for t in self.targets}
        self._brightness: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- control --------------------------------------------------------------------------------

    def start(self) -> None:
        for index, target in enumerate(self.targets):
            thread = threading.Thread(
                target=self._run, args=(target, index), name=f"traffic-{target.device_id}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)

    def set_brightness(self, site: str, factor: float) -> None:
        with self._lock:
            self._brightness[site] = factor

    def brightness(self, site: str) -> float:
        with self._lock:
            return self._brightness.get(site, 1.0)

    # --- what happened ----------------------------------------------------------------------------

    def counts(self) -> dict[str, DeviceCounts]:
        with self._lock:
            return {device: counts.copy() for device, counts in self._counts.items()}

    def totals(self) -> tuple[int, int]:
        counts = self.counts().values()
        return sum(c.ok for c in counts), sum(c.failed for c in counts)

    # --- one device's thread ----------------------------------------------------------------------

    def _run(self, target: Target, offset: int) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(target.address)
        position = offset * 97  # each device starts elsewhere in the evaluation set
        serving = False
        try:
            while not self._stop.is_set():
                if not serving:
                    serving = self._ready(client, InferenceServerException)
                    self._set_serving(target.device_id, serving)
                    if not serving:
                        self._stop.wait(READY_POLL_S)
                        continue
                sample = self.samples[position % len(self.samples)][None, ...]
                position += 1
                tensor = grpcclient.InferInput(self.input_name, list(sample.shape), "FP32")
                tensor.set_data_from_numpy(brighten(sample, self.brightness(target.site)))
                try:
                    result = client.infer(self.model, [tensor], client_timeout=REQUEST_TIMEOUT_S)
                except InferenceServerException as exc:
                    if self._stop.is_set():
                        break
                    self._failed(target.device_id, str(exc.message() or exc))
                    serving = False  # ask whether it serves before the next request
                else:
                    self._answered(target.device_id, str(result.get_response().model_version))
                self._stop.wait(self.pause_s)
        finally:
            client.close()

    def _ready(self, client: Any, error: type[Exception]) -> bool:
        try:
            return bool(client.is_model_ready(self.model))
        except error:
            return False

    def _set_serving(self, device: str, serving: bool) -> None:
        with self._lock:
            self._counts[device].serving = serving

    def _answered(self, device: str, version: str) -> None:
        with self._lock:
            counts = self._counts[device]
            counts.ok += 1
            counts.versions[version] += 1

    def _failed(self, device: str, message: str) -> None:
        with self._lock:
            counts = self._counts[device]
            counts.failed += 1
            counts.last_error = message
