"""Drift windows: live traffic counted into the bundle's frozen bins, per model version.

For each model version whose bundle carries ``reference_stats.json``, the agent counts every
successful request's inputs and outputs into the reference's bins (``models.stats.count_window``)
and closes a window every ``window_samples`` samples or ``window_s`` seconds, whichever comes
first. A window holds counts and moments only; no raw value leaves the device.

Cost on the inference path: the observer only appends a reference to the request's arrays to a
queue (one lock, no copy; the arrays are never written after the response is built). A worker
thread drains the queue every ``POLL_S``, joins consecutive requests of a model into one batch
(numpy's per-call overhead is paid once per batch instead of once per request) and counts them.
The queue is bounded in bytes: when the worker falls behind, requests are left out of drift
counting, counted in ``skipped``, and reported, rather than growing memory or slowing inference.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from edge_agent.telemetry.observer import OK
from models.stats import DriftWindow, ReferenceStats, count_window, request_samples

log = logging.getLogger("edgefleet.agent.telemetry")

POLL_S = 0.05
CHUNK_SAMPLES = 256
DEFAULT_MAX_PENDING_BYTES = 32 * 1024 * 1024

Arrays = Mapping[str, np.ndarray]
ModelKey = tuple[str, str]


@dataclass(frozen=True)
class ClosedWindow:
    """One finished window of one model version; ``start``/``end`` are Unix times."""

    model: str
    version: str
    window: DriftWindow
    start: float
    end: float


def leading_rows(inputs: Arrays, outputs: Arrays) -> int:
    """Samples in a request: the first dimension of its first tensor (1 for a scalar)."""
    for array in (*inputs.values(), *outputs.values()):
        return int(array.shape[0]) if array.ndim else 1
    return 0


def _splittable(arrays: Arrays, rows: int) -> bool:
    return all(a.ndim > 0 and a.shape[0] == rows for a in arrays.values())


def _rows(arrays: Arrays, start: int, stop: int) -> dict[str, np.ndarray]:
    return {name: array[start:stop] for name, array in arrays.items()}


class DriftAccumulator:
    """The open window of one model version. Pure: the caller supplies the time."""

    def __init__(
        self, model: str, version: str, reference: ReferenceStats, *, window_samples: int, window_s: float
    ) -> None:
        if window_samples < 1:
            raise ValueError(f"a drift window needs at least 1 sample, got {window_samples}")
        if window_s <= 0:
            raise ValueError(f"a drift window needs a positive duration, got {window_s}")
        self.model = model
        self.version = version
        self.reference = reference
        self._batch_first = all(tensor.batch_axis == 0 for tensor in reference.tensors)
        self.window_samples = window_samples
        self.window_s = window_s
        self._window: DriftWindow | None = None
        self._samples = 0
        self._start = 0.0

    @property
    def samples(self) -> int:
        return self._samples

    @property
    def batch_first(self) -> bool:
        """Whether every tensor counts samples on axis 0 (not a state [2, N, H], not a scalar)."""
        return self._batch_first

    def add(self, inputs: Arrays, outputs: Arrays, now: float) -> list[ClosedWindow]:
        """Count one batch; a batch that crosses the window size is split at the boundary."""
        if not self.batch_first:
            # Samples on other axes (or none): count the request whole, by the reference's axes.
            rows = request_samples(self.reference, {**inputs, **outputs})
            if rows == 0:
                return []
            self._count(inputs, outputs, rows, now)
            return [self._close(now)] if self._samples >= self.window_samples else []
        rows = leading_rows(inputs, outputs)
        if rows == 0:
            return []
        if not (_splittable(inputs, rows) and _splittable(outputs, rows)):
            # Tensors without a shared batch dimension cannot be split: count them whole.
            self._count(inputs, outputs, rows, now)
            return [self._close(now)] if self._samples >= self.window_samples else []
        closed: list[ClosedWindow] = []
        offset = 0
        while offset < rows:
            take = min(self.window_samples - self._samples, rows - offset)
            whole = offset == 0 and take == rows
            part_in = inputs if whole else _rows(inputs, offset, offset + take)
            part_out = outputs if whole else _rows(outputs, offset, offset + take)
            self._count(part_in, part_out, take, now)
            offset += take
            if self._samples >= self.window_samples:
                closed.append(self._close(now))
        return closed

    def due(self, now: float) -> bool:
        return self._samples > 0 and now - self._start >= self.window_s

    def close(self, now: float) -> ClosedWindow | None:
        """Close the open window now (``None`` when it is empty)."""
        return self._close(now) if self._samples else None

    def _count(self, inputs: Arrays, outputs: Arrays, rows: int, now: float) -> None:
        counted = count_window(self.reference, inputs, outputs)
        if self._window is None:
            self._window, self._start = counted, now
        else:
            self._window = self._window.merge(counted)
        self._samples += rows

    def _close(self, now: float) -> ClosedWindow:
        assert self._window is not None
        window = dataclasses.replace(self._window, samples=self._samples, start=self._start, end=now)
        closed = ClosedWindow(self.model, self.version, window, self._start, now)
        self._window, self._samples = None, 0
        return closed


@dataclass
class _Pending:
    key: ModelKey
    inputs: Arrays
    outputs: Arrays
    rows: int
    nbytes: int
    stackable: bool = True  # False where some tensor counts samples off axis 0


def _signature(item: _Pending) -> tuple[object, ...]:
    """Requests with equal signatures can be stacked: same model, tensor names, dtypes, sample shapes."""
    if not item.stackable or any(a.ndim == 0 for a in (*item.inputs.values(), *item.outputs.values())):
        return (item.key, id(item))  # a scalar has no batch axis to stack along
    return (
        item.key,
        tuple((n, a.dtype.str, a.shape[1:]) for n, a in item.inputs.items()),
        tuple((n, a.dtype.str, a.shape[1:]) for n, a in item.outputs.items()),
    )


def coalesce(items: list[_Pending], max_rows: int = CHUNK_SAMPLES) -> list[_Pending]:
    """Join consecutive compatible requests of the same model into batches of up to ``max_rows``."""
    batches: list[list[_Pending]] = []
    rows = 0  # in the last batch
    last: tuple[object, ...] | None = None
    for item in items:
        signature = _signature(item)
        if batches and signature == last and rows + item.rows <= max_rows:
            batches[-1].append(item)
            rows += item.rows
        else:
            batches.append([item])
            rows, last = item.rows, signature
    joined: list[_Pending] = []
    for group in batches:
        if len(group) == 1:
            joined.append(group[0])
            continue
        head = group[0]
        joined.append(
            _Pending(
                key=head.key,
                inputs={n: np.concatenate([p.inputs[n] for p in group]) for n in head.inputs},
                outputs={n: np.concatenate([p.outputs[n] for p in group]) for n in head.outputs},
                rows=sum(p.rows for p in group),
                nbytes=sum(p.nbytes for p in group),
            )
        )
    return joined


class DriftMonitor:
    """The observer and the worker: counts traffic per registered model version, emits closed windows."""

    def __init__(
        self,
        *,
        window_samples: int,
        window_s: float,
        on_window: Callable[[ClosedWindow], None],
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window_samples = window_samples
        self.window_s = window_s
        self.max_pending_bytes = max_pending_bytes
        self._on_window = on_window
        self._clock = clock
        self._accumulators: dict[ModelKey, DriftAccumulator] = {}
        self._queue: deque[tuple[ModelKey, Arrays, Arrays, int]] = deque()
        self._lock = threading.Lock()
        self._pending_bytes = 0
        self._skipped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- models ---------------------------------------------------------------------------------

    def register(self, model: str, version: str, reference: ReferenceStats) -> None:
        """Start counting ``model`` ``version`` against ``reference``."""
        accumulator = DriftAccumulator(
            model, version, reference, window_samples=self.window_samples, window_s=self.window_s
        )
        with self._lock:
            self._accumulators[(model, version)] = accumulator

    def registered(self) -> list[ModelKey]:
        return sorted(self._accumulators)

    # --- the inference path ---------------------------------------------------------------------

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
        key = (model, version)
        if outputs is None or status != OK or key not in self._accumulators:
            return
        # Plain loops and a tuple: this runs once per request, so every hundred nanoseconds count.
        nbytes = 0
        for array in inputs.values():
            nbytes += array.nbytes
        for array in outputs.values():
            nbytes += array.nbytes
        with self._lock:
            if self._pending_bytes + nbytes > self.max_pending_bytes:
                self._skipped += leading_rows(inputs, outputs)
                return
            self._pending_bytes += nbytes
            self._queue.append((key, inputs, outputs, nbytes))

    def _stackable(self, key: ModelKey) -> bool:
        accumulator = self._accumulators.get(key)
        return accumulator is None or accumulator.batch_first

    def take_skipped(self) -> int:
        """Samples left out of drift counting since the last call (the worker fell behind)."""
        with self._lock:
            skipped, self._skipped = self._skipped, 0
        return skipped

    # --- the worker -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="telemetry-drift", daemon=True)
            self._thread.start()

    def stop(self, *, flush: bool = True) -> None:
        """Count what is queued, close the open windows (when ``flush``), and stop the worker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.process_pending()
        if flush:
            now = self._clock()
            for accumulator in list(self._accumulators.values()):
                closed = accumulator.close(now)
                if closed is not None:
                    self._emit(closed)

    def process_pending(self) -> int:
        """Count everything queued and close windows that are due; returns the samples counted."""
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
            self._pending_bytes = 0
        items = [_Pending(key, i, o, leading_rows(i, o), n, self._stackable(key)) for key, i, o, n in queued]
        counted = 0
        for batch in coalesce(items):
            accumulator = self._accumulators.get(batch.key)
            if accumulator is None:
                continue
            try:
                closed = accumulator.add(batch.inputs, batch.outputs, self._clock())
            except Exception:
                log.exception("drift counting failed for %s %s; those samples are skipped", *batch.key)
                with self._lock:
                    self._skipped += batch.rows
                continue
            counted += batch.rows
            for window in closed:
                self._emit(window)
        now = self._clock()
        for accumulator in list(self._accumulators.values()):
            if accumulator.due(now):
                closed_now = accumulator.close(now)
                if closed_now is not None:
                    self._emit(closed_now)
        return counted

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.process_pending()
            except Exception:  # never let the worker die: drift is best effort, serving is not
                log.exception("the drift worker hit an error; it keeps running")

    def _emit(self, closed: ClosedWindow) -> None:
        try:
            self._on_window(closed)
        except Exception:
            log.exception("could not hand over a drift window of %s %s", closed.model, closed.version)
