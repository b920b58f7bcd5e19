"""Each output's batch axis and shape, from what the fp32 original really returns.

A model file can declare an output's shape wrongly (ddddocr's CTC recognizer declares ``387`` as
``[1, seqlen]`` and returns ``[T, 1, 8210]``), and nothing in it says which axis counts samples.
So the converter runs the original on the first calibration sample, and on the first two when
the input batch is dynamic, and reads the batch axis from the outputs:

- a dynamic batch: the axis that is 1 for one sample and 2 for two; an output of which no axis
  moves has no batch axis (every sample gets the same value);
- a static batch of B (an input fixed at B samples, looped over by the agent): an axis of size B,
  the declared one when it is such an axis, else the first; none when no axis has that size.

``--output name:shape[:dtype]`` (``converter.signature.parse_output_spec``) overrides what is
read, after checking it against the real output. The spec's shape has the real rank, the batch
axis dynamic (or the static batch), and the other axes as declared where the declaration has the
real rank and agrees, dynamic where it does not: a wrong declaration vouches for nothing.

``batch_axis`` and ``fitted_shape`` are the pure core; ``settle_outputs`` runs the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from converter.errors import ConversionError, describe_failure
from converter.signature import OUTPUT_SPEC_EXAMPLE, OutputDeclaration, guess_layout
from models.bundle.manifest import TensorSpec

if TYPE_CHECKING:
    from converter.data import Dataset
    from converter.sources import SourceModel


def batch_axis(
    one: Sequence[int], two: Sequence[int] | None, *, batch: int, declared: int | None
) -> int | None:
    """The batch axis of an output shaped ``one`` for ``batch`` sample(s) and ``two`` for two.

    ``two`` is None when the batch cannot grow (a static batch, or a single sample of data): the
    axis is then one of size ``batch``, preferring ``declared``. With ``two``, the axis that goes
    from 1 to 2; None when nothing moved. An output that grows some other way (samples flattened
    into another axis) keeps ``declared``: no axis of it counts samples alone.
    """
    if two is None or len(two) != len(one):
        sized = [axis for axis, size in enumerate(one) if size == batch]
        return declared if declared in sized else (sized[0] if sized else None)
    doubled = [axis for axis, (a, b) in enumerate(zip(one, two, strict=True)) if (a, b) == (1, 2)]
    if doubled:
        return declared if declared in doubled else doubled[0]
    moved = any(a != b for a, b in zip(one, two, strict=True))
    return declared if moved and declared is not None and declared < len(one) else None


def fitted_shape(
    declared: Sequence[int], real: Sequence[int], axis: int | None, *, dynamic: bool
) -> list[int]:
    """The spec's shape: ``real``'s rank, -1 on a dynamic batch axis, declared dimensions that fit."""
    same_rank = len(declared) == len(real)
    shape = []
    for index, size in enumerate(real):
        if index == axis:
            shape.append(-1 if dynamic else int(size))
        elif same_rank and declared[index] in (-1, size):
            shape.append(declared[index])
        else:
            shape.append(-1)
    return shape


def settle_outputs(
    source: SourceModel, data: Dataset, declarations: Sequence[OutputDeclaration] = ()
) -> list[str]:
    """Set ``source.outputs``' batch axes and shapes from real runs on ``data``; return notes for the report."""
    declared = {d.name: d for d in declarations if d.declares_shape}
    unknown = sorted(set(declared) - {spec.name for spec in source.outputs})
    if unknown:
        raise ConversionError(
            f"--output names {unknown}, but the model's outputs are {[s.name for s in source.outputs]}",
            step="load",
            hint=f"name an output the model has: {OUTPUT_SPEC_EXAMPLE}",
        )
    batch, dynamic = _input_batch(source.inputs)
    if batch is None:  # no input counts samples, so no output does
        return []
    one = _probe(source, data, batch)
    two = _probe(source, data, 2) if dynamic and _first_batch(data, 2) == 2 else None
    notes: list[str] = []
    settled = []
    for spec in source.outputs:
        real = one[spec.name].shape
        grown = None if two is None else two[spec.name].shape
        want = declared.get(spec.name)
        if want is not None:
            settled.append(_declared_spec(spec, want, real, dynamic=dynamic))
            continue
        axis = batch_axis(real, grown, batch=batch, declared=spec.batch_axis)
        shape = fitted_shape(spec.shape, real, axis, dynamic=dynamic)
        if len(spec.shape) != len(real) or shape != spec.shape or axis != spec.batch_axis:
            notes.append(_disagreement(spec, real, axis, batch))
        settled.append(_reshaped(spec, shape, axis))
    source.outputs = settled
    return notes


def _input_batch(inputs: Sequence[TensorSpec]) -> tuple[int | None, bool]:
    """(samples to probe with, whether the batch can grow): a static batch wins over a dynamic one."""
    fixed = [b for spec in inputs if (b := spec.batch_size) is not None and b != -1]
    if fixed:
        return min(fixed), False
    dynamic = any(spec.has_dynamic_batch for spec in inputs)
    return (1, True) if dynamic else (None, False)


def _first_batch(data: Dataset, samples: int) -> int:
    """How many samples the first batch of ``samples`` holds (fewer where a per-sample fixed input changes)."""
    start, stop = next(data.spans(samples))
    return stop - start


def _probe(source: SourceModel, data: Dataset, samples: int) -> dict[str, np.ndarray]:
    feeds = next(data.batches(samples))
    try:
        return {name: np.asarray(value) for name, value in source.run(feeds).items()}
    except Exception as exc:
        raise ConversionError(
            f"{source.name} fails on {samples} calibration sample(s): {describe_failure(exc)}",
            step="load",
            hint="check the calibration arrays against the model's inputs (--input name:shape:dtype)",
        ) from exc


def _declared_spec(
    spec: TensorSpec, want: OutputDeclaration, real: Sequence[int], *, dynamic: bool
) -> TensorSpec:
    """``spec`` as ``--output`` declares it, after checking the declaration fits the real output."""
    assert want.shape is not None
    fits = len(want.shape) == len(real) and all(
        axis == want.batch_axis or d in (-1, size)
        for axis, (d, size) in enumerate(zip(want.shape, real, strict=True))
    )
    if not fits or (want.dtype is not None and want.dtype != spec.dtype):
        raise ConversionError(
            f"--output {want.name} declares {_text(want.shape, want.batch_axis)}"
            + (f" {want.dtype}" if want.dtype else "")
            + f", but the model returns {list(real)} {spec.dtype}",
            step="load",
            hint=f"declare the shape it returns, N on the batch axis: {OUTPUT_SPEC_EXAMPLE}",
        )
    shape = fitted_shape(want.shape, real, want.batch_axis, dynamic=dynamic)
    return _reshaped(spec, shape, want.batch_axis)


def _reshaped(spec: TensorSpec, shape: list[int], axis: int | None) -> TensorSpec:
    # A layout guessed from a wrong rank (ddddocr's [1, seqlen] read as NC) is guessed again.
    layout = spec.layout if len(shape) == len(spec.shape) else guess_layout(shape)
    return spec.model_copy(update={"shape": shape, "batch_axis": axis, "layout": layout})


def _disagreement(spec: TensorSpec, real: Sequence[int], axis: int | None, batch: int) -> str:
    where = "no batch axis" if axis is None else f"its batch on axis {axis}"
    return (
        f"output {spec.name!r} is declared {_text(spec.shape, None)} but returns "
        f"{list(real)} for {batch} sample(s): the converter trusts what it returns ({where}); "
        f"--output {spec.name}:SHAPE with N on the batch axis says otherwise"
    )


def _text(shape: Sequence[int], axis: int | None) -> str:
    return (
        "[" + ", ".join("N" if i == axis else ("?" if d == -1 else str(d)) for i, d in enumerate(shape)) + "]"
    )
