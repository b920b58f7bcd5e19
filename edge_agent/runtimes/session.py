"""The shared ``infer`` pipeline every backend inherits.

A backend only knows how to read its model's signature and run one prepared batch
(``BaseSession._run``). Everything a client can get wrong, and everything that must behave the
same on every runtime, lives here: checking feeds against the signature, quantizing float feeds
for integer models and dequantizing their outputs, casting tensors that the model runs in a
narrower dtype than its bundle serves (int64 ids held as int32 by a TFLite model: narrowed on the
way in, values that do not fit refused; widened on the way out), looping over the samples of a
batch when the model has a static batch of 1, and turning a runtime's exception into
``InferenceFailed``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import numpy as np

from edge_agent.runtimes.base import finish_outputs, loops_over_batch
from edge_agent.runtimes.casting import cast_notes, widen_outputs
from edge_agent.runtimes.errors import InferenceFailed, RuntimeBackendError
from edge_agent.runtimes.feeds import join_samples, prepare_feeds, split_batch
from hw_profiles.schema import RuntimeName
from models.bundle.manifest import TensorSpec


class BaseSession(ABC):
    """Shared ``infer`` pipeline; subclasses set the signature and implement ``_run``."""

    runtime: RuntimeName  # set by each backend class
    # ONNX Runtime sessions may be run from several threads at once; interpreters and infer
    # requests may not, so those backends serialise calls behind a lock.
    thread_safe: ClassVar[bool] = False

    def __init__(
        self,
        *,
        model_path: Path,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        provider: str,
        fallbacks: list[str],
        threads: int | None,
        runtime_version: str = "unknown",
        runtime_dtypes: Mapping[str, str] | None = None,
    ) -> None:
        self.model_path = model_path
        self.inputs = inputs
        self.outputs = outputs
        self.provider = provider
        self.fallbacks = fallbacks
        self.threads = threads
        self.runtime_version = runtime_version
        # Tensors the model itself holds in another dtype than ``inputs``/``outputs`` serve
        # (name -> the model's dtype), read from the runtime: cast at the edge on every call.
        self.runtime_dtypes: dict[str, str] = dict(runtime_dtypes or {})
        self._closed = False
        self._lock = threading.Lock()

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run prepared feeds (model dtypes, a batch the model accepts) and return every output by name."""

    def _release(self) -> None:  # noqa: B027 - optional hook, most backends only drop references
        """Free runtime resources; called once by ``close``."""

    def infer(self, feeds: Mapping[str, Any], *, raw: bool = False) -> dict[str, np.ndarray]:
        if self._closed:
            raise InferenceFailed(
                f"the session for {self.model_path.name} is closed", hint="open a new session"
            )
        loop = loops_over_batch(self.inputs)
        prepared, batch = prepare_feeds(
            self.inputs, feeds, raw=raw, batch_loop=loop, runtime_dtypes=self.runtime_dtypes
        )
        if loop and batch is not None and batch > 1:
            results = self._run_sample_by_sample(prepared, batch)
        else:
            results = self._guarded_run(prepared)
        if self.runtime_dtypes:
            results = widen_outputs(self.outputs, results, self.runtime_dtypes)
        return finish_outputs(self.outputs, results, raw=raw)

    def _run_sample_by_sample(self, prepared: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
        # Split and joined along each tensor's own batch axis; inputs without one go to every sample.
        per_sample = [self._guarded_run(split_batch(self.inputs, prepared, i)) for i in range(batch)]
        return join_samples(self.outputs, per_sample)

    def _guarded_run(self, prepared: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            if self.thread_safe:
                results = self._run(prepared)
            else:
                with self._lock:
                    results = self._run(prepared)
        except RuntimeBackendError:
            raise
        except Exception as exc:
            raise InferenceFailed(
                f"{self.runtime.value} failed running {self.model_path.name} on {self.provider}: {exc}",
                hint="check the model runs with the converter's validation, and that the feeds are sane",
            ) from exc
        missing = [spec.name for spec in self.outputs if spec.name not in results]
        if missing:
            raise InferenceFailed(f"{self.runtime.value} returned no value for output(s) {missing}")
        return results

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for status pages and reports."""
        return {
            "runtime": self.runtime.value,
            "runtime_version": self.runtime_version,
            "model": str(self.model_path),
            "provider": self.provider,
            "fallbacks": list(self.fallbacks),
            "threads": self.threads,
            "inputs": [spec.model_dump(mode="json") for spec in self.inputs],
            "outputs": [spec.model_dump(mode="json") for spec in self.outputs],
            "runtime_dtypes": dict(self.runtime_dtypes),
        }

    @property
    def dtype_notes(self) -> list[str]:
        """One line per tensor that runs in another dtype than it is served (for reports)."""
        return cast_notes(self.inputs, self.outputs, self.runtime_dtypes, self.runtime)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model_path.name} on {self.provider}>"
