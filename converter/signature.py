"""Input and output signatures: parsing ``--input`` specs and reconciling them with the data.

A spec reads ``name:shape:dtype`` (optionally ``:NCHW`` at the end), the shape's dimensions
joined by ``x``:

- ``N`` (or ``B``, ``batch``) marks the batch axis, wherever it is, and makes it dynamic:
  ``state:2xNx128:float32`` has its batch on axis 1. At most one ``N`` per input.
- ``?`` or ``-1`` is another dynamic dimension; without an ``N``, a dynamic first dimension is
  the batch (``?x3`` reads like ``Nx3``).
- without ``N``, a first dimension of 1 is a static batch of 1 on axis 0 (``1x3x224x224``), as
  always; any other fixed shape (``2x1x128``, ``10``) has no batch axis: it is served as is.
- an empty shape is a scalar: ``sr::int64``. It has no batch axis.

``--output`` takes a bare name (a PyTorch or Keras model's outputs, in order), or
``name:shape[:dtype]`` in the same grammar, where ``N`` marks the output's batch axis and a shape
without ``N`` has none (``387:?xNx8210`` for a CTC recognizer returning ``[T, batch, classes]``).
Without it, the converter finds each output's batch axis by running the original
(``converter.outputs``).

A bundle serves the source's dtypes (``interface_signature``): where a format narrowed a tensor
(int64 token ids become int32 in TFLite), the manifest still declares the source's dtype, and
the runtime session casts at its edge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import get_args

import numpy as np

from converter.errors import ConversionError
from models.bundle.manifest import Layout, TensorDType, TensorSpec

DTYPES: tuple[str, ...] = get_args(TensorDType)
LAYOUTS: tuple[str, ...] = get_args(Layout)
_BATCH = {"n", "b", "batch"}
_DYNAMIC = {"?", "-1"}
SPEC_EXAMPLE = (
    "input:1x3x224x224:float32 (or input:Nx3x224x224:float32:NCHW; state:2xNx128:float32 puts the "
    "batch on axis 1; sr::int64 is a scalar)"
)
OUTPUT_SPEC_EXAMPLE = "logits (a name), or logits:?xNx8210:float32 (the batch on axis 1; no N: no batch axis)"


def parse_input_spec(text: str) -> TensorSpec:
    """Parse one ``--input`` value into a ``TensorSpec``; errors say what a good spec looks like."""
    parts = text.strip().split(":")
    if len(parts) not in (3, 4) or not parts[0] or not parts[2] or (len(parts) == 4 and not parts[3]):
        raise _spec_error(text, "expected name:shape:dtype[:layout] (name::dtype for a scalar)")
    name, dtype = parts[0], _dtype(text, parts[2])
    layout = parts[3].upper() if len(parts) == 4 else "ANY"
    if layout not in LAYOUTS:
        raise _spec_error(text, f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    shape, batch_mark = _dims(text, parts[1])
    if batch_mark is not None:
        batch_axis: int | None = batch_mark
    elif shape and shape[0] in (1, -1):
        batch_axis = 0
    else:
        batch_axis = None
    return TensorSpec(name=name, shape=shape, dtype=dtype, layout=layout, batch_axis=batch_axis)


@dataclass(frozen=True)
class OutputDeclaration:
    """What ``--output name:shape[:dtype]`` says about an output; a bare ``--output name`` only names it.

    ``shape`` is None for a bare name. The batch axis is where ``N`` is, and none without one
    (unlike ``--input``, where a leading 1 is a static batch): an output's shape is seen, not
    built, so the only thing worth declaring is which axis counts samples.
    """

    name: str
    shape: list[int] | None = None
    batch_axis: int | None = None
    dtype: str | None = None

    @property
    def declares_shape(self) -> bool:
        return self.shape is not None


def parse_output_spec(text: str) -> OutputDeclaration:
    """Parse one ``--output`` value: ``name``, or ``name:shape[:dtype]`` in ``--input``'s grammar."""
    parts = text.strip().split(":")
    if len(parts) == 1 and parts[0]:
        return OutputDeclaration(name=parts[0])
    if len(parts) not in (2, 3) or not parts[0] or (len(parts) == 3 and not parts[2]):
        raise _spec_error(text, "expected name, or name:shape[:dtype]", option="--output")
    dtype = _dtype(text, parts[2], option="--output") if len(parts) == 3 else None
    shape, batch_axis = _dims(text, parts[1], option="--output")
    return OutputDeclaration(name=parts[0], shape=shape, batch_axis=batch_axis, dtype=dtype)


def _dims(text: str, shape_text: str, *, option: str = "--input") -> tuple[list[int], int | None]:
    """A spec's shape (-1 for ``N``, ``?`` and ``-1``) and the axis ``N`` marks, if any."""
    shape_text = shape_text.strip()
    dims = [d.strip().lower() for d in shape_text.split("x")] if shape_text else []
    batch_marks = [axis for axis, d in enumerate(dims) if d in _BATCH]
    if len(batch_marks) > 1:
        raise _spec_error(
            text, f"N marks the one batch axis, but {shape_text!r} has {len(batch_marks)}", option=option
        )
    try:
        shape = [-1 if d in _BATCH or d in _DYNAMIC else int(d) for d in dims]
    except ValueError:
        raise _spec_error(text, f"shape {shape_text!r} is not like 1x3x224x224", option=option) from None
    if any(d == 0 or d < -1 for d in shape):
        raise _spec_error(text, "dimensions are positive, or N for a dynamic one", option=option)
    return shape, (batch_marks[0] if batch_marks else None)


def _dtype(text: str, value: str, *, option: str = "--input") -> str:
    dtype = value.lower()
    if dtype not in DTYPES:
        raise _spec_error(text, f"dtype {dtype!r} is not one of {', '.join(DTYPES)}", option=option)
    return dtype


def spec_text(spec: TensorSpec) -> str:
    """A spec's shape as ``--input`` writes it: ``N`` on a dynamic batch axis, ``?`` elsewhere."""
    return "x".join(
        "N" if axis == spec.batch_axis and d == -1 else ("?" if d == -1 else str(d))
        for axis, d in enumerate(spec.shape)
    )


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
    Names, shapes and layouts stay the model's; batch axes and state pairs are the source's (a
    model file does not record which axis counts samples).
    """
    from edge_agent.runtimes.casting import castable

    declared = {spec.name: spec.dtype for spec in [*source_inputs, *source_outputs]}

    def served(spec: TensorSpec) -> TensorSpec:
        wanted = declared.get(spec.name)
        if wanted is None or spec.quantization is not None or not castable(wanted, spec.dtype):
            return spec
        return spec.model_copy(update={"dtype": wanted})

    inputs = with_batch_axes([served(s) for s in model_inputs], source_inputs)
    outputs = with_batch_axes([served(s) for s in model_outputs], source_outputs)
    if inputs == list(model_inputs) and outputs == list(model_outputs):
        return None
    return inputs, outputs


def with_batch(spec: TensorSpec, batch: int | None) -> TensorSpec:
    """The spec with its batch dimension fixed to ``batch`` (or made dynamic with None)."""
    if spec.batch_axis is None:
        return spec
    shape = list(spec.shape)
    shape[spec.batch_axis] = -1 if batch is None else batch
    return spec.model_copy(update={"shape": shape})


def concrete_shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    """A shape to build a sample with: the batch as given on the batch axis, other dynamic dimensions as 1."""
    return tuple(
        batch if axis == spec.batch_axis else (1 if d == -1 else d) for axis, d in enumerate(spec.shape)
    )


def batch_first(specs: Sequence[TensorSpec]) -> bool:
    """Whether every tensor counts its samples on axis 0 (the only axis the exporters make dynamic)."""
    return all(spec.batch_axis == 0 for spec in specs)


def with_batch_axes(specs: Sequence[TensorSpec], declared: Sequence[TensorSpec]) -> list[TensorSpec]:
    """``specs`` (read from a model) with the batch axes and state pairs of ``declared`` (the source's)."""
    by_name = {spec.name: spec for spec in declared}
    result = []
    for spec in specs:
        want = by_name.get(spec.name)
        if want is None or len(want.shape) != len(spec.shape):
            result.append(spec)
            continue
        update: dict[str, object] = {}
        if want.batch_axis != spec.batch_axis:
            update["batch_axis"] = want.batch_axis
        if want.state_for != spec.state_for:
            update["state_for"] = want.state_for
        result.append(spec.model_copy(update=update) if update else spec)
    return result


def parse_state_pairs(items: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``--state OUTPUT=INPUT`` values as {output: input}: the output feeds the input on the next call."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    pairs: dict[str, str] = {}
    for item in items:
        output, _, input_name = item.partition("=")
        if not output.strip() or not input_name.strip():
            raise ConversionError(
                f"--state {item!r}: expected OUTPUT=INPUT",
                step="load",
                hint="name the output that carries the state and the input it feeds next, "
                "e.g. --state stateN=state",
            )
        pairs[output.strip()] = input_name.strip()
    return pairs


def pair_states(
    inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], pairs: Mapping[str, str]
) -> list[TensorSpec]:
    """``outputs`` with ``state_for`` set and the paired input's batch axis, after checking each pair fits.

    An output that feeds an input must have its dtype and rank, and the same size on every axis
    but the batch.
    """
    by_input = {spec.name: spec for spec in inputs}
    by_output = {spec.name: spec for spec in outputs}
    fed = list(pairs.values())
    for output, input_name in pairs.items():
        problem = None
        if output not in by_output:
            problem = f"the model has no output {output!r} (it has {sorted(by_output)})"
        elif input_name not in by_input:
            problem = f"the model has no input {input_name!r} (it has {sorted(by_input)})"
        elif fed.count(input_name) > 1:
            problem = f"input {input_name!r} is fed by more than one output"
        else:
            out, inp = by_output[output], by_input[input_name]
            same_shape = len(out.shape) == len(inp.shape) and all(
                a == inp.batch_axis or -1 in (o, i) or o == i
                for a, (o, i) in enumerate(zip(out.shape, inp.shape, strict=True))
            )
            if out.dtype != inp.dtype or not same_shape:
                problem = (
                    f"output {output!r} ({out.dtype} {out.shape}) cannot feed input {input_name!r} "
                    f"({inp.dtype} {inp.shape})"
                )
        if problem:
            raise ConversionError(
                f"--state {output}={input_name}: {problem}",
                step="load",
                hint="pair an output with the input it becomes on the next call: same dtype and shape",
            )
    return [
        spec.model_copy(
            update={"state_for": pairs[spec.name], "batch_axis": by_input[pairs[spec.name]].batch_axis}
        )
        if spec.name in pairs
        else spec
        for spec in outputs
    ]


def _spec_error(text: str, why: str, *, option: str = "--input") -> ConversionError:
    example = SPEC_EXAMPLE if option == "--input" else OUTPUT_SPEC_EXAMPLE
    return ConversionError(f"{option} {text!r}: {why}", step="load", hint=f"write it like {example}")
