"""The drift monitor: a thread that evaluates every ``interval_s``, and ``debounce_s`` after the
ingest stored new drift windows, but never sooner than ``min_gap_s`` after the previous pass: a
steady stream of windows costs one evaluation per gap, not one per window."""

from __future__ import annotations

import logging
import threading
import time

from fleet.drift.service import DriftService

log = logging.getLogger(__name__)


class DriftMonitor:
    def __init__(
        self, service: DriftService, *, interval_s: float, debounce_s: float, min_gap_s: float = 0.0
    ) -> None:
        self.service = service
        self.interval_s = interval_s
        self.debounce_s = debounce_s
        self.min_gap_s = min_gap_s
        self._last_pass = float("-inf")
        self._nudged = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="drift-monitor", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._nudged.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def nudge(self, models: set[tuple[str, str]] | None = None) -> None:
        """New windows arrived (the ingest calls this; it never blocks)."""
        self._nudged.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            nudged = self._nudged.wait(self.interval_s)
            if self._stopping.is_set():
                return
            if nudged:
                since_last = time.monotonic() - self._last_pass
                if self._stopping.wait(max(self.debounce_s, self.min_gap_s - since_last)):
                    return
            self._nudged.clear()
            self._last_pass = time.monotonic()
            try:
                evaluation = self.service.evaluate()
            except Exception:  # the monitor keeps going; the next pass may succeed
                log.exception("drift evaluation failed")
                continue
            if evaluation.changes.opened or evaluation.changes.resolved:
                log.info(
                    "drift evaluation: %d report(s), %d alert(s) opened, %d resolved",
                    len(evaluation.reports),
                    len(evaluation.changes.opened),
                    len(evaluation.changes.resolved),
                )
