"""Checking a request's declared inputs and requested outputs against what the model serves.

Pure logic over names, datatypes and shapes, run before any payload is decoded: a request that
declares the wrong thing is refused cheaply, with a message naming the input, what the model
expects and what the request said. The contract a client sees comes from the bundle's manifest:
float32 for quantized tensors (the runtime quantizes), unless the request asks for ``raw``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.serving.codec import DTYPE_TO_DATATYPE
from edge_agent.serving.errors import InvalidRequest
from models.bundle.manifest import TensorSpec


@dataclass(frozen=True)
class TensorContract:
    """One tensor as a client sends or receives it: -1 in ``shape`` marks a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    quantized: bool = False
    batch_axis: int | None = 0

    @property
    def has_dynamic_batch(self) -> bool:
        return (
            self.batch_axis is not None
            and len(self.shape) > self.batch_axis
            and self.shape[self.batch_axis] == -1
        )


@dataclass(frozen=True)
class DeclaredTensor:
    """What a request says about one of its inputs, before its payload is looked at."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def contract(spec: TensorSpec, *, raw: bool) -> TensorContract:
    """The client's view of ``spec``: float32 for a quantized tensor unless ``raw``."""
    dtype = spec.dtype if raw else spec.client_dtype
    return TensorContract(
        name=spec.name,
        datatype=DTYPE_TO_DATATYPE[dtype],
        shape=tuple(spec.shape),
        quantized=spec.quantization is not None,
        batch_axis=spec.batch_axis,
    )


def contracts(specs: Sequence[TensorSpec], *, raw: bool = False) -> list[TensorContract]:
    return [contract(spec, raw=raw) for spec in specs]


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_inputs(expected: Sequence[TensorContract], declared: Sequence[DeclaredTensor]) -> None:
    """Every input named once, none unknown, none missing, each with the datatype and shape expected."""
    names = [tensor.name for tensor in declared]
    wanted = [tensor.name for tensor in expected]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidRequest(
            f"input(s) {duplicates} appear more than once in the request",
            hint="send each input once",
        )
    unknown = [name for name in names if name not in wanted]
    if unknown:
        raise InvalidRequest(
            f"unknown input(s) {unknown}; the model takes {wanted}",
            hint="name each input after one of the model's inputs (see the model's metadata)",
        )
    missing = [name for name in wanted if name not in names]
    if missing:
        raise InvalidRequest(
            f"missing input(s) {missing}; the model takes {wanted}",
            hint="send a value for every input",
        )
    by_name = {tensor.name: tensor for tensor in declared}
    for want in expected:
        check_input(want, by_name[want.name])


def check_input(want: TensorContract, got: DeclaredTensor) -> None:
    if got.datatype != want.datatype:
        raise InvalidRequest(
            f"input {want.name!r}: expected datatype {want.datatype}, got {got.datatype}",
            hint=_datatype_hint(want),
        )
    if not shape_matches(want.shape, got.shape):
        raise InvalidRequest(
            f"input {want.name!r}: expected shape {shape_text(want.shape)}, got {shape_text(got.shape)}",
            hint="-1 marks a dimension of any size; every other dimension must match",
        )
    if any(d == 0 for d in got.shape):
        raise InvalidRequest(
            f"input {want.name!r}: shape {shape_text(got.shape)} is empty",
            hint="send at least one sample",
        )


def shape_matches(expected: Sequence[int], got: Sequence[int]) -> bool:
    """Same rank, and every fixed dimension equal (``-1`` takes any size)."""
    return len(expected) == len(got) and all(w in (-1, g) for w, g in zip(expected, got, strict=True))


def check_outputs(available: Sequence[TensorContract], requested: Sequence[str]) -> list[str]:
    """The output names to return, in order: the requested ones, or every output when none is named."""
    names = [tensor.name for tensor in available]
    if not requested:
        return names
    unknown = [name for name in requested if name not in names]
    if unknown:
        raise InvalidRequest(
            f"unknown output(s) {unknown}; the model gives {names}",
            hint="ask for outputs by the names in the model's metadata, or ask for none to get all",
        )
    if len(set(requested)) != len(requested):
        raise InvalidRequest(f"output(s) requested more than once: {list(requested)}", hint="name each once")
    return list(requested)


def _datatype_hint(want: TensorContract) -> str:
    if want.quantized and want.datatype == "FP32":
        return "send FP32 (the agent quantizes it), or set the request parameter raw=true to send integers"
    return f"convert the data to {want.datatype}"
