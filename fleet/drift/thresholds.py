"""When a drift distance is a warning, an alert, or too thin to judge. Pure, and light (no numpy).

Defaults follow BRIEF.md §5 and the usual reading of PSI: below 0.1 stable, 0.1 to 0.25 a
moderate shift (warn), above 0.25 a major one (alert). The Jensen-Shannon *distance* (what
``models.stats.jensen_shannon`` returns, in [0, 1]) warns at 0.1 and alerts at 0.3: with a
reference of a few hundred samples (the converter freezes bins from the calibration set, 200
rows for the digits models), data from the very same distribution already lands at JS 0.09 to
0.15, so alerting at 0.1 would cry wolf; PSI and JS agree on real shifts (see docs/drift.md).
The normalised Wasserstein distance is reported, and judged only when given thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    """Ordered: ``ok`` < ``warn`` < ``alert``; ``insufficient`` means too few samples to judge."""

    INSUFFICIENT = "insufficient"
    OK = "ok"
    WARN = "warn"
    ALERT = "alert"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {Level.INSUFFICIENT: -1, Level.OK: 0, Level.WARN: 1, Level.ALERT: 2}

METRICS = ("psi", "js", "wasserstein")


def worst(levels: list[Level] | tuple[Level, ...]) -> Level:
    """The most severe level; ``insufficient`` only when nothing else was judged."""
    judged = [level for level in levels if level is not Level.INSUFFICIENT]
    if not judged:
        return Level.INSUFFICIENT
    return max(judged, key=lambda level: level.rank)


@dataclass(frozen=True)
class Breach:
    """One distance at or above one of its thresholds."""

    metric: str
    value: float
    threshold: float
    level: Level


@dataclass(frozen=True)
class DriftThresholds:
    """Per-metric warn and alert levels (``None``: that metric never reaches that level) and the
    sample minimums below which nothing is judged."""

    psi_warn: float | None = 0.1
    psi_alert: float | None = 0.25
    js_warn: float | None = 0.1
    js_alert: float | None = 0.3
    wasserstein_warn: float | None = None
    wasserstein_alert: float | None = None
    min_samples: int = 500
    min_reference_samples: int = 100

    def __post_init__(self) -> None:
        for metric in METRICS:
            warn, alert = self.levels(metric)
            for value in (warn, alert):
                if value is not None and not value > 0:
                    raise ValueError(f"drift thresholds must be positive, got {metric} {value}")
            if warn is not None and alert is not None and warn > alert:
                raise ValueError(f"the {metric} warn threshold {warn} is above its alert threshold {alert}")
        if self.min_samples < 1 or self.min_reference_samples < 1:
            raise ValueError("the minimum sample counts must be at least 1")

    def levels(self, metric: str) -> tuple[float | None, float | None]:
        if metric not in METRICS:
            raise ValueError(f"unknown drift metric {metric!r}; known: {', '.join(METRICS)}")
        return getattr(self, f"{metric}_warn"), getattr(self, f"{metric}_alert")

    def enough(self, samples: int, baseline_samples: int, *, baseline_is_reference: bool) -> bool:
        needed = self.min_reference_samples if baseline_is_reference else self.min_samples
        return samples >= self.min_samples and baseline_samples >= needed

    def judge(self, values: dict[str, float]) -> tuple[Level, tuple[Breach, ...]]:
        """The level of one feature from its distances, and every threshold they reach."""
        breaches: list[Breach] = []
        for metric, value in values.items():
            warn, alert = self.levels(metric)
            if alert is not None and value >= alert:
                breaches.append(Breach(metric, value, alert, Level.ALERT))
            elif warn is not None and value >= warn:
                breaches.append(Breach(metric, value, warn, Level.WARN))
        level = worst([Level.OK, *(b.level for b in breaches)])
        return level, tuple(breaches)

    def describe(self) -> dict[str, float | int | None]:
        return {
            "psi_warn": self.psi_warn,
            "psi_alert": self.psi_alert,
            "js_warn": self.js_warn,
            "js_alert": self.js_alert,
            "wasserstein_warn": self.wasserstein_warn,
            "wasserstein_alert": self.wasserstein_alert,
            "min_samples": self.min_samples,
            "min_reference_samples": self.min_reference_samples,
        }
