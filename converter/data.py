"""Calibration and evaluation sets: ``.npz`` files with one array per model input.

How an array holds its samples follows the input's batch axis (``TensorSpec.batch_axis``):

- an input with a batch axis: the samples stacked along that axis, the array otherwise shaped
  like the input (``image`` ``[S, 3, 224, 224]``; a state ``2xNx128`` is ``[2, S, 128]``);
- an input without one (a scalar ``sr::int64``, a fixed shape ``2x1x128``): either stored once,
  shaped like the input (``sr`` of shape ``[]``), and then every sample shares it; or one value per
  sample, stacked on a new first axis (``sr`` of shape ``[S]``). Consecutive samples with the same
  value run together; a batch never mixes values.

An evaluation set may carry ``labels`` (integer class ids, one per sample), which turns on the
accuracy figures. Every check here fails with a message that names the file, the array and what
was expected, because a calibration set of the wrong shape is the most common way a conversion
goes wrong.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from converter.errors import ConversionError
from converter.signature import spec_text
from models.bundle.manifest import TensorSpec

LABELS_KEY = "labels"


@dataclass(frozen=True)
class Dataset:
    """Checked model inputs (and optional labels) with the same number of samples each.

    ``axes`` gives the axis of each array that counts samples (absent: 0; None: the array is the
    one value every sample shares); ``fixed`` names the inputs without a batch axis, whose
    per-sample values are stacked on axis 0 of the array but fed to the model one at a time.
    """

    name: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    axes: Mapping[str, int | None] = field(default_factory=dict)
    fixed: frozenset[str] = frozenset()

    def axis(self, name: str) -> int | None:
        return self.axes.get(name, 0)

    @property
    def size(self) -> int:
        sizes = [v.shape[a] for k, v in self.inputs.items() if (a := self.axis(k)) is not None]
        return sizes[0] if sizes else 1

    def take(self, count: int) -> Dataset:
        """The first ``count`` samples (deterministic, so the same data gives the same model)."""
        return self.select(slice(0, count))

    def select(self, rows: slice | np.ndarray) -> Dataset:
        """The samples at ``rows`` (a slice or indices), in that order."""
        labels = None if self.labels is None else self.labels[rows]
        inputs = {k: _rows(v, self.axis(k), rows) for k, v in self.inputs.items()}
        return replace(self, inputs=inputs, labels=labels)

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of at most ``size`` samples, in order, each shaped as the model takes it."""
        for start, stop in self.spans(size):
            yield {
                k: np.asarray(v[start]) if k in self.fixed else _rows(v, self.axis(k), slice(start, stop))
                for k, v in self.inputs.items()
            }

    def full_batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        """``batches`` of exactly ``size`` samples only: what a model built for that batch takes."""
        for (start, stop), feeds in zip(self.spans(size), self.batches(size), strict=True):
            if stop - start == size:
                yield feeds

    def spans(self, size: int) -> Iterator[tuple[int, int]]:
        """(start, stop) of each batch: at most ``size`` samples that share their fixed inputs."""
        start = 0
        while start < self.size:
            stop = min(start + size, self.size)
            for name in self.fixed:
                values = self.inputs[name]
                same = [i for i in range(start + 1, stop) if not np.array_equal(values[i], values[start])]
                stop = min([stop, *same])
            yield start, stop
            start = stop

    def samples_first(self, name: str) -> np.ndarray:
        """Input ``name`` with its samples on axis 0 (a shared value repeated for every sample)."""
        value, axis = self.inputs[name], self.axis(name)
        if axis is None:
            return np.broadcast_to(value, (self.size, *value.shape))
        return np.moveaxis(value, axis, 0) if axis else value


def spread_initial_states(
    arrays: Mapping[str, np.ndarray], inputs: Sequence[TensorSpec], fed: Collection[str]
) -> dict[str, np.ndarray]:
    """``arrays`` with each state input given for one sample only (the initial state) repeated for all.

    With ``--state``, only the first sample's state is ever used: later ones are carried.
    """
    result = dict(arrays)
    counts = [
        array.shape[spec.batch_axis]
        for spec in inputs
        if spec.name not in fed
        and spec.batch_axis is not None
        and (array := arrays.get(spec.name)) is not None
        and array.ndim > spec.batch_axis
    ]
    for spec in inputs:
        array = arrays.get(spec.name)
        axis = spec.batch_axis
        if spec.name not in fed or not counts or array is None or axis is None or array.ndim <= axis:
            continue
        if array.shape[axis] == 1 and counts[0] > 1:
            result[spec.name] = np.repeat(array, counts[0], axis=axis)
    return result


def run_sequence(
    run: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
    data: Dataset,
    pairs: Mapping[str, str],
    outputs: Sequence[TensorSpec],
) -> tuple[Dataset, dict[str, np.ndarray]]:
    """Run ``data``'s samples in order, one at a time, carrying the state; the state seen, and the outputs.

    ``pairs`` maps each output to the input it feeds on the next call (``--state``): the first
    sample takes its state from the data, every later one the previous sample's output. Returns
    the data with the state inputs replaced by the states actually fed (so each sample can be
    run again on its own) and the outputs joined along their batch axes.
    """
    feeding = {input_name: output for output, input_name in pairs.items()}
    carried: dict[str, np.ndarray] = {}
    seen: dict[str, list[np.ndarray]] = {name: [] for name in feeding}
    parts: list[Mapping[str, np.ndarray]] = []
    for feeds in data.batches(1):
        feeds.update(carried)
        for name in feeding:
            seen[name].append(feeds[name])
        result = run(feeds)
        parts.append(result)
        carried = {name: np.asarray(result[output]) for name, output in feeding.items()}
    inputs, axes, fixed = dict(data.inputs), dict(data.axes), set(data.fixed)
    for name, values in seen.items():
        axis = data.axis(name)
        if axis is None or name in fixed:
            inputs[name], axes[name] = np.stack(values), 0
            fixed.add(name)
        else:
            inputs[name] = np.concatenate(values, axis=axis)
    return replace(data, inputs=inputs, axes=axes, fixed=frozenset(fixed)), join_batches(parts, outputs)


def join_batches(
    parts: Sequence[Mapping[str, np.ndarray]], specs: Sequence[TensorSpec]
) -> dict[str, np.ndarray]:
    """Outputs of consecutive batches joined along each output's batch axis (stacked if it has none)."""
    axes = {spec.name: spec.batch_axis for spec in specs}
    joined = {}
    for name in parts[0]:
        axis = axes.get(name, 0)
        values = [p[name] for p in parts]
        if axis is None or values[0].ndim == 0:
            joined[name] = np.stack(values)
        else:
            joined[name] = np.concatenate(values, axis=axis)
    return joined


def samples_first(arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """``arrays`` (joined by ``join_batches``) with every tensor's samples on axis 0."""
    axes = {spec.name: spec.batch_axis for spec in specs}
    return {k: np.moveaxis(v, a, 0) if (a := axes.get(k, 0)) and v.ndim > a else v for k, v in arrays.items()}


def take_samples(
    arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], rows: np.ndarray
) -> dict[str, np.ndarray]:
    """The samples at ``rows`` of arrays joined by ``join_batches``, in the same layout."""
    axes = {spec.name: spec.batch_axis for spec in specs}
    return {k: _rows(v, a if (a := axes.get(k, 0)) is not None else 0, rows) for k, v in arrays.items()}


def _rows(array: np.ndarray, axis: int | None, rows: slice | np.ndarray) -> np.ndarray:
    if axis is None:
        return array
    index: list[slice | np.ndarray] = [slice(None)] * array.ndim
    index[axis] = rows
    return array[tuple(index)]


def read_npz(path: Path, role: str) -> dict[str, np.ndarray]:
    """Every array in ``path``; ``role`` ("calibration", "evaluation") goes into the error messages."""
    if not path.is_file():
        raise ConversionError(
            f"{role} set {path} does not exist",
            step="data",
            hint="pass an .npz file with one array per model input (see `edgefleet convert --help`)",
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConversionError(
            f"{role} set {path} is not a readable .npz file: {exc}",
            step="data",
            hint="write it with numpy.savez(path, input=array, labels=labels)",
        ) from exc


def check_dataset(
    arrays: Mapping[str, np.ndarray], inputs: list[TensorSpec], *, role: str, source: str
) -> Dataset:
    """Match ``arrays`` against the model's inputs by name, rank, shape and dtype."""
    found = sorted(arrays)
    checked: dict[str, np.ndarray] = {}
    axes: dict[str, int | None] = {}
    fixed: set[str] = set()
    for spec in inputs:
        if spec.name not in arrays:
            raise ConversionError(
                f"{role} set {source} has no array named {spec.name!r} (it has {found or 'nothing'})",
                step="data",
                hint=f"save one array per model input, named after it: numpy.savez(path, {spec.name}=...)",
            )
        checked[spec.name], axes[spec.name] = _check_array(arrays[spec.name], spec, role=role, source=source)
        if spec.batch_axis is None and axes[spec.name] is not None:
            fixed.add(spec.name)
    sizes = {name: array.shape[axis] for name, array in checked.items() if (axis := axes[name]) is not None}
    if len(set(sizes.values())) > 1:
        raise ConversionError(
            f"{role} set {source}: inputs have different sample counts {sizes}",
            step="data",
            hint="every array counts samples along its input's batch axis (the N of its --input "
            "spec; axis 0 by default), and all must have the same count",
        )
    size = next(iter(sizes.values())) if sizes else 1
    if size == 0:
        raise ConversionError(
            f"{role} set {source} is empty: it holds 0 samples",
            step="data",
            hint=f"give a few hundred representative samples (at least one) for {role}",
        )
    labels = _check_labels(arrays.get(LABELS_KEY), size, role=role, source=source)
    return Dataset(name=source, inputs=checked, labels=labels, axes=axes, fixed=frozenset(fixed))


def _check_array(
    array: np.ndarray, spec: TensorSpec, *, role: str, source: str
) -> tuple[np.ndarray, int | None]:
    """The array and the axis that counts its samples (None: one value all samples share)."""
    expected = spec_text(spec) or "a scalar"
    where = f"{role} set {source}: array {spec.name!r}"
    if str(array.dtype) != spec.dtype:
        raise ConversionError(
            f"{where} is {array.dtype}, but the model takes {spec.dtype}",
            step="data",
            hint=f"convert it before saving: array.astype(numpy.{spec.dtype})",
        )
    if spec.batch_axis is None:
        # Stored once (the input's own shape) or once per sample (stacked on a new first axis).
        if array.ndim == len(spec.shape) + 1:
            per_sample, axis, shape = True, 0, array.shape[1:]
        else:
            per_sample, axis, shape = False, None, array.shape
        if array.ndim not in (len(spec.shape), len(spec.shape) + 1) or any(
            want not in (-1, have) for have, want in zip(shape, spec.shape, strict=True)
        ):
            raise ConversionError(
                f"{where} has shape {list(array.shape)}; the model takes {expected} with no batch axis",
                step="data",
                hint=f"store it once, shaped {list(spec.shape)}, or once per sample, shaped "
                f"{['S', *spec.shape]}",
            )
        return array, axis if per_sample else None
    if array.ndim != len(spec.shape):
        raise ConversionError(
            f"{where} has shape {list(array.shape)} ({array.ndim}-D); the model takes {expected}",
            step="data",
            hint=f"axis {spec.batch_axis} counts samples; the others must match the model's input",
        )
    for axis, (have, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
        if axis != spec.batch_axis and want != -1 and have != want:
            raise ConversionError(
                f"{where} has shape {list(array.shape)}; axis {axis} should be {want} "
                f"(model input {expected}, samples on axis {spec.batch_axis})",
                step="data",
                hint="check the layout (NCHW vs NHWC) and the preprocessing that produced the array",
            )
    return array, spec.batch_axis


def _check_labels(labels: np.ndarray | None, size: int, *, role: str, source: str) -> np.ndarray | None:
    if labels is None:
        return None
    if labels.ndim != 1 or len(labels) != size or not np.issubdtype(labels.dtype, np.integer):
        raise ConversionError(
            f"{role} set {source}: 'labels' must be {size} integer class ids, "
            f"not {labels.dtype} {list(labels.shape)}",
            step="data",
            hint="save labels as a 1-D integer array with one class id per sample",
        )
    return labels
