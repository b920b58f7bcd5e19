"""A cohort's figures from its telemetry: traffic, p95 from added histograms, output drift."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.rollouts.desired import birth_device, next_revision
from fleet.rollouts.figures import Traffic, output_drift, quantile
from models.stats import build_reference_stats, count_window, merge

BOUNDS = [1.0, 2.5, 5.0, 10.0]


def entry(requests: int, counts: list[int], errors: dict[str, int] | None = None) -> dict[str, object]:
    return {
        "model": "m",
        "version": "1",
        "requests": requests,
        "errors": errors or {},
        "latency": {"bucket_bounds_ms": BOUNDS, "bucket_counts": counts},
    }


def test_traffic_adds_requests_errors_and_histograms() -> None:
    traffic = Traffic()
    traffic.add("a", entry(100, [0, 90, 0, 0, 0], {"INTERNAL": 10}))
    traffic.add("b", entry(50, [0, 0, 0, 0, 50]))
    assert (traffic.devices, traffic.requests, traffic.errors) == ({"a", "b"}, 150, 10)
    assert traffic.counts == [0, 90, 0, 0, 50]
    assert traffic.p95_ms == pytest.approx(10.0)  # the overflow bucket reads as its lower bound


def test_client_mistakes_are_neither_requests_nor_errors() -> None:
    traffic = Traffic()
    traffic.add("a", entry(100, [0, 80, 0, 0, 0], {"INVALID_ARGUMENT": 15, "NOT_FOUND": 5}))
    assert (traffic.requests, traffic.errors) == (80, 0)


def test_histograms_with_other_bounds_are_left_out_not_mixed() -> None:
    traffic = Traffic()
    traffic.add("a", entry(10, [0, 10, 0, 0, 0]))
    other = entry(10, [10, 0, 0])
    other["latency"] = {"bucket_bounds_ms": [3.0, 7.0], "bucket_counts": [10, 0, 0]}
    traffic.add("b", other)
    assert traffic.skipped_histograms == 1 and traffic.counts == [0, 10, 0, 0, 0]
    assert Traffic().p95_ms is None


def test_quantiles_interpolate_inside_the_bucket() -> None:
    assert quantile(BOUNDS, [0, 100, 0, 0, 0], 0.5) == pytest.approx(1.75)
    assert quantile(BOUNDS, [100, 0, 0, 0, 0], 1.0) == pytest.approx(1.0)
    assert quantile(BOUNDS, [0, 0, 0, 0, 0], 0.95) is None
    with pytest.raises(ValueError, match="4 bounds need 5 counts"):
        quantile(BOUNDS, [1, 2], 0.5)


def test_output_drift_is_the_worst_output_feature_weighted_by_samples() -> None:
    rng = np.random.default_rng(0)
    reference_outputs = rng.normal(size=(2000, 4))
    reference = build_reference_stats(
        {"x": reference_outputs}, {"y": reference_outputs}, layouts={"x": "NC", "y": "NC"}
    )
    same = count_window(reference, {"x": rng.normal(size=(500, 4))}, {"y": rng.normal(size=(500, 4))})
    shifted_outputs = rng.normal(size=(500, 4)) + np.array([5.0, 0, 0, 0])
    shifted = count_window(reference, {"x": rng.normal(size=(500, 4))}, {"y": shifted_outputs})
    fingerprint = reference.fingerprint()
    quiet = output_drift({fingerprint: same}, {fingerprint: reference}, min_samples=100)
    loud = output_drift({fingerprint: shifted}, {fingerprint: reference}, min_samples=100)
    assert quiet.value is not None and loud.value is not None
    assert loud.value > quiet.value + 0.3
    assert set(loud.features) == {name for name, f in reference.features.items() if f.kind == "output"}
    assert loud.value == pytest.approx(max(loud.features.values()))
    both = output_drift({fingerprint: merge(same, shifted)}, {fingerprint: reference}, min_samples=100)
    assert quiet.value < (both.value or 0) < loud.value
    assert output_drift({fingerprint: same}, {fingerprint: reference}, min_samples=1000).value is None
    assert output_drift({fingerprint: same}, {}, min_samples=1).value is None


def test_revisions_grow_and_are_at_least_the_time() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, tzinfo=UTC)
    first = next_revision(None, now)
    assert first == int(now.timestamp() * 1000)
    assert next_revision(first, now) == first + 1
    assert next_revision(first + 10**9, now) == first + 10**9 + 1  # a clock that went back


@pytest.mark.parametrize(
    ("topic", "payload", "retained", "device"),
    [
        ("edgefleet/v1/lab/cam-1/status", b'{"online": true}', False, "cam-1"),
        ("edgefleet/v1/lab/cam-1/status", b'{"online": true}', True, None),  # the broker replaying
        ("edgefleet/v1/lab/cam-1/status", b'{"online": false}', False, None),  # a will or a goodbye
        ("edgefleet/v1/lab/cam-1/metrics", b'{"online": true}', False, None),
        ("edgefleet/v1/lab/cam-1/status", b"not json", False, None),
        ("elsewhere/cam-1/status", b'{"online": true}', False, None),
    ],
)
def test_a_birth_is_a_device_asking_for_its_desired_state(
    topic: str, payload: bytes, retained: bool, device: str | None
) -> None:
    assert birth_device(topic, payload, retained=retained) == device
