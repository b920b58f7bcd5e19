"""Per-model request metrics over a window: requests, errors by code, latency, batch sizes, queue depth.

``MetricsCollector`` is an ``InferenceObserver``: per request it takes one lock and bumps a few
counters and one histogram bucket. ``take`` hands the window's figures over as contract payload
parts and starts the next window, atomically, so no request is counted twice or lost between
two windows.

- ``requests`` counts every request that reached a model, ``errors`` the failed ones by gRPC
  code name; the latency histogram holds the successful ones (a failure's latency says little).
- ``batch_sizes`` counts requests by the size of the execution they ran in (dynamic batching).
- ``queue_depth_max`` is the most requests seen in flight on the model at once; the telemetry
  samples it (every ``QUEUE_SAMPLE_S``), since the observer only sees requests that finished.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from edge_agent.telemetry.histogram import DEFAULT_BOUNDS_MS, LatencyHistogram, check_bounds
from edge_agent.telemetry.observer import OK
from models.mqtt_contract import ModelMetrics

MAX_MODELS = 64
"""Distinct (model, version) pairs per window; requests naming more (a client typo loop) are folded."""
OVERFLOW_MODEL = "_other"

ModelKey = tuple[str, str]


@dataclass
class _Window:
    latency: LatencyHistogram
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    batch_sizes: dict[int, int] = field(default_factory=dict)
    queue_depth_max: int = 0

    def to_payload(self, key: ModelKey) -> ModelMetrics:
        return ModelMetrics(
            model=key[0],
            version=key[1],
            requests=self.requests,
            errors=dict(sorted(self.errors.items())),
            latency=self.latency.summary(),
            batch_sizes={str(size): n for size, n in sorted(self.batch_sizes.items())},
            queue_depth_max=self.queue_depth_max,
        )


class MetricsCollector:
    """Counts requests per (model, version) until ``take`` closes the window. Thread-safe."""

    def __init__(self, bounds_ms: Iterable[float] = DEFAULT_BOUNDS_MS) -> None:
        self.bounds_ms = check_bounds(list(bounds_ms))
        self._lock = threading.Lock()
        self._windows: dict[ModelKey, _Window] = {}

    def _window(self, key: ModelKey) -> _Window:
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= MAX_MODELS:
                key = (OVERFLOW_MODEL, "")
                window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window(LatencyHistogram(self.bounds_ms))
        return window

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
        with self._lock:
            window = self._window((model, version))
            window.requests += 1
            if status == OK:
                window.latency.record(latency_s * 1000.0)
            else:
                window.errors[status] = window.errors.get(status, 0) + 1
            if batch_size > 0:
                window.batch_sizes[batch_size] = window.batch_sizes.get(batch_size, 0) + 1

    def note_queue_depth(self, depths: Mapping[ModelKey, int]) -> None:
        """Record a sample of requests in flight per model (kept: the window's maximum)."""
        with self._lock:
            for key, depth in depths.items():
                window = self._window(key)
                if depth > window.queue_depth_max:
                    window.queue_depth_max = depth

    def take(self, loaded: Iterable[ModelKey] = ()) -> list[ModelMetrics]:
        """The window's metrics (plus zero rows for ``loaded`` models that saw no request); resets."""
        fresh = {key: _Window(LatencyHistogram(self.bounds_ms)) for key in loaded}
        with self._lock:
            windows, self._windows = self._windows, {}
        for key, window in fresh.items():
            windows.setdefault(key, window)
        return [windows[key].to_payload(key) for key in sorted(windows)]
