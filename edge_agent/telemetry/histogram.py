"""Latency quantiles from a fixed-bucket histogram: constant memory, O(log buckets) per request.

Every device counts into the same bucket bounds, so the fleet can add histograms from many
devices (or many windows) and estimate fleet-wide quantiles from the sums, which it could never
do with per-device quantiles. ``counts`` has one more entry than ``bounds_ms``: the last bucket
holds everything above the largest bound.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence

from models.mqtt_contract import LatencySummary

# Roughly 1-2.5-5 per decade, from 0.1 ms (a small MLP on a desktop CPU) to 10 s (a big model
# on a Pi Zero): 16 bounds, so a window's histogram costs 17 integers on the wire.
DEFAULT_BOUNDS_MS: tuple[float, ...] = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
)


def check_bounds(bounds_ms: Sequence[float]) -> tuple[float, ...]:
    bounds = tuple(float(b) for b in bounds_ms)
    if not bounds:
        raise ValueError("a latency histogram needs at least one bucket bound")
    if any(not math.isfinite(b) or b <= 0 for b in bounds):
        raise ValueError(f"bucket bounds must be finite and positive, got {list(bounds)}")
    if any(b >= c for b, c in itertools.pairwise(bounds)):
        raise ValueError(f"bucket bounds must be strictly increasing, got {list(bounds)}")
    return bounds


def quantile_from_buckets(
    bounds_ms: Sequence[float],
    counts: Sequence[int],
    q: float,
    *,
    observed_min: float | None = None,
    observed_max: float | None = None,
) -> float | None:
    """Estimate the ``q`` quantile (0..1) by linear interpolation inside the bucket that holds it.

    Bucket ``i`` spans ``(bounds[i-1], bounds[i]]`` (the first starts at 0; the overflow bucket
    ends at ``observed_max``, or at the last bound when that is unknown). The estimate is clamped
    to the observed range when it is given, so a window of identical latencies reports that latency.
    ``None`` for an empty histogram.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    if len(counts) != len(bounds_ms) + 1:
        raise ValueError(f"{len(bounds_ms)} bounds need {len(bounds_ms) + 1} counts, got {len(counts)}")
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    for index, count in enumerate(counts):
        if count == 0 or cumulative + count < rank:
            cumulative += count
            continue
        lower = 0.0 if index == 0 else float(bounds_ms[index - 1])
        if index < len(bounds_ms):
            upper = float(bounds_ms[index])
        else:
            upper = max(lower, observed_max) if observed_max is not None else lower
        estimate = lower + (upper - lower) * max(0.0, rank - cumulative) / count
        break
    else:  # pragma: no cover - rank <= total always lands in some bucket
        estimate = float(bounds_ms[-1])
    if observed_min is not None:
        estimate = max(estimate, observed_min)
    if observed_max is not None:
        estimate = min(estimate, observed_max)
    return estimate


class LatencyHistogram:
    """Counts of latencies (milliseconds) per fixed bucket, with the observed min and max.

    Not thread-safe: the metrics collector holds its lock around ``record``.
    """

    __slots__ = ("bounds_ms", "counts", "maximum", "minimum")

    def __init__(self, bounds_ms: Sequence[float] = DEFAULT_BOUNDS_MS) -> None:
        self.bounds_ms = bounds_ms if isinstance(bounds_ms, tuple) else check_bounds(bounds_ms)
        self.counts = [0] * (len(self.bounds_ms) + 1)
        self.minimum = math.inf
        self.maximum = -math.inf

    def record(self, latency_ms: float) -> None:
        # bisect_left: a latency equal to a bound belongs to that bound's bucket (upper-inclusive).
        self.counts[bisect.bisect_left(self.bounds_ms, latency_ms)] += 1
        if latency_ms < self.minimum:
            self.minimum = latency_ms
        if latency_ms > self.maximum:
            self.maximum = latency_ms

    @property
    def total(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        empty = self.total == 0
        return quantile_from_buckets(
            self.bounds_ms,
            self.counts,
            q,
            observed_min=None if empty else self.minimum,
            observed_max=None if empty else self.maximum,
        )

    def summary(self) -> LatencySummary:
        """The wire form: p50/p95/p99 and the buckets themselves (so the fleet can add them up)."""
        return LatencySummary(
            p50_ms=_rounded(self.quantile(0.50)),
            p95_ms=_rounded(self.quantile(0.95)),
            p99_ms=_rounded(self.quantile(0.99)),
            bucket_bounds_ms=list(self.bounds_ms),
            bucket_counts=list(self.counts),
        )


def _rounded(value: float | None) -> float | None:
    # Microsecond resolution is plenty and keeps the payload short.
    return None if value is None else round(value, 3)
