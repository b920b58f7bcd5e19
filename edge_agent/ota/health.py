"""Is a staged version healthy before it serves? Warm-up, and the golden I/O check.

The bundle's ``golden.npz`` holds a few inputs and the outputs the converter saw the *packaged*
model give, keyed by the manifest's tensor names. The device runs the same inputs through the
version it just loaded and compares, with the manifest's ``golden`` tolerances:

- every value within ``atol + rtol * |expected|`` (``numpy.isclose``), no value NaN or infinite;
- for outputs shaped like class scores (``[batch, classes]``), top-1 agreement with the expected
  classes of at least ``min_top1_agreement``.

Each tensor holds its samples on its own batch axis (the manifest's ``batch_axis``: a CTC
recognizer's ``[T, batch, classes]`` on axis 1), as the converter wrote them and the session
returns them; top-1 reads samples along that axis.

A mismatch means the model does not compute on this device what it computed where it was
built: wrong kernels, a runtime bug, a corrupted or mislabelled model. ``compare_golden`` is
pure; running the model is the caller's (any ``run(feeds) -> outputs`` will do).
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import GoldenSpec, Manifest

RunModel = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]
"""Runs float feeds on the staged version and returns its outputs by name."""


class GoldenError(Exception):
    """The bundle's golden file cannot be used (missing, unreadable, or lacking a tensor)."""


@dataclass(frozen=True)
class GoldenSet:
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    spec: GoldenSpec
    batch_axes: Mapping[str, int | None] = field(default_factory=dict)  # absent: axis 0

    @property
    def samples(self) -> int:
        for name, value in self.inputs.items():
            axis = self.batch_axes.get(name, 0)
            if axis is not None and value.ndim > axis:
                return int(value.shape[axis])
        return 1


def load_golden(directory: Path, manifest: Manifest) -> GoldenSet | None:
    """The golden inputs and outputs of an extracted bundle, or None when it carries none."""
    spec = manifest.golden
    if spec is None:
        return None
    path = Path(directory) / spec.file
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise GoldenError(f"cannot read {spec.file}: {exc}") from exc
    missing = [t.name for t in [*manifest.inputs, *manifest.outputs] if t.name not in arrays]
    if missing:
        raise GoldenError(f"{spec.file} lacks the tensor(s) {', '.join(missing)}")
    inputs = {
        t.name: np.asarray(arrays[t.name], dtype=np.dtype(t.client_dtype), order="C") for t in manifest.inputs
    }
    expected = {t.name: arrays[t.name] for t in manifest.outputs}
    axes = {t.name: t.batch_axis for t in [*manifest.inputs, *manifest.outputs]}
    return GoldenSet(inputs=inputs, expected=expected, spec=spec, batch_axes=axes)


@dataclass(frozen=True)
class OutputComparison:
    name: str
    elements: int
    outside_tolerance: int
    max_abs_error: float
    top1_agreement: float | None
    passed: bool
    problem: str = ""

    def figures(self) -> dict[str, Any]:
        return {
            "elements": self.elements,
            "outside_tolerance": self.outside_tolerance,
            "max_abs_error": self.max_abs_error,
            "top1_agreement": self.top1_agreement,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class GoldenReport:
    outputs: tuple[OutputComparison, ...]
    spec: GoldenSpec

    @property
    def passed(self) -> bool:
        return all(output.passed for output in self.outputs)

    @property
    def reason(self) -> str:
        failed = [output for output in self.outputs if not output.passed]
        if not failed:
            return "the golden outputs match"
        return "golden check failed: " + "; ".join(f"{o.name}: {o.problem}" for o in failed)

    def figures(self) -> dict[str, Any]:
        return {
            "atol": self.spec.atol,
            "rtol": self.spec.rtol,
            "min_top1_agreement": self.spec.min_top1_agreement,
            "outputs": {output.name: output.figures() for output in self.outputs},
        }


def is_class_scores(array: np.ndarray) -> bool:
    return array.ndim == 2 and array.shape[1] >= 2 and np.issubdtype(array.dtype, np.floating)


def compare_output(
    name: str, expected: np.ndarray, actual: np.ndarray | None, spec: GoldenSpec, batch_axis: int | None = 0
) -> OutputComparison:
    if actual is None:
        return OutputComparison(name, expected.size, expected.size, float("inf"), None, False, "not produced")
    if actual.shape != expected.shape:
        return OutputComparison(
            name,
            expected.size,
            expected.size,
            float("inf"),
            None,
            False,
            f"shape {list(actual.shape)}, expected {list(expected.shape)}",
        )
    got, want = actual.astype(np.float64), expected.astype(np.float64)
    if not np.all(np.isfinite(got)):
        bad = int(np.count_nonzero(~np.isfinite(got)))
        return OutputComparison(
            name, want.size, bad, float("inf"), None, False, f"{bad} value(s) NaN or infinite"
        )
    error = np.abs(got - want)
    outside = int(np.count_nonzero(error > spec.atol + spec.rtol * np.abs(want)))
    max_error = float(error.max()) if error.size else 0.0
    top1 = _top1_agreement(want, got, batch_axis)
    problems = []
    if outside:
        problems.append(
            f"{outside} of {want.size} value(s) outside atol {spec.atol:g} / rtol {spec.rtol:g} "
            f"(largest error {max_error:.3g})"
        )
    if top1 is not None and top1 < spec.min_top1_agreement:
        problems.append(f"top-1 agreement {top1:.0%} below {spec.min_top1_agreement:.0%}")
    return OutputComparison(name, want.size, outside, max_error, top1, not problems, "; ".join(problems))


def _top1_agreement(want: np.ndarray, got: np.ndarray, batch_axis: int | None) -> float | None:
    """Top-1 agreement of class scores, their samples on ``batch_axis`` (None: rows, as before)."""
    if batch_axis:
        want, got = np.moveaxis(want, batch_axis, 0), np.moveaxis(got, batch_axis, 0)
    if not is_class_scores(want) or not len(want):
        return None
    return float(np.mean(np.argmax(got, axis=1) == np.argmax(want, axis=1)))


def compare_golden(
    expected: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    spec: GoldenSpec,
    batch_axes: Mapping[str, int | None] | None = None,
) -> GoldenReport:
    """Compare a model's outputs with the golden ones, output by output. Pure.

    ``batch_axes``: the axis each output counts samples on (absent: 0), for the top-1 check.
    """
    axes = batch_axes or {}
    return GoldenReport(
        tuple(
            compare_output(name, want, actual.get(name), spec, axes.get(name, 0))
            for name, want in sorted(expected.items())
        ),
        spec,
    )


def run_golden(run: RunModel, golden: GoldenSet) -> GoldenReport:
    outputs = run({name: value.copy() for name, value in golden.inputs.items()})
    return compare_golden(golden.expected, outputs, golden.spec, golden.batch_axes)


def synthetic_inputs(manifest: Manifest) -> dict[str, np.ndarray]:
    """Zeros shaped like one sample (dynamic dimensions as 1), for warming up without golden I/O."""
    return {
        spec.name: np.zeros([1 if d == -1 else d for d in spec.shape], dtype=np.dtype(spec.client_dtype))
        for spec in manifest.inputs
    }


def warm_up(run: RunModel, feeds: Mapping[str, np.ndarray], runs: int) -> list[float]:
    """Run ``feeds`` ``runs`` times (first calls allocate and compile); returns each run's seconds."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        run({name: value.copy() for name, value in feeds.items()})
        seconds.append(time.perf_counter() - started)
    return seconds
