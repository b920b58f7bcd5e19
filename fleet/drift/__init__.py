"""Drift analysis: merge devices' windows per model version and cohort, compare, alert.

- ``thresholds`` (pure, light): warn and alert levels per metric, sample minimums;
- ``cohort``, ``timerange`` (pure): ``all``, ``tag:K=V``, ``profile:P``, ``device:ID``; time ranges;
- ``aggregate`` (pure): many stored windows added into one per reference;
- ``analysis`` (pure): PSI, Jensen-Shannon and Wasserstein per feature, judged;
- ``references``: the bundle's frozen reference statistics, read from the stored bundle once;
- ``query``: windows out of the database by model version, cohort and time range;
- ``alerts``, ``webhook``, ``monitor``, ``service``: alerts in the database, the audit log, a
  webhook and /metrics, evaluated periodically and when new windows arrive.

Names are imported lazily: ``fleet.config`` imports ``fleet.drift.thresholds`` without numpy.
See docs/drift.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleet.drift.aggregate import add_windows
    from fleet.drift.analysis import DriftReport, FeatureComparison, compare
    from fleet.drift.cohort import Baseline, Cohort, parse_baseline, parse_cohort
    from fleet.drift.service import DriftService
    from fleet.drift.thresholds import Breach, DriftThresholds, Level
    from fleet.drift.timerange import parse_instant, resolve_range

_EXPORTS = {
    "add_windows": "fleet.drift.aggregate",
    "DriftReport": "fleet.drift.analysis",
    "FeatureComparison": "fleet.drift.analysis",
    "compare": "fleet.drift.analysis",
    "Baseline": "fleet.drift.cohort",
    "Cohort": "fleet.drift.cohort",
    "parse_baseline": "fleet.drift.cohort",
    "parse_cohort": "fleet.drift.cohort",
    "DriftService": "fleet.drift.service",
    "Breach": "fleet.drift.thresholds",
    "DriftThresholds": "fleet.drift.thresholds",
    "Level": "fleet.drift.thresholds",
    "parse_instant": "fleet.drift.timerange",
    "resolve_range": "fleet.drift.timerange",
}

__all__ = [
    "Baseline",
    "Breach",
    "Cohort",
    "DriftReport",
    "DriftService",
    "DriftThresholds",
    "FeatureComparison",
    "Level",
    "add_windows",
    "compare",
    "parse_baseline",
    "parse_cohort",
    "parse_instant",
    "resolve_range",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fleet.drift' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
