"""Running requests on a model: at once in the caller's thread, or gathered into dynamic batches.

``DynamicBatcher`` serves models whose inputs and outputs all have a dynamic batch dimension.
Requests queue up; one worker thread takes the oldest, then keeps adding compatible requests (same
``raw`` flag, same datatypes and per-sample shapes) until the batch holds ``max_batch`` samples or
the oldest request has waited ``max_delay_s``. It runs the batch once and hands each caller the
rows that belong to it. When a shared batch fails, each of its requests runs again on its own, so
one caller's bad data cannot fail another caller's request. Given ``active_requests`` (how many
requests hold the model right now), the worker does not wait for company that cannot come: when
every active request is already in the batch or the queue, the batch runs at once, so a lone
sequential client pays no batching delay. With ``workers`` above 1 (for runtimes whose sessions may
run from several threads at once), up to that many batches run at the same time while the next
one gathers; a new batch starts gathering only when a worker is free, so under load batches grow
instead of queueing.

``DirectExecutor`` runs each request in the caller's thread (models with a fixed batch, or
batching turned off); concurrent requests then run concurrently where the runtime allows it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from edge_agent.serving.errors import ServerUnavailable
from edge_agent.serving.statistics import Timings

Feeds = dict[str, np.ndarray]
RunFn = Callable[[Feeds, bool], Feeds]
"""Runs prepared feeds on the model: ``run(feeds, raw) -> outputs``."""
ExecutionHook = Callable[[int, Timings], None]
"""Told about every model execution: ``(batch_size, timings)``."""


@dataclass(frozen=True)
class Execution:
    """One request's outputs and how its time was spent; ``batch_size`` is its execution's size."""

    outputs: Feeds
    timings: Timings
    batch_size: int


def batch_rows(feeds: Feeds) -> int:
    """The request's batch: the first dimension its inputs share (1 for scalar inputs)."""
    for value in feeds.values():
        return int(value.shape[0]) if value.ndim > 0 else 1
    return 1


def run_timed(run: RunFn, feeds: Feeds, raw: bool, *, queue_ns: int = 0) -> tuple[Feeds, Timings]:
    started = time.perf_counter_ns()
    outputs = run(feeds, raw)
    return outputs, Timings(queue_ns=queue_ns, infer_ns=time.perf_counter_ns() - started)


class DirectExecutor:
    """Runs each request in the calling thread."""

    def __init__(self, run: RunFn, on_execution: ExecutionHook) -> None:
        self._run = run
        self._on_execution = on_execution

    def execute(self, feeds: Feeds, raw: bool) -> Execution:
        rows = batch_rows(feeds)
        try:
            outputs, timings = run_timed(self._run, feeds, raw)
        except Exception:
            self._on_execution(rows, Timings())
            raise
        self._on_execution(rows, timings)
        return Execution(outputs, timings, rows)

    def close(self) -> None:
        """Nothing to stop: requests run in their callers' threads."""


@dataclass(eq=False)
class _Pending:
    feeds: Feeds
    raw: bool
    rows: int
    key: Hashable
    enqueued_ns: int
    done: threading.Event = field(default_factory=threading.Event)
    result: Execution | None = None
    error: BaseException | None = None


def batch_key(feeds: Feeds, raw: bool) -> Hashable:
    """Requests with equal keys can share a batch: same raw flag, dtypes and per-sample shapes."""
    return (raw, tuple((name, value.dtype.str, value.shape[1:]) for name, value in sorted(feeds.items())))


class DynamicBatcher:
    """Gathers concurrent requests into batches of up to ``max_batch`` samples."""

    def __init__(
        self,
        run: RunFn,
        on_execution: ExecutionHook,
        *,
        max_batch: int,
        max_delay_s: float,
        active_requests: Callable[[], int] | None = None,
        workers: int = 1,
        name: str = "model",
    ) -> None:
        if workers < 1:
            raise ValueError(f"a dynamic batcher needs at least one worker, got {workers}")
        if max_batch < 2:
            raise ValueError(f"a dynamic batcher needs max_batch >= 2, got {max_batch}")
        if max_delay_s < 0:
            raise ValueError(f"max_delay_s must not be negative, got {max_delay_s}")
        self.max_batch = max_batch
        self.max_delay_ns = int(max_delay_s * 1e9)
        self._run = run
        self._on_execution = on_execution
        self._active_requests = active_requests
        self._queue: deque[_Pending] = deque()
        self._waiting = 0  # accepted and not started yet: queued, or in the batch being gathered
        self._cond = threading.Condition()
        self._closed = False
        self._free_workers = threading.Semaphore(workers)
        self._runners = (
            ThreadPoolExecutor(workers, thread_name_prefix=f"batch-{name}") if workers > 1 else None
        )
        self._worker = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    def execute(self, feeds: Feeds, raw: bool) -> Execution:
        """Queue the request and wait for its share of a batch."""
        item = _Pending(feeds, raw, batch_rows(feeds), batch_key(feeds, raw), time.perf_counter_ns())
        with self._cond:
            if self._closed:
                raise ServerUnavailable("the model is unloading and takes no new requests", hint="retry")
            self._queue.append(item)
            self._waiting += 1
            self._cond.notify()
        item.done.wait()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def wake(self) -> None:
        """Have the worker look again (a request finished elsewhere: maybe nobody else is coming now)."""
        with self._cond:
            self._cond.notify_all()

    def pending(self) -> int:
        """Requests accepted and not started yet (queued, or in the batch being gathered)."""
        with self._cond:
            return self._waiting

    def close(self) -> None:
        """Run what is queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join()
        if self._runners is not None:
            self._runners.shutdown(wait=True)

    # --- the worker -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self._free_workers.acquire()
            batch = self._collect()
            if batch is None:
                self._free_workers.release()
                return
            if self._runners is None:
                self._run_guarded(batch)
            else:
                self._runners.submit(self._run_guarded, batch)

    def _run_guarded(self, batch: list[_Pending]) -> None:
        try:
            self._run_batch(batch)
        except BaseException as exc:  # never leave a caller waiting forever
            for item in batch:
                if not item.done.is_set():
                    item.error = exc
                    item.done.set()
        finally:
            self._free_workers.release()

    def _collect(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch, rows = [first], first.rows
            deadline = first.enqueued_ns + self.max_delay_ns
            while rows < self.max_batch:
                rows = self._take_compatible(batch, rows, first.key)
                remaining_ns = deadline - time.perf_counter_ns()
                if rows >= self.max_batch or self._closed or remaining_ns <= 0 or self._nobody_coming(batch):
                    break
                self._cond.wait(remaining_ns / 1e9)
            self._waiting -= len(batch)
            return batch

    def _nobody_coming(self, batch: list[_Pending]) -> bool:
        """True when no request outside the batch and the queue is active: waiting would gain nothing."""
        if self._active_requests is None:
            return False
        return self._active_requests() <= len(batch) + len(self._queue)

    def _take_compatible(self, batch: list[_Pending], rows: int, key: Hashable) -> int:
        """Move queued requests that fit into ``batch`` (oldest first); the rest keep their order."""
        kept: deque[_Pending] = deque()
        while self._queue:
            item = self._queue.popleft()
            if item.key == key and rows + item.rows <= self.max_batch:
                batch.append(item)
                rows += item.rows
            else:
                kept.append(item)
        self._queue = kept
        return rows

    def _run_batch(self, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            self._run_alone(batch[0])
            return
        started = time.perf_counter_ns()
        names = list(batch[0].feeds)
        feeds = {name: np.concatenate([item.feeds[name] for item in batch], axis=0) for name in names}
        total = sum(item.rows for item in batch)
        gathered = time.perf_counter_ns()
        try:
            outputs = self._run(feeds, batch[0].raw)
        except Exception:
            self._on_execution(total, Timings(input_ns=gathered - started))
            for item in batch:  # isolate the failure: each request gets its own outcome
                self._run_alone(item)
            return
        ran = time.perf_counter_ns()
        if any(value.ndim == 0 or value.shape[0] != total for value in outputs.values()):
            # An output without the batch dimension cannot be split between callers.
            for item in batch:
                self._run_alone(item)
            return
        shares: list[Feeds] = []
        offset = 0
        for item in batch:
            shares.append({name: value[offset : offset + item.rows] for name, value in outputs.items()})
            offset += item.rows
        split = time.perf_counter_ns()
        compute = Timings(input_ns=gathered - started, infer_ns=ran - gathered, output_ns=split - ran)
        self._on_execution(total, compute)
        for item, share in zip(batch, shares, strict=True):
            timings = Timings(
                queue_ns=started - item.enqueued_ns,
                input_ns=compute.input_ns,
                infer_ns=compute.infer_ns,
                output_ns=compute.output_ns,
            )
            item.result = Execution(share, timings, total)
            item.done.set()

    def _run_alone(self, item: _Pending) -> None:
        queue_ns = time.perf_counter_ns() - item.enqueued_ns
        try:
            outputs, timings = run_timed(self._run, item.feeds, item.raw, queue_ns=queue_ns)
        except Exception as exc:
            self._on_execution(item.rows, Timings(queue_ns=queue_ns))
            item.error = exc
        else:
            self._on_execution(item.rows, timings)
            item.result = Execution(outputs, timings, item.rows)
        finally:
            item.done.set()
