"""One loaded model version: its runtime session, how requests reach it, its statistics, its leases.

Every request holds a lease on the version it runs on. Unloading a version first stops new
leases (the repository no longer routes to it), then waits for the held ones to be returned, and
only then closes the runtime session: a request that was in flight when a version was swapped out
always finishes on the version it started on.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from edge_agent.runtimes import RuntimeBackendError, RuntimeSession
from edge_agent.serving.batcher import DirectExecutor, DynamicBatcher, Execution, Feeds
from edge_agent.serving.errors import from_runtime_error
from edge_agent.serving.installer import InstalledBundle
from edge_agent.serving.statistics import StatisticsRecorder, Timings
from edge_agent.serving.validation import TensorContract, contracts
from hw_profiles.schema import ModelFormat

# Triton reports a model's backend as its "platform"; these name the runtime and the file format.
PLATFORMS = {
    ModelFormat.ONNX: "onnxruntime_onnx",
    ModelFormat.TFLITE: "litert_tflite",
    ModelFormat.OPENVINO: "openvino_ir",
}


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching: ``max_batch`` samples per execution (1 turns it off), ``max_delay_s`` of waiting.

    ``workers``: batches that may run at once, for runtimes whose sessions allow concurrent calls
    (ONNX Runtime); others always run one batch at a time. Worth raising when the model runs on
    fewer threads than the device has cores.
    """

    max_batch: int = 8
    max_delay_s: float = 0.002
    workers: int = 1

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {self.max_batch}")
        if self.max_delay_s < 0:
            raise ValueError(f"the batch delay must not be negative, got {self.max_delay_s}")
        if self.workers < 1:
            raise ValueError(f"batch workers must be at least 1, got {self.workers}")

    @property
    def enabled(self) -> bool:
        return self.max_batch > 1


def batchable(installed: InstalledBundle, session: RuntimeSession) -> bool:
    """True when every input and output (in the manifest and in the model) has a dynamic batch."""
    manifest = installed.manifest
    specs = [*manifest.inputs, *manifest.outputs, *session.inputs]
    # The batcher joins requests on axis 0: a batch elsewhere, or a tensor without one, is served alone.
    return all(spec.has_dynamic_batch and spec.batch_axis == 0 for spec in specs)


class ServedModel:
    """A model version that is loaded and serving."""

    def __init__(self, installed: InstalledBundle, session: RuntimeSession, batching: BatchingConfig) -> None:
        self.installed = installed
        self.session = session
        self.name = installed.name
        self.version = installed.version
        self.platform = PLATFORMS[installed.manifest.format]
        self.stats = StatisticsRecorder(self.name, self.version)
        self.batched = batching.enabled and batchable(installed, session)
        self._leases = 0
        self._draining = False
        self._cond = threading.Condition()
        self._executor: DirectExecutor | DynamicBatcher = (
            DynamicBatcher(
                self._run,
                self.stats.executed,
                max_batch=batching.max_batch,
                max_delay_s=batching.max_delay_s,
                active_requests=lambda: self.in_flight,
                workers=batching.workers if getattr(session, "thread_safe", False) else 1,
                name=f"{self.name}:{self.version}",
            )
            if self.batched
            else DirectExecutor(self._run, self.stats.executed)
        )

    # --- the client's contract ------------------------------------------------------------------

    def inputs(self, *, raw: bool = False) -> list[TensorContract]:
        return contracts(self.installed.manifest.inputs, raw=raw)

    def outputs(self, *, raw: bool = False) -> list[TensorContract]:
        return contracts(self.installed.manifest.outputs, raw=raw)

    # --- running --------------------------------------------------------------------------------

    def execute(self, feeds: Feeds, *, raw: bool) -> Execution:
        """Run validated feeds (through the batcher when the model has one)."""
        return self._executor.execute(feeds, raw)

    def _run(self, feeds: Feeds, raw: bool) -> Feeds:
        try:
            return self.session.infer(feeds, raw=raw)
        except RuntimeBackendError as exc:
            raise from_runtime_error(exc) from exc

    def record(self, *, ok: bool, total_ns: int, timings: Timings = Timings(), samples: int = 0) -> None:
        if ok:
            self.stats.request_succeeded(total_ns, timings, samples)
        else:
            self.stats.request_failed(total_ns)

    # --- leases and draining --------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Take a lease for one request; False once the model is draining."""
        with self._cond:
            if self._draining:
                return False
            self._leases += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._leases -= 1
            if self._leases == 0:
                self._cond.notify_all()
        if isinstance(self._executor, DynamicBatcher):
            self._executor.wake()  # a batch waiting for company may now know that none is coming

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._leases

    def drain(self, timeout_s: float) -> bool:
        """Refuse new leases and wait for the held ones; True when none is left within the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._draining = True
            while self._leases > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self) -> None:
        self._executor.close()
        self.session.close()
