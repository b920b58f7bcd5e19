"""Drift analysis, pure parts: thresholds, cohorts, time ranges, adding windows, comparing, the webhook."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.drift.aggregate import add_windows
from fleet.drift.analysis import compare
from fleet.drift.cohort import Baseline, Cohort, CohortError, parse_baseline, parse_cohort
from fleet.drift.thresholds import DriftThresholds, Level, worst
from fleet.drift.timerange import TimeRangeError, parse_instant, resolve_range
from fleet.drift.webhook import WebhookNotifier
from fleet.metrics import ServerMetrics
from models.stats import DriftWindow, ReferenceStats, build_reference_stats, count_window, merge

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def reference() -> ReferenceStats:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 3))
    logits = rng.standard_normal((2000, 4)) + np.array([0.5, 0.0, 0.0, 0.0])
    return build_reference_stats({"x": x}, {"y": logits}, layouts={"x": "NC"})


def traffic(
    n: int, seed: int, *, shift: float = 0.0, classes: tuple[int, ...] | None = None
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    x[:, 0] += shift
    logits = rng.standard_normal((n, 4)) + np.array([0.5, 0.0, 0.0, 0.0])
    if classes is not None:
        logits[:, list(classes)] += 6.0
    return {"x": x, "y": logits}


def window(reference: ReferenceStats, data: dict[str, np.ndarray]) -> DriftWindow:
    return count_window(reference, {"x": data["x"]}, {"y": data["y"]})


# --- thresholds -----------------------------------------------------------------------------------


def test_thresholds_judge_each_metric_at_its_levels() -> None:
    thresholds = DriftThresholds()
    assert thresholds.judge({"psi": 0.05, "js": 0.05, "wasserstein": 9.0}) == (Level.OK, ())
    level, breaches = thresholds.judge({"psi": 0.12, "js": 0.05})
    assert level is Level.WARN and [(b.metric, b.threshold) for b in breaches] == [("psi", 0.1)]
    level, breaches = thresholds.judge({"psi": 0.3, "js": 0.31})
    assert level is Level.ALERT and {b.metric for b in breaches} == {"psi", "js"}
    strict = DriftThresholds(wasserstein_warn=0.5, wasserstein_alert=1.0)
    assert strict.judge({"wasserstein": 1.2})[0] is Level.ALERT


@pytest.mark.parametrize(
    "kwargs",
    [{"psi_warn": 0.3, "psi_alert": 0.2}, {"js_alert": 0.0}, {"min_samples": 0}, {"psi_warn": -1.0}],
)
def test_thresholds_that_make_no_sense_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DriftThresholds(**kwargs)


def test_sample_minimums_apply_to_both_sides() -> None:
    thresholds = DriftThresholds(min_samples=100, min_reference_samples=50)
    assert thresholds.enough(100, 50, baseline_is_reference=True)
    assert not thresholds.enough(99, 5000, baseline_is_reference=True)
    assert not thresholds.enough(100, 49, baseline_is_reference=True)
    assert not thresholds.enough(100, 99, baseline_is_reference=False)


def test_worst_level_ignores_insufficient_unless_alone() -> None:
    assert worst([Level.INSUFFICIENT, Level.OK]) is Level.OK
    assert worst([Level.WARN, Level.ALERT, Level.OK]) is Level.ALERT
    assert worst([Level.INSUFFICIENT]) is Level.INSUFFICIENT


# --- cohorts and time ranges -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cohort"),
    [
        (None, Cohort()),
        ("all", Cohort()),
        ("tag:site=lab", Cohort("tag", "site", "lab")),
        ("tag:zone=a=b", Cohort("tag", "zone", "a=b")),
        ("profile:raspberry-pi-5", Cohort("profile", None, "raspberry-pi-5")),
        ("device:cam-01", Cohort("device", None, "cam-01")),
    ],
)
def test_cohorts_parse_and_print_back(text: str | None, cohort: Cohort) -> None:
    parsed = parse_cohort(text)
    assert parsed == cohort
    assert parse_cohort(str(parsed)) == parsed


@pytest.mark.parametrize("text", ["site=lab", "tag:site", "region:eu", "device:a/b", "tag:=x", "profile:"])
def test_bad_cohorts_say_how_to_write_one(text: str) -> None:
    with pytest.raises(CohortError):
        parse_cohort(text)


def test_baselines() -> None:
    assert parse_baseline(None) == Baseline() and parse_baseline("reference").is_reference
    other = parse_baseline("cohort:tag:site=hq")
    assert other.cohort == Cohort("tag", "site", "hq") and str(other) == "cohort:tag:site=hq"
    with pytest.raises(CohortError):
        parse_baseline("tag:site=hq")


def test_time_ranges() -> None:
    assert parse_instant("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_instant("2d", NOW) == NOW - timedelta(days=2)
    assert parse_instant("2025-02-01T00:00:00", NOW) == datetime(2025, 2, 1, tzinfo=UTC)
    assert parse_instant("2025-02-01T01:00:00+01:00", NOW) == datetime(2025, 2, 1, tzinfo=UTC)
    assert parse_instant("2025-02-01T00:00:00Z", NOW) == datetime(2025, 2, 1, tzinfo=UTC)
    assert resolve_range(None, None, NOW) == (NOW - timedelta(hours=24), NOW)
    with pytest.raises(TimeRangeError):
        parse_instant("yesterday", NOW)
    with pytest.raises(TimeRangeError):
        resolve_range("1h", "2h", NOW)


# --- adding windows --------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 60), st.integers(0, 10_000), st.floats(-3, 3)), min_size=1, max_size=12)
)
def test_adding_windows_equals_merging_them_one_by_one(
    reference: ReferenceStats, parts: list[tuple[int, int, float]]
) -> None:
    windows = [window(reference, traffic(n, seed, shift=shift)) for n, seed, shift in parts]
    expected = functools.reduce(merge, windows)
    added = add_windows(w.to_dict() for w in windows)
    assert added.samples == expected.samples
    for name, counts in expected.features.items():
        got = added.features[name]
        assert np.array_equal(got.counts, counts.counts)
        assert got.moments.count == counts.moments.count
        if counts.moments.count:
            assert got.moments.mean == pytest.approx(counts.moments.mean, rel=1e-9, abs=1e-12)
            assert got.moments.variance == pytest.approx(counts.moments.variance, rel=1e-9, abs=1e-12)
            assert (got.moments.minimum, got.moments.maximum) == (
                counts.moments.minimum,
                counts.moments.maximum,
            )


def test_windows_of_different_references_are_not_added(reference: ReferenceStats) -> None:
    a = window(reference, traffic(10, 0)).to_dict()
    b = dict(a, reference="somethingelse")
    with pytest.raises(ValueError, match="different references"):
        add_windows([a, b])


# --- comparing ------------------------------------------------------------------------------------


def numpy_psi(
    edges: np.ndarray, reference_values: np.ndarray, values: np.ndarray, eps: float = 1e-4
) -> float:
    """PSI as written in the docs, from raw values, with numpy only."""
    interior = edges[1:-1]
    k = len(interior) + 1
    p = np.bincount(np.digitize(reference_values, interior), minlength=k) / len(reference_values)
    q = np.bincount(np.digitize(values, interior), minlength=k) / len(values)
    p, q = (p + eps) / (1 + k * eps), (q + eps) / (1 + k * eps)
    return float(np.sum((q - p) * np.log(q / p)))


def test_same_distribution_is_ok_and_shifts_alert_on_their_own_features(reference: ReferenceStats) -> None:
    thresholds = DriftThresholds()
    same = {f.feature: f for f in compare(window(reference, traffic(3000, 7)), reference, thresholds)}
    assert all(f.level in (Level.OK, Level.WARN) for f in same.values()), same
    assert all(f.psi is not None and f.psi < 0.1 for f in same.values())

    shifted = {
        f.feature: f for f in compare(window(reference, traffic(3000, 8, shift=1.5)), reference, thresholds)
    }
    assert shifted["x/col[0]"].level is Level.ALERT
    assert shifted["x/col[1]"].level is not Level.ALERT and shifted["y/class"].level is not Level.ALERT

    sliced = {
        f.feature: f
        for f in compare(window(reference, traffic(3000, 9, classes=(2,))), reference, thresholds)
    }
    assert sliced["y/class"].level is Level.ALERT
    assert sliced["x/col[0]"].level is not Level.ALERT


def test_psi_matches_an_independent_numpy_computation(reference: ReferenceStats) -> None:
    rng = np.random.default_rng(1)
    x_ref = rng.standard_normal((2000, 3))  # the very data the fixture froze its bins from
    data = traffic(2500, 11, shift=0.4)
    result = {f.feature: f for f in compare(window(reference, data), reference, DriftThresholds())}
    edges = reference.features["x/col[0]"].edges
    assert result["x/col[0]"].psi == pytest.approx(numpy_psi(edges, x_ref[:, 0], data["x"][:, 0]), abs=1e-6)


def test_too_few_samples_are_not_judged(reference: ReferenceStats) -> None:
    result = compare(
        window(reference, traffic(50, 3, shift=3.0)), reference, DriftThresholds(min_samples=100)
    )
    assert {f.level for f in result} == {Level.INSUFFICIENT}
    assert all(f.psi is None and f.samples == 50 for f in result)


def test_cohort_against_cohort(reference: ReferenceStats) -> None:
    thresholds = DriftThresholds()
    a = window(reference, traffic(3000, 21))
    b = window(reference, traffic(3000, 22, shift=2.0))
    result = {f.feature: f for f in compare(a, reference, thresholds, baseline=b)}
    assert result["x/col[0]"].level is Level.ALERT and result["x/col[0]"].baseline_samples == 3000
    assert result["x/col[2]"].level is not Level.ALERT
    empty = compare(a, reference, thresholds, baseline=DriftWindow(reference=a.reference))
    assert {f.level for f in empty} == {Level.INSUFFICIENT}


# --- the webhook ----------------------------------------------------------------------------------


def notifier(
    handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any
) -> tuple[WebhookNotifier, list[float], ServerMetrics]:
    metrics = ServerMetrics()
    slept: list[float] = []

    def sleep(seconds: float) -> bool:
        slept.append(seconds)
        return False

    hook = WebhookNotifier(
        "http://hooks.invalid/edgefleet",
        metrics.drift,
        transport=httpx.MockTransport(handler),
        sleep=sleep,
        **kwargs,
    )
    return hook, slept, metrics


def delivered(metrics: ServerMetrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "edgefleet_drift_webhook_deliveries_total", {"outcome": outcome}
    )
    return value or 0.0


def test_webhook_retries_server_errors_with_backoff_then_delivers() -> None:
    seen: list[dict[str, object]] = []
    answers = iter([503, 500, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(next(answers))

    hook, slept, metrics = notifier(handler, attempts=5)
    assert hook.deliver({"event": "drift.alert.opened", "alert": {"id": 1}})
    assert len(seen) == 3 and seen[0]["event"] == "drift.alert.opened"
    assert slept == [1.0, 2.0]
    assert (delivered(metrics, "retried"), delivered(metrics, "delivered")) == (2.0, 1.0)


def test_webhook_gives_up_on_a_refusal_and_after_its_attempts() -> None:
    hook, slept, metrics = notifier(lambda request: httpx.Response(400))
    assert not hook.deliver({"event": "x"}) and slept == []

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    hook, slept, metrics = notifier(unreachable, attempts=3)
    assert not hook.deliver({"event": "x"})
    assert slept == [1.0, 2.0] and delivered(metrics, "failed") == 1.0


def test_webhook_notify_never_blocks() -> None:
    hook, _, metrics = notifier(lambda request: httpx.Response(200), queue_size=1)
    assert hook.notify({"event": "a"})  # the thread is not started: the queue fills
    assert not hook.notify({"event": "b"})
    assert delivered(metrics, "dropped") == 1.0
