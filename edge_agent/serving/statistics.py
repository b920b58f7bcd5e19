"""Per-model inference statistics, counted the way Triton's ``InferStatistics`` counts them.

* ``success`` / ``fail``: requests, and the nanoseconds each spent inside the agent in total;
* ``queue``: time a request waited for its batch to start (0 when it ran at once);
* ``compute_input`` / ``compute_infer`` / ``compute_output``: per request, the time its execution
  spent gathering inputs, running the model and splitting outputs (a request that shared a
  dynamic batch is charged the batch's times, as Triton does);
* ``inference_count``: samples inferred; ``execution_count``: model executions (one dynamic batch
  of several requests is one execution); ``batch_stats``: executions per batch size.

Thread-safe; ``snapshot`` returns immutable values.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Duration:
    count: int = 0
    ns: int = 0

    def plus(self, ns: int, count: int = 1) -> Duration:
        return Duration(self.count + count, self.ns + max(0, ns))


@dataclass(frozen=True)
class Timings:
    """How one request's execution spent its time, in nanoseconds."""

    queue_ns: int = 0
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0


@dataclass(frozen=True)
class InferStats:
    success: Duration = Duration()
    fail: Duration = Duration()
    queue: Duration = Duration()
    compute_input: Duration = Duration()
    compute_infer: Duration = Duration()
    compute_output: Duration = Duration()


@dataclass(frozen=True)
class BatchStats:
    batch_size: int
    compute_input: Duration = Duration()
    compute_infer: Duration = Duration()
    compute_output: Duration = Duration()


@dataclass(frozen=True)
class ModelStats:
    name: str
    version: str
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    inference: InferStats = InferStats()
    batches: tuple[BatchStats, ...] = field(default_factory=tuple)


class StatisticsRecorder:
    """Accumulates one model version's statistics."""

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        self._lock = threading.Lock()
        self._infer = InferStats()
        self._batches: dict[int, BatchStats] = {}
        self._inference_count = 0
        self._execution_count = 0
        self._last_inference_ms = 0

    def request_succeeded(self, total_ns: int, timings: Timings, samples: int) -> None:
        with self._lock:
            stats = self._infer
            self._infer = InferStats(
                success=stats.success.plus(total_ns),
                fail=stats.fail,
                queue=stats.queue.plus(timings.queue_ns),
                compute_input=stats.compute_input.plus(timings.input_ns),
                compute_infer=stats.compute_infer.plus(timings.infer_ns),
                compute_output=stats.compute_output.plus(timings.output_ns),
            )
            self._inference_count += samples
            self._last_inference_ms = time.time_ns() // 1_000_000

    def request_failed(self, total_ns: int) -> None:
        with self._lock:
            stats = self._infer
            self._infer = InferStats(
                success=stats.success,
                fail=stats.fail.plus(total_ns),
                queue=stats.queue,
                compute_input=stats.compute_input,
                compute_infer=stats.compute_infer,
                compute_output=stats.compute_output,
            )

    def executed(self, batch_size: int, timings: Timings) -> None:
        """One model execution over ``batch_size`` samples (counted whether or not it succeeded)."""
        with self._lock:
            self._execution_count += 1
            previous = self._batches.get(batch_size, BatchStats(batch_size))
            self._batches[batch_size] = BatchStats(
                batch_size=batch_size,
                compute_input=previous.compute_input.plus(timings.input_ns),
                compute_infer=previous.compute_infer.plus(timings.infer_ns),
                compute_output=previous.compute_output.plus(timings.output_ns),
            )

    def snapshot(self) -> ModelStats:
        with self._lock:
            return ModelStats(
                name=self.name,
                version=self.version,
                last_inference_ms=self._last_inference_ms,
                inference_count=self._inference_count,
                execution_count=self._execution_count,
                inference=self._infer,
                batches=tuple(self._batches[size] for size in sorted(self._batches)),
            )
