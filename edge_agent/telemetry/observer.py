"""How the inference path tells telemetry about each request, without ever waiting on it.

The engine calls ``on_inference`` once per request, after the response is ready, in the thread
that served it. An observer therefore must be cheap (counters, a histogram bucket, appending a
reference to a queue) and must never block on I/O or raise: ``ObserverFanOut`` shields the
inference path from a faulty observer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np

from edge_agent.serving.engine import InferenceObserver

log = logging.getLogger("edgefleet.agent.telemetry")

OK = "OK"
"""The status of a request that succeeded; failures carry a gRPC status code name."""


# The engine owns the hook; telemetry implements it.
__all__ = ["OK", "InferenceObserver", "ObserverFanOut"]


class ObserverFanOut:
    """Calls each observer in turn; one that raises is logged (at most once a minute) and skipped."""

    def __init__(self, observers: Sequence[InferenceObserver] = ()) -> None:
        self.observers = list(observers)
        self.failures = 0
        self._last_log = -float("inf")

    def add(self, observer: InferenceObserver) -> None:
        self.observers.append(observer)

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
        for observer in self.observers:
            try:
                observer.on_inference(model, version, inputs, outputs, status, latency_s, queue_s, batch_size)
            except Exception:
                self.failures += 1
                now = time.monotonic()
                if now - self._last_log > 60:
                    self._last_log = now
                    log.exception("a telemetry observer failed; the request itself was not affected")
