"""The one interface every runtime backend implements, and the quantization helpers they share.

``RuntimeSession`` is what callers (the converter's validation and benchmark, the agent's
gRPC server) code against. The affine quantization here is the one contract every backend
follows for integer-I/O models: clients speak float32 unless they ask for ``raw``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np

from hw_profiles.schema import RuntimeName
from models.bundle.manifest import QuantParams, TensorSpec


@runtime_checkable
class RuntimeSession(Protocol):
    """An opened model, ready to run. Use it as a context manager, or call ``close()``."""

    runtime: RuntimeName
    provider: str
    fallbacks: list[str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def infer(self, feeds: Mapping[str, Any], *, raw: bool = False) -> dict[str, np.ndarray]:
        """Run one batch. ``raw=False``: float in and out, even for integer-I/O models."""
        ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def quantize(values: np.ndarray, params: QuantParams) -> np.ndarray:
    """``q = clip(round(x / scale) + zero_point, qmin, qmax)`` in ``params.dtype``.

    Rounds half away from zero, as TFLite's own quantize kernel does, so a float fed here and
    a float quantized inside the model land on the same integer.
    """
    target = np.dtype(params.dtype)
    info = np.iinfo(target)
    # In place on one scratch array: for the small tensors of a request, call overhead dominates.
    scaled = np.asarray(values, dtype=np.float64) / params.scale
    scaled += np.copysign(0.5, scaled)
    np.trunc(scaled, out=scaled)
    scaled += params.zero_point
    np.minimum(scaled, info.max, out=scaled)
    np.maximum(scaled, info.min, out=scaled)
    return scaled.astype(target)


def dequantize(values: np.ndarray, params: QuantParams) -> np.ndarray:
    """``x = scale * (q - zero_point)`` as float32."""
    result = np.array(values, dtype=np.float32, copy=True)  # never write into the caller's array
    result -= np.float32(params.zero_point)
    result *= np.float32(params.scale)
    return result


def finish_outputs(
    specs: list[TensorSpec], results: Mapping[str, np.ndarray], *, raw: bool
) -> dict[str, np.ndarray]:
    """Outputs in signature order; quantized ones dequantized unless ``raw``."""
    finished: dict[str, np.ndarray] = {}
    for spec in specs:
        value = results[spec.name]
        if spec.quantization is not None and not raw:
            value = dequantize(value, spec.quantization)
        finished[spec.name] = value
    return finished


def loops_over_batch(specs: list[TensorSpec]) -> bool:
    """True when a batch larger than 1 must run sample by sample: some input has a static batch of 1.

    The batch is the spec's ``batch_axis`` (axis 0 unless the manifest says otherwise).
    """
    return any(spec.batch_axis is not None and spec.shape[spec.batch_axis] == 1 for spec in specs)
