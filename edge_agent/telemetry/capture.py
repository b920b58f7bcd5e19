"""Opt-in capture of raw requests to local storage, rate-limited; nothing of it is ever published.

Drift windows tell an operator *that* traffic changed; a few real samples show *how*. Capture is
off unless the device's owner turns it on. Then at most ``per_minute`` requests (with a small
burst) are written as ``.npz`` files under ``directory/MODEL/VERSION/``, and the oldest files
are deleted once the directory holds more than ``max_bytes``. A writer thread does the I/O; the
inference path only asks a token bucket and appends to a short queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.telemetry.observer import OK

log = logging.getLogger("edgefleet.agent.telemetry")

QUEUE_SIZE = 8


class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved up. Pure: the caller gives the time."""

    def __init__(self, rate_per_s: float, burst: float, *, now: float = 0.0) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"need rate_per_s > 0 and burst >= 1, got {rate_per_s} and {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._last = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass(frozen=True)
class CaptureSettings:
    directory: Path
    per_minute: float = 6.0
    burst: int = 3
    max_bytes: int = 100 * 1024 * 1024


def _safe(part: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in part) or "_"


def prune_oldest(directory: Path, max_bytes: int) -> int:
    """Delete the oldest capture files until the directory holds at most ``max_bytes``; returns deletions."""
    files = sorted(directory.rglob("*.npz"), key=lambda p: (p.stat().st_mtime, p.name))
    total = sum(p.stat().st_size for p in files)
    deleted = 0
    for path in files:
        if total <= max_bytes:
            break
        total -= path.stat().st_size
        path.unlink(missing_ok=True)
        deleted += 1
    return deleted


class RawCapture:
    """An observer that saves a rate-limited sample of requests to local files."""

    def __init__(self, settings: CaptureSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._bucket = TokenBucket(settings.per_minute / 60.0, settings.burst, now=clock())
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, str, dict[str, np.ndarray], dict[str, np.ndarray]] | None] = (
            queue.Queue(maxsize=QUEUE_SIZE)
        )
        self._thread: threading.Thread | None = None
        self.written = 0

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
        if outputs is None or status != OK:
            return
        with self._lock:
            if not self._bucket.take(self._clock()):
                return
        try:
            self._queue.put_nowait((model, version, dict(inputs), dict(outputs)))
        except queue.Full:  # the disk is slow: skip this sample rather than wait
            return

    def start(self) -> None:
        self.settings.directory.mkdir(parents=True, exist_ok=True)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="telemetry-capture", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.write(*item)
            except OSError as exc:
                log.warning("could not write a captured sample to %s: %s", self.settings.directory, exc)

    def write(
        self, model: str, version: str, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
    ) -> Path:
        folder = self.settings.directory / _safe(model) / _safe(version)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.time_ns()}.npz"
        arrays = {f"input.{name}": np.asarray(a) for name, a in inputs.items()}
        arrays.update({f"output.{name}": np.asarray(a) for name, a in outputs.items()})
        partial = path.with_suffix(".part")
        with partial.open("wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
        partial.replace(path)  # a reader never sees half a file
        self.written += 1
        prune_oldest(self.settings.directory, self.settings.max_bytes)
        return path
