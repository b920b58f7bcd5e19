"""Casting at a session's edge, where a model file holds a narrower dtype than its bundle serves.

A bundle's manifest declares the dtypes of the source model (the interface every device of a
fleet shares); some formats cannot hold them. TFLite has no int64 at a model's edge, so
litert-torch turns a torch model's int64 token ids into int32. The session then casts at its
edge: an int64 feed is narrowed to int32 when every value fits, and refused (never wrapped)
when one does not; an int32 output is widened back to int64, which is always exact.

Pure functions over numpy arrays: each refusal names the input, the values that do not fit and
the range that would, because it is the error a client sees (INVALID_ARGUMENT over gRPC).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from edge_agent.runtimes.errors import InvalidInput
from hw_profiles.schema import RuntimeName
from models.bundle.manifest import TensorSpec

# interface dtype -> the dtypes a model file may hold instead, the session casting between them.
INTERFACE_CASTS: Mapping[str, frozenset[str]] = {"int64": frozenset({"int32"})}

_FORMAT_LABEL = {
    RuntimeName.LITERT: "TFLite",
    RuntimeName.ONNXRUNTIME: "ONNX",
    RuntimeName.OPENVINO: "OpenVINO",
}


def castable(interface: str, runtime: str) -> bool:
    """Whether a tensor served as ``interface`` may run as ``runtime`` inside the model."""
    return runtime in INTERFACE_CASTS.get(interface, frozenset())


def narrow_feed(name: str, array: np.ndarray, runtime_dtype: str) -> np.ndarray:
    """``array`` (in the interface dtype) as ``runtime_dtype``, or ``InvalidInput`` if a value does not fit."""
    target = np.dtype(runtime_dtype)
    if array.size:
        info = np.iinfo(target)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            outside = array[(array < info.min) | (array > info.max)]
            raise InvalidInput(
                f"input {name!r}: {outside.size} of {array.size} values are outside {target.name}'s range "
                f"[{info.min}, {info.max}] (from {outside.min()} to {outside.max()}); the model serves "
                f"{name!r} as {array.dtype.name} but runs it as {target.name}, so such values are "
                "refused rather than wrapped",
                hint=f"send {name!r} values within {target.name}'s range",
            )
    return np.asarray(array, dtype=target, order="C")  # a scalar stays 0-D


def widen_output(array: np.ndarray, interface_dtype: str) -> np.ndarray:
    """An output the model computed narrower, in the dtype the bundle serves (an exact cast)."""
    return array.astype(np.dtype(interface_dtype))


def cast_note(
    name: str, role: Literal["input", "output"], interface: str, runtime: str, runtime_name: RuntimeName
) -> str:
    """One line for reports and ``describe()``: what a client sends or gets, and what runs inside."""
    label = _FORMAT_LABEL.get(runtime_name, runtime_name.value)
    served = f"{name}: served as {interface.upper()}"
    if role == "input":
        return f"{served}, runs as {runtime} inside {label}; values outside {runtime} are refused"
    return f"{served}, computed as {runtime} inside {label} and widened on the way out"


def cast_notes(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    runtime_dtypes: Mapping[str, str],
    runtime_name: RuntimeName,
) -> list[str]:
    """``cast_note`` for every tensor of the signature that runs in another dtype than it is served."""
    roles: list[tuple[TensorSpec, Literal["input", "output"]]] = [(s, "input") for s in inputs]
    roles += [(s, "output") for s in outputs]
    return [
        cast_note(spec.name, role, spec.dtype, runtime_dtypes[spec.name], runtime_name)
        for spec, role in roles
        if spec.name in runtime_dtypes
    ]


def widen_outputs(
    specs: Sequence[TensorSpec], results: Mapping[str, np.ndarray], runtime_dtypes: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """``results`` with every output that runs narrower widened to its interface dtype."""
    widened = dict(results)
    for spec in specs:
        value = widened.get(spec.name)
        if spec.name in runtime_dtypes and value is not None and value.dtype != np.dtype(spec.dtype):
            widened[spec.name] = widen_output(value, spec.dtype)
    return widened
