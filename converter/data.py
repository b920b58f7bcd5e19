"""Calibration and evaluation sets: ``.npz`` files with one array per model input.

Each array's first axis counts samples. An evaluation set may carry ``labels`` (integer class ids,
one per sample), which turns on the accuracy figures. Every check here fails with a message that
names the file, the array and what was expected, because a calibration set of the wrong shape is
the most common way a conversion goes wrong.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter.errors import ConversionError
from models.bundle.manifest import TensorSpec

LABELS_KEY = "labels"


@dataclass(frozen=True)
class Dataset:
    """Checked model inputs (and optional labels) with the same number of samples each."""

    name: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, count: int) -> Dataset:
        """The first ``count`` samples (deterministic, so the same data gives the same model)."""
        labels = None if self.labels is None else self.labels[:count]
        return Dataset(self.name, {k: v[:count] for k, v in self.inputs.items()}, labels)

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of at most ``size`` samples, in order."""
        for start in range(0, self.size, size):
            yield {k: v[start : start + size] for k, v in self.inputs.items()}


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
    for spec in inputs:
        if spec.name not in arrays:
            raise ConversionError(
                f"{role} set {source} has no array named {spec.name!r} (it has {found or 'nothing'})",
                step="data",
                hint=f"save one array per model input, named after it: numpy.savez(path, {spec.name}=...)",
            )
        checked[spec.name] = _check_array(arrays[spec.name], spec, role=role, source=source)
    sizes = {name: len(array) for name, array in checked.items()}
    if len(set(sizes.values())) > 1:
        raise ConversionError(
            f"{role} set {source}: inputs have different sample counts {sizes}",
            step="data",
            hint="every array's first axis counts samples, and all must have the same count",
        )
    if next(iter(sizes.values())) == 0:
        raise ConversionError(
            f"{role} set {source} is empty: it holds 0 samples",
            step="data",
            hint=f"give a few hundred representative samples (at least one) for {role}",
        )
    labels = _check_labels(arrays.get(LABELS_KEY), next(iter(sizes.values())), role=role, source=source)
    return Dataset(name=source, inputs=checked, labels=labels)


def _check_array(array: np.ndarray, spec: TensorSpec, *, role: str, source: str) -> np.ndarray:
    expected = "x".join("N" if i == 0 else ("?" if d == -1 else str(d)) for i, d in enumerate(spec.shape))
    where = f"{role} set {source}: array {spec.name!r}"
    if str(array.dtype) != spec.dtype:
        raise ConversionError(
            f"{where} is {array.dtype}, but the model takes {spec.dtype}",
            step="data",
            hint=f"convert it before saving: array.astype(numpy.{spec.dtype})",
        )
    if array.ndim != len(spec.shape):
        raise ConversionError(
            f"{where} has shape {list(array.shape)} ({array.ndim}-D); the model takes {expected}",
            step="data",
            hint="the first axis counts samples; the others must match the model's input",
        )
    for axis, (have, want) in enumerate(zip(array.shape[1:], spec.shape[1:], strict=True), start=1):
        if want != -1 and have != want:
            raise ConversionError(
                f"{where} has shape {list(array.shape)}; axis {axis} should be {want} "
                f"(model input {expected})",
                step="data",
                hint="check the layout (NCHW vs NHWC) and the preprocessing that produced the array",
            )
    return array


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
