"""Latency quantiles from fixed buckets: where the estimate may land, and the edge cases."""

from __future__ import annotations

import bisect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.telemetry.histogram import (
    DEFAULT_BOUNDS_MS,
    LatencyHistogram,
    check_bounds,
    quantile_from_buckets,
)


def _bucket_span(bounds: tuple[float, ...], value: float, observed_max: float) -> tuple[float, float]:
    index = bisect.bisect_left(bounds, value)
    lower = 0.0 if index == 0 else bounds[index - 1]
    upper = bounds[index] if index < len(bounds) else observed_max
    return lower, upper


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0.01, max_value=20_000, allow_nan=False), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.95, 0.99]),
)
def test_estimate_lies_in_the_bucket_of_the_true_quantile(latencies: list[float], q: float) -> None:
    histogram = LatencyHistogram()
    for latency in latencies:
        histogram.record(latency)
    estimate = histogram.quantile(q)
    assert estimate is not None
    # The smallest value with at least q of the samples at or below it: what the rank lands on.
    true = float(np.quantile(np.asarray(latencies), q, method="inverted_cdf"))
    lower, upper = _bucket_span(DEFAULT_BOUNDS_MS, true, max(latencies))
    assert min(latencies) <= estimate <= max(latencies)
    assert lower - 1e-9 <= estimate <= upper + 1e-9


def test_identical_latencies_report_that_latency() -> None:
    histogram = LatencyHistogram()
    for _ in range(50):
        histogram.record(3.7)
    assert histogram.quantile(0.5) == pytest.approx(3.7)
    assert histogram.quantile(0.99) == pytest.approx(3.7)


def test_interpolates_linearly_inside_a_bucket() -> None:
    bounds = (10.0, 20.0)
    # 100 samples in (10, 20]: the median sits half way through that bucket.
    counts = [0, 100, 0]
    assert quantile_from_buckets(bounds, counts, 0.5) == pytest.approx(15.0)
    assert quantile_from_buckets(bounds, counts, 0.9) == pytest.approx(19.0)


def test_overflow_bucket_ends_at_the_observed_maximum() -> None:
    histogram = LatencyHistogram(bounds_ms=(1.0, 2.0))
    for latency in (50.0, 60.0, 70.0, 80.0):
        histogram.record(latency)
    p99 = histogram.quantile(0.99)
    assert p99 is not None
    assert 2.0 < p99 <= 80.0
    assert histogram.counts == [0, 0, 4]


def test_a_latency_on_a_bound_belongs_to_that_bound() -> None:
    histogram = LatencyHistogram(bounds_ms=(1.0, 2.0))
    histogram.record(1.0)
    histogram.record(2.0)
    assert histogram.counts == [1, 1, 0]


def test_empty_histogram_has_no_quantiles() -> None:
    summary = LatencyHistogram().summary()
    assert summary.p50_ms is None and summary.p95_ms is None and summary.p99_ms is None
    assert summary.bucket_counts == [0] * (len(DEFAULT_BOUNDS_MS) + 1)


def test_summary_carries_buckets_that_add_up() -> None:
    histogram = LatencyHistogram()
    for latency in (0.05, 0.3, 7.0, 7.5, 40_000.0):
        histogram.record(latency)
    summary = histogram.summary()
    assert sum(summary.bucket_counts) == 5
    assert summary.bucket_bounds_ms == list(DEFAULT_BOUNDS_MS)
    assert summary.p50_ms is not None and 5.0 <= summary.p50_ms <= 10.0


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (0.0, 1.0), (1.0, float("inf"))])
def test_bad_bounds_are_refused(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="bound"):
        check_bounds(bounds)


def test_quantile_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="within"):
        quantile_from_buckets((1.0,), [1, 0], 1.5)
    with pytest.raises(ValueError, match="counts"):
        quantile_from_buckets((1.0,), [1], 0.5)
