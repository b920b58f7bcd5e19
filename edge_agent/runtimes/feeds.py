"""Checking a request against the model's inputs, and turning it into what the model takes.

Pure functions over numpy arrays and ``TensorSpec``: every message names the input, what the
model expects and what it got, because these are the errors a client sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edge_agent.runtimes.base import quantize
from edge_agent.runtimes.casting import narrow_feed
from edge_agent.runtimes.errors import InvalidInput
from models.bundle.manifest import QuantParams, TensorSpec


def prepare_feeds(
    specs: Sequence[TensorSpec],
    feeds: Mapping[str, Any],
    *,
    raw: bool,
    batch_loop: bool = False,
    runtime_dtypes: Mapping[str, str] | None = None,
) -> tuple[dict[str, np.ndarray], int | None]:
    """Check names, dtypes and shapes; quantize float feeds of quantized inputs unless ``raw``.

    Returns the feeds in the model's dtypes (C-contiguous) and the batch size (the size of each
    input's batch axis, ``TensorSpec.batch_axis``, which the feeds agree on; ``None`` for a model
    whose inputs have no batch axis, such as scalars). With ``batch_loop`` the caller will run the
    samples one by one, so an input with a static batch of 1 accepts any batch on its batch axis,
    and every input with a batch axis must then carry the same batch; inputs without one are
    shared by every sample. ``runtime_dtypes``
    names the inputs the model runs narrower than ``specs`` serve them (int32 inside a TFLite
    model for int64 ids): they are checked against ``specs``, then narrowed, and refused when a
    value does not fit (``edge_agent.runtimes.casting``).
    """
    expected = [spec.name for spec in specs]
    unknown = sorted(set(feeds) - set(expected))
    if unknown:
        raise InvalidInput(
            f"unknown input(s) {unknown}; the model takes {expected}",
            hint="name each feed after one of the model's inputs",
        )
    missing = [name for name in expected if name not in feeds]
    if missing:
        raise InvalidInput(
            f"missing input(s) {missing}; the model takes {expected}", hint="send a value for every input"
        )
    prepared = {
        spec.name: prepare_feed(spec, feeds[spec.name], raw=raw, batch_loop=batch_loop) for spec in specs
    }
    for name, runtime_dtype in (runtime_dtypes or {}).items():
        if name in prepared:
            prepared[name] = narrow_feed(name, prepared[name], runtime_dtype)
    batches = feed_batches(specs, prepared)
    if batch_loop and len(set(batches.values())) > 1:
        raise InvalidInput(
            f"the inputs carry different batch sizes {batches}",
            hint="send the same number of samples in every input",
        )
    return prepared, (next(iter(batches.values())) if batches else None)


def feed_batches(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Each given input's sample count, along its own batch axis (a state's axis 1; a scalar has none)."""
    return {
        spec.name: int(feeds[spec.name].shape[spec.batch_axis])
        for spec in specs
        if spec.batch_axis is not None and spec.name in feeds and feeds[spec.name].ndim > spec.batch_axis
    }


def prepare_feed(spec: TensorSpec, value: Any, *, raw: bool, batch_loop: bool = True) -> np.ndarray:
    """One input: coerce the dtype (quantizing when asked) and check the shape."""
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    check_shape(spec, array.shape, batch_loop=batch_loop)
    converted = coerce_dtype(spec, array, raw=raw)
    if converted.ndim == 0:
        # ascontiguousarray would make a scalar 1-D; OpenVINO cannot share a read-only 0-D buffer.
        return converted if converted.flags.writeable else converted.copy()
    return np.ascontiguousarray(converted)


def check_shape(spec: TensorSpec, shape: tuple[int, ...], *, batch_loop: bool = True) -> None:
    """Rank must match; so must every fixed dimension but a static batch of 1 (run sample by sample).

    The batch of 1 may be larger on the spec's batch axis (``batch_axis``) only.
    """
    expected = spec.shape
    if len(shape) != len(expected):
        raise InvalidInput(
            f"input {spec.name!r}: expected rank {len(expected)} {_shape_text(expected)}, "
            f"got rank {len(shape)} {list(shape)}",
            hint="reshape the feed to the model's input shape",
        )
    for axis, (want, got) in enumerate(zip(expected, shape, strict=True)):
        if got == 0:
            raise InvalidInput(
                f"input {spec.name!r}: dimension {axis} is empty in {list(shape)}",
                hint="send at least one sample",
            )
        batch_of_one = batch_loop and axis == spec.batch_axis and want == 1
        if want not in (-1, got) and not batch_of_one:
            raise InvalidInput(
                f"input {spec.name!r}: expected shape {_shape_text(expected)}, got {list(shape)} "
                f"(dimension {axis} must be {want})",
                hint="reshape or resize the feed to the model's input shape",
            )


def coerce_dtype(spec: TensorSpec, array: np.ndarray, *, raw: bool) -> np.ndarray:
    """The feed in the model's dtype, or an ``InvalidInput`` saying what to send instead."""
    target = np.dtype(spec.dtype)
    if spec.quantization is not None and not raw:
        if array.dtype.kind != "f":
            raise InvalidInput(
                f"input {spec.name!r} takes float32 (quantized inside to {spec.dtype}), got {array.dtype}",
                hint=f"send float32, or pass raw=True with {spec.dtype} values",
            )
        return _quantize_checked(spec.name, array, spec.quantization)
    if array.dtype == target:
        return array
    if target.kind == "f" and array.dtype.kind == "f":
        return array.astype(target)
    if target.kind in "iu" and array.dtype.kind in "iu" and _fits(array, target):
        return array.astype(target)
    raw_note = " (raw=True sends the model's integers unchanged)" if spec.quantization is not None else ""
    raise InvalidInput(
        f"input {spec.name!r}: expected {spec.dtype}, got {array.dtype}{raw_note}",
        hint=f"convert the feed to {spec.client_dtype if not raw else spec.dtype}",
    )


def _quantize_checked(name: str, array: np.ndarray, params: QuantParams) -> np.ndarray:
    if not np.isfinite(array).all():
        raise InvalidInput(
            f"input {name!r} holds NaN or infinite values, which cannot be quantized to {params.dtype}",
            hint="replace them before sending",
        )
    return quantize(array, params)


def _fits(array: np.ndarray, target: np.dtype[Any]) -> bool:
    if np.can_cast(array.dtype, target, casting="safe"):
        return True
    if array.size == 0:
        return True
    info = np.iinfo(target)
    return bool(array.min() >= info.min and array.max() <= info.max)


def split_batch(
    specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray], index: int
) -> dict[str, np.ndarray]:
    """Sample ``index`` of every feed, kept as a batch of 1 on its own batch axis.

    An input without a batch axis (a scalar, a fixed shape) is the same for every sample.
    """
    axes = {spec.name: spec.batch_axis for spec in specs}
    sample = {}
    for name, value in feeds.items():
        axis = axes.get(name, 0)
        if axis is None or value.ndim <= axis:
            sample[name] = value
        else:
            # A slice: a view on axis 0 (no copy, as before), a contiguous copy elsewhere.
            where: list[slice] = [slice(None)] * value.ndim
            where[axis] = slice(index, index + 1)
            sample[name] = np.ascontiguousarray(value[tuple(where)])
    return sample


def join_samples(
    specs: Sequence[TensorSpec], results: Sequence[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per-sample outputs joined along each output's batch axis (stacked on a new axis 0 if none)."""
    joined = {}
    for spec in specs:
        values = [result[spec.name] for result in results]
        axis = spec.batch_axis
        if axis is None or values[0].ndim <= axis:
            joined[spec.name] = np.stack(values)
        else:
            joined[spec.name] = np.concatenate(values, axis=axis)
    return joined


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join("?" if d == -1 else str(d) for d in shape) + "]"
