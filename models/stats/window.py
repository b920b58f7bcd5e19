"""What a device counts over a window of traffic: bin counts and moments per feature.

Small, free of raw data, and additive: the server merges windows (from many devices, or many
periods) by adding counts and combining moments, in any order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

from models.stats.moments import Moments
from models.stats.reference import STATS_SCHEMA_VERSION, ReferenceStats


@dataclass(frozen=True)
class WindowCounts:
    """One feature in one window: counts per frozen bin, moments of the finite values, non-finite count.

    Non-finite values (NaN, ±inf: a broken sensor, an overflowing model) are kept out of the
    bins and the moments and counted in ``nonfinite``, so they can be alerted on separately.
    """

    counts: np.ndarray
    moments: Moments = field(default_factory=Moments)
    nonfinite: int = 0

    def __post_init__(self) -> None:
        # Cheap on purpose: the agent builds these per request. ``from_dict`` validates foreign data.
        if not (isinstance(self.counts, np.ndarray) and self.counts.dtype == np.int64):
            object.__setattr__(self, "counts", np.asarray(self.counts, dtype=np.int64))
        if self.counts.ndim != 1:
            raise ValueError("window counts must be a 1-D array")

    @classmethod
    def empty(cls, n_bins: int) -> WindowCounts:
        return cls(counts=np.zeros(n_bins, dtype=np.int64))

    @classmethod
    def of(cls, edges: np.ndarray, values: np.ndarray) -> WindowCounts:
        """Count ``values`` into the bins of ``edges``."""
        flat = np.asarray(values, dtype=np.float64).reshape(1, -1)
        return count_rows([np.asarray(edges, dtype=np.float64)[1:-1]], flat)[0]

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def merge(self, other: WindowCounts) -> WindowCounts:
        if self.counts.shape != other.counts.shape:
            raise ValueError(
                f"cannot merge windows counted into {self.counts.size} and {other.counts.size} bins"
            )
        return WindowCounts(
            counts=self.counts + other.counts,
            moments=self.moments.merge(other.moments),
            nonfinite=self.nonfinite + other.nonfinite,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": [int(c) for c in self.counts],
            "nonfinite": self.nonfinite,
            **self.moments.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowCounts:
        counts = np.asarray(data["counts"], dtype=np.int64)
        if counts.ndim != 1 or np.any(counts < 0):
            raise ValueError("window counts must be a list of non-negative integers")
        return cls(
            counts=counts,
            moments=Moments.from_dict(dict(data)),
            nonfinite=int(data.get("nonfinite", 0)),
        )


@dataclass(frozen=True)
class DriftWindow:
    """Every feature's counts over one window, tied to the reference they were counted against.

    ``start``/``end`` are optional Unix timestamps; merging keeps the earliest start and the
    latest end.
    """

    reference: str
    features: dict[str, WindowCounts] = field(default_factory=dict)
    samples: int = 0
    start: float | None = None
    end: float | None = None

    @classmethod
    def empty(cls, reference: ReferenceStats) -> DriftWindow:
        return cls(
            reference=reference.fingerprint(),
            features={name: WindowCounts.empty(f.n_bins) for name, f in reference.features.items()},
        )

    def merge(self, other: DriftWindow) -> DriftWindow:
        if self.reference != other.reference:
            raise ValueError(
                f"cannot merge windows counted against different references "
                f"({self.reference} and {other.reference}): they come from different bundles"
            )
        features = dict(self.features)
        for name, counts in other.features.items():
            features[name] = features[name].merge(counts) if name in features else counts
        return DriftWindow(
            reference=self.reference,
            features=features,
            samples=self.samples + other.samples,
            start=_pick(min, self.start, other.start),
            end=_pick(max, self.end, other.end),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": STATS_SCHEMA_VERSION,
            "reference": self.reference,
            "samples": self.samples,
            "start": self.start,
            "end": self.end,
            "features": {name: counts.to_dict() for name, counts in self.features.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftWindow:
        version = data.get("schema_version")
        if version != STATS_SCHEMA_VERSION:
            raise ValueError(
                f"drift window schema {version!r} is not supported (expected {STATS_SCHEMA_VERSION})"
            )
        return cls(
            reference=str(data["reference"]),
            features={name: WindowCounts.from_dict(item) for name, item in data["features"].items()},
            samples=int(data["samples"]),
            start=None if data.get("start") is None else float(data["start"]),
            end=None if data.get("end") is None else float(data["end"]),
        )


def count_window(
    reference: ReferenceStats,
    inputs: Mapping[str, np.ndarray] | None = None,
    outputs: Mapping[str, np.ndarray] | None = None,
    *,
    start: float | None = None,
    end: float | None = None,
) -> DriftWindow:
    """Count one batch of traffic into the reference's bins.

    Tensors the reference does not know are ignored; features of tensors not given are left out
    of the window (merging with a fuller window keeps them). A tensor without a batch axis (a
    scalar sample rate) is counted once for each sample of the call, which all share its value.
    """
    given = {**(inputs or {}), **(outputs or {})}
    features: dict[str, WindowCounts] = {}
    samples = request_samples(reference, given)
    for tensor in reference.tensors:
        if tensor.name not in given:
            continue
        extracted = tensor.extract(np.asarray(given[tensor.name]), reference.seed)
        names = [name for name in extracted if name in reference.features]
        if not names:
            continue
        # One (features × samples) matrix per tensor: a few numpy calls in all, not a few per feature.
        values = np.stack([np.asarray(extracted[name].values, dtype=np.float64) for name in names])
        if tensor.batch_axis is None and samples > 1:
            # A scalar is shared by every sample of the call; the reference counted it per sample too.
            values = np.repeat(values, samples, axis=1)
        interiors = [reference.features[name].edges[1:-1] for name in names]
        features.update(zip(names, count_rows(interiors, values), strict=True))
    return DriftWindow(
        reference=reference.fingerprint(), features=features, samples=samples, start=start, end=end
    )


def request_samples(reference: ReferenceStats, given: Mapping[str, np.ndarray]) -> int:
    """Samples in one call: the largest count along a batch axis (1 when only tensors without
    one are given, 0 when none the reference knows)."""
    known = [tensor for tensor in reference.tensors if tensor.name in given]
    batched = [tensor.samples(given[tensor.name]) for tensor in known if tensor.batch_axis is not None]
    return max(batched, default=1 if known else 0)


def count_rows(interiors: Sequence[np.ndarray], values: np.ndarray) -> list[WindowCounts]:
    """Count row ``f`` of ``values`` (features × samples) into the bins with interior edges ``interiors[f]``.

    Vectorised over the rows: one ``searchsorted`` per row, one ``bincount`` for all of them, and
    the moments of every row at once. Non-finite values are left out of bins and moments.
    """
    n_rows, n_samples = values.shape
    n_bins = np.array([len(interior) + 1 for interior in interiors], dtype=np.int64)
    if n_samples == 0:
        return [WindowCounts.empty(int(k)) for k in n_bins]
    offsets = np.concatenate([[0], np.cumsum(n_bins)[:-1]])
    index = np.empty((n_rows, n_samples), dtype=np.int64)
    for row, interior in enumerate(interiors):
        index[row] = np.searchsorted(interior, values[row], side="right")
    index += offsets[:, None]
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    flat = index.ravel() if all_finite else index[finite]
    counts = np.bincount(flat, minlength=int(n_bins.sum()))
    if all_finite:
        n = np.full(n_rows, n_samples, dtype=np.int64)
        means = values.mean(axis=1)
        m2 = np.square(values - means[:, None]).sum(axis=1)
        minima, maxima = values.min(axis=1), values.max(axis=1)
    else:
        n = finite.sum(axis=1)
        means = np.where(finite, values, 0.0).sum(axis=1) / np.maximum(n, 1)
        m2 = np.square(np.where(finite, values - means[:, None], 0.0)).sum(axis=1)
        minima = np.where(finite, values, np.inf).min(axis=1)
        maxima = np.where(finite, values, -np.inf).max(axis=1)
    # Plain Python numbers in one conversion each, rather than one numpy scalar per field.
    n_list, mean_list, m2_list = n.tolist(), means.tolist(), m2.tolist()
    min_list, max_list, bins, starts = minima.tolist(), maxima.tolist(), n_bins.tolist(), offsets.tolist()
    return [
        WindowCounts(
            counts=counts[starts[row] : starts[row] + bins[row]],
            moments=Moments(n_list[row], mean_list[row], m2_list[row], min_list[row], max_list[row])
            if n_list[row]
            else Moments(),
            nonfinite=n_samples - n_list[row],
        )
        for row in range(n_rows)
    ]


@overload
def merge(a: WindowCounts, b: WindowCounts) -> WindowCounts: ...
@overload
def merge(a: DriftWindow, b: DriftWindow) -> DriftWindow: ...
def merge(a: WindowCounts | DriftWindow, b: WindowCounts | DriftWindow) -> WindowCounts | DriftWindow:
    """Add two windows (or two features' counts): counts add, moments combine (Chan), in any order."""
    if isinstance(a, WindowCounts) and isinstance(b, WindowCounts):
        return a.merge(b)
    if isinstance(a, DriftWindow) and isinstance(b, DriftWindow):
        return a.merge(b)
    raise TypeError(f"cannot merge {type(a).__name__} with {type(b).__name__}")


def _pick(choose: Any, a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return float(choose(a, b))
