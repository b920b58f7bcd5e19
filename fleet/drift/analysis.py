"""Comparing a cohort's merged window with a baseline, feature by feature, and judging it. Pure.

The baseline is the bundle's reference (its frozen counts) or another cohort's merged window,
counted into the same bins. Distances come from ``models.stats``: PSI, the Jensen-Shannon
distance and the normalised Wasserstein distance over the reference's bin edges. A feature is
judged only when both sides hold enough samples (``DriftThresholds.enough``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from fleet.drift.thresholds import Breach, DriftThresholds, Level, worst
from models.stats import (
    DriftWindow,
    FeatureReference,
    Moments,
    ReferenceStats,
    jensen_shannon,
    psi,
    wasserstein_normalised,
)


@dataclass(frozen=True)
class FeatureComparison:
    feature: str
    tensor: str
    kind: str  # input or output
    samples: int
    baseline_samples: int
    psi: float | None
    js: float | None
    wasserstein: float | None
    level: Level
    breaches: tuple[Breach, ...] = ()
    nonfinite: int = 0
    mean: float | None = None
    std: float | None = None
    baseline_mean: float | None = None
    baseline_std: float | None = None

    def scores(self) -> dict[str, float]:
        values = {"psi": self.psi, "js": self.js, "wasserstein": self.wasserstein}
        return {metric: value for metric, value in values.items() if value is not None}


def compare(
    current: DriftWindow,
    reference: ReferenceStats,
    thresholds: DriftThresholds,
    *,
    baseline: DriftWindow | None = None,
) -> list[FeatureComparison]:
    """Every feature of ``reference``: ``current`` against the reference, or against ``baseline``."""
    results = []
    for name, feature in reference.features.items():
        counts = current.features.get(name)
        if baseline is None:
            base_counts, base_moments = feature.counts, feature.moments
        else:
            other = baseline.features.get(name)
            base_counts = other.counts if other is not None else np.zeros(feature.n_bins, dtype=np.int64)
            base_moments = other.moments if other is not None else Moments()
        cur_counts = counts.counts if counts is not None else np.zeros(feature.n_bins, dtype=np.int64)
        results.append(
            _compare_feature(
                feature,
                cur_counts,
                counts.moments if counts is not None else Moments(),
                counts.nonfinite if counts is not None else 0,
                base_counts,
                base_moments,
                thresholds,
                baseline_is_reference=baseline is None,
            )
        )
    return results


def _compare_feature(
    feature: FeatureReference,
    cur_counts: np.ndarray,
    cur_moments: Moments,
    nonfinite: int,
    base_counts: np.ndarray,
    base_moments: Moments,
    thresholds: DriftThresholds,
    *,
    baseline_is_reference: bool,
) -> FeatureComparison:
    samples, baseline_samples = int(cur_counts.sum()), int(np.asarray(base_counts).sum())
    common: dict[str, Any] = {
        "feature": feature.name,
        "tensor": feature.tensor,
        "kind": feature.kind,
        "samples": samples,
        "baseline_samples": baseline_samples,
        "nonfinite": nonfinite,
        "mean": cur_moments.mean if cur_moments.count else None,
        "std": cur_moments.std if cur_moments.count else None,
        "baseline_mean": base_moments.mean if base_moments.count else None,
        "baseline_std": base_moments.std if base_moments.count else None,
    }
    if cur_counts.shape != np.asarray(base_counts).shape or not thresholds.enough(
        samples, baseline_samples, baseline_is_reference=baseline_is_reference
    ):
        return FeatureComparison(**common, psi=None, js=None, wasserstein=None, level=Level.INSUFFICIENT)
    values = {
        "psi": psi(base_counts, cur_counts),
        "js": jensen_shannon(base_counts, cur_counts),
        "wasserstein": wasserstein_normalised(feature.edges, base_counts, cur_counts),
    }
    level, breaches = thresholds.judge(values)
    return FeatureComparison(
        **common,
        psi=values["psi"],
        js=values["js"],
        wasserstein=values["wasserstein"],
        level=level,
        breaches=breaches,
    )


@dataclass(frozen=True)
class DriftReport:
    """One model version, one cohort, one baseline, one time range: a comparison per feature."""

    model: str
    version: str
    cohort: str
    against: str
    reference: str  # the fingerprint of the bins the windows were counted into
    since: datetime
    until: datetime
    devices: int
    windows: int
    samples: int
    baseline_devices: int | None
    baseline_windows: int | None
    baseline_samples: int
    features: tuple[FeatureComparison, ...] = ()
    note: str | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)

    @property
    def level(self) -> Level:
        return worst([f.level for f in self.features])

    def alerting(self) -> list[FeatureComparison]:
        return [f for f in self.features if f.level is Level.ALERT]
