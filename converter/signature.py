"""Input and output signatures: parsing ``--input`` specs and reconciling them with the data.

A spec reads ``name:1x1x8x8:float32`` (optionally ``:NCHW`` at the end). A dimension written
``N``, ``?`` or ``-1`` is dynamic. The first dimension is the batch.

A bundle serves the source's dtypes (``interface_signature``): where a format narrowed a tensor
(int64 token ids become int32 in TFLite), the manifest still declares the source's dtype, and
the runtime session casts at its edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import numpy as np

from converter.errors import ConversionError
from models.bundle.manifest import Layout, TensorDType, TensorSpec

DTYPES: tuple[str, ...] = get_args(TensorDType)
LAYOUTS: tuple[str, ...] = get_args(Layout)
_DYNAMIC = {"n", "?", "-1", "b", "batch"}
SPEC_EXAMPLE = "input:1x3x224x224:float32 (or input:Nx3x224x224:float32:NCHW)"


def parse_input_spec(text: str) -> TensorSpec:
    """Parse one ``--input`` value into a ``TensorSpec``; errors say what a good spec looks like."""
    parts = text.strip().split(":")
    if len(parts) not in (3, 4) or not all(parts):
        raise _spec_error(text, "expected name:shape:dtype[:layout]")
    name, shape_text, dtype = parts[0], parts[1], parts[2].lower()
    layout = parts[3].upper() if len(parts) == 4 else "ANY"
    try:
        shape = [-1 if d.strip().lower() in _DYNAMIC else int(d) for d in shape_text.lower().split("x")]
    except ValueError:
        raise _spec_error(text, f"shape {shape_text!r} is not like 1x3x224x224") from None
    if any(d == 0 or d < -1 for d in shape):
        raise _spec_error(text, "dimensions are positive, or N for a dynamic one")
    if dtype not in DTYPES:
        raise _spec_error(text, f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if layout not in LAYOUTS:
        raise _spec_error(text, f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    return TensorSpec(name=name, shape=shape, dtype=dtype, layout=layout)


def guess_layout(shape: list[int]) -> str:
    """A cautious guess: a 4-D tensor with 1 or 3 channels second is NCHW, last is NHWC."""
    if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3):
        return "NCHW"
    if len(shape) == 4 and shape[3] in (1, 3) and shape[1] not in (1, 3):
        return "NHWC"
    if len(shape) == 2:
        return "NC"
    return "ANY"


def spec_from_array(name: str, array: np.ndarray, *, layout: str | None = None) -> TensorSpec:
    """The spec of an input seen only through data: dynamic batch, the rest as the array has it."""
    shape = [-1, *(int(d) for d in array.shape[1:])]
    dtype = str(array.dtype)
    if dtype not in DTYPES:
        raise ConversionError(
            f"array {name!r} has dtype {dtype}, which models cannot take",
            step="data",
            hint=f"save it as one of {', '.join(DTYPES)} (float32 for most models)",
        )
    return TensorSpec(name=name, shape=shape, dtype=dtype, layout=layout or guess_layout(shape))


def interface_signature(
    model_inputs: Sequence[TensorSpec],
    model_outputs: Sequence[TensorSpec],
    source_inputs: Sequence[TensorSpec],
    source_outputs: Sequence[TensorSpec],
) -> tuple[list[TensorSpec], list[TensorSpec]] | None:
    """The artifact's signature with the source's dtypes where the format narrowed them; None if none was.

    Only the narrowings a runtime session can undo at its edge count (``castable``: int64 held
    as int32); quantized tensors keep the model's integers and parameters (clients speak float).
    Names, shapes and layouts stay the model's.
    """
    from edge_agent.runtimes.casting import castable

    declared = {spec.name: spec.dtype for spec in [*source_inputs, *source_outputs]}

    def served(spec: TensorSpec) -> TensorSpec:
        wanted = declared.get(spec.name)
        if wanted is None or spec.quantization is not None or not castable(wanted, spec.dtype):
            return spec
        return spec.model_copy(update={"dtype": wanted})

    inputs, outputs = [served(s) for s in model_inputs], [served(s) for s in model_outputs]
    if inputs == list(model_inputs) and outputs == list(model_outputs):
        return None
    return inputs, outputs


def with_batch(spec: TensorSpec, batch: int | None) -> TensorSpec:
    """The spec with its first dimension fixed to ``batch`` (or made dynamic with None)."""
    if not spec.shape:
        return spec
    return spec.model_copy(update={"shape": [-1 if batch is None else batch, *spec.shape[1:]]})


def concrete_shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    """A shape to build a sample with: the batch as given, other dynamic dimensions as 1."""
    if not spec.shape:
        return ()
    return (batch, *(1 if d == -1 else d for d in spec.shape[1:]))


def _spec_error(text: str, why: str) -> ConversionError:
    return ConversionError(f"--input {text!r}: {why}", step="load", hint=f"write it like {SPEC_EXAMPLE}")
