"""The watch window's verdict (pure) and the observer that feeds it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.ota import WatchObserver, WatchPolicy, WindowStats, judge
from edge_agent.ota.watch import p95

POLICY = WatchPolicy(window_s=10.0, min_requests=20, max_error_rate_increase=0.05, max_latency_ratio=2.0)


def _stats(requests: int, errors: int = 0, latency_ms: float = 1.0) -> WindowStats:
    return WindowStats(requests, errors, tuple([latency_ms / 1000] * (requests - errors)))


def test_the_window_continues_until_its_time_is_up() -> None:
    assert judge(_stats(50), _stats(50), POLICY, elapsed_s=5.0).decision == "continue"
    assert judge(_stats(50), _stats(50), POLICY, elapsed_s=10.0).decision == "commit"


def test_a_device_without_traffic_commits_when_the_window_ends() -> None:
    verdict = judge(WindowStats(), None, POLICY, elapsed_s=10.0)
    assert verdict.decision == "commit"
    assert verdict.figures["window"]["requests"] == 0


def test_enough_requests_close_the_window_early_when_asked() -> None:
    early = WatchPolicy(window_s=10.0, window_requests=30)
    assert judge(_stats(29), _stats(50), early, elapsed_s=1.0).decision == "continue"
    assert judge(_stats(30), _stats(50), early, elapsed_s=1.0).decision == "commit"


def test_a_high_error_rate_rolls_back_at_once() -> None:
    verdict = judge(_stats(40, errors=10), _stats(100), POLICY, elapsed_s=1.0)
    assert verdict.decision == "roll_back"
    assert "error rate 25.0% over 40 requests (0.0% before; allowed 5.0%)" in verdict.reason


def test_errors_are_judged_only_with_enough_requests() -> None:
    assert judge(_stats(19, errors=19), _stats(100), POLICY, elapsed_s=1.0).decision == "continue"


def test_the_baselines_own_error_rate_is_allowed() -> None:
    assert judge(_stats(100, errors=12), _stats(100, errors=10), POLICY, elapsed_s=10.0).decision == "commit"
    assert (
        judge(_stats(100, errors=16), _stats(100, errors=10), POLICY, elapsed_s=10.0).decision == "roll_back"
    )


def test_a_slow_new_version_rolls_back_at_the_end_of_the_window() -> None:
    slow, fast = _stats(50, latency_ms=5.0), _stats(50, latency_ms=1.0)
    assert judge(slow, fast, POLICY, elapsed_s=3.0).decision == "continue"
    verdict = judge(slow, fast, POLICY, elapsed_s=10.0)
    assert verdict.decision == "roll_back"
    assert "5.0x the previous version's" in verdict.reason
    assert verdict.figures["p95_ratio"] == 5.0


def test_latency_is_not_judged_on_too_few_samples() -> None:
    slow = _stats(10, latency_ms=50.0)
    assert judge(slow, _stats(50), POLICY, elapsed_s=10.0).decision == "commit"
    assert judge(_stats(50, latency_ms=50.0), _stats(10), POLICY, elapsed_s=10.0).decision == "commit"
    assert judge(_stats(50, latency_ms=50.0), None, POLICY, elapsed_s=10.0).decision == "commit"


@given(
    requests=st.integers(min_value=0, max_value=500),
    baseline_ms=st.floats(min_value=0.01, max_value=100.0),
    speedup=st.floats(min_value=1.0, max_value=10.0),
    elapsed=st.floats(min_value=0.0, max_value=30.0),
)
def test_an_error_free_version_no_slower_than_before_is_never_rolled_back(
    requests: int, baseline_ms: float, speedup: float, elapsed: float
) -> None:
    verdict = judge(
        _stats(requests, latency_ms=baseline_ms / speedup),
        _stats(100, latency_ms=baseline_ms),
        POLICY,
        elapsed_s=elapsed,
    )
    assert verdict.decision != "roll_back"


def test_p95_is_an_observed_value_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert p95(values) == 95.0
    assert p95([3.0]) == 3.0
    assert p95([]) is None


def _observe(observer: WatchObserver, version: str, status: str, latency_s: float = 0.001) -> None:
    observer.on_inference("m", version, {}, None if status != "OK" else {}, status, latency_s, 0.0, 1)


def test_the_observer_counts_model_faults_but_not_client_faults() -> None:
    observer = WatchObserver()
    for status in ("OK", "OK", "INTERNAL", "INVALID_ARGUMENT", "NOT_FOUND"):
        _observe(observer, "1.0.0", status)
    recent = observer.recent("m", "1.0.0")
    assert (recent.requests, recent.errors, len(recent.latencies_s)) == (3, 1, 2)


def test_a_watch_window_counts_only_what_came_after_it_began() -> None:
    observer = WatchObserver()
    _observe(observer, "2.0.0", "INTERNAL")
    observer.begin("m", "2.0.0")
    _observe(observer, "2.0.0", "OK", 0.004)
    _observe(observer, "1.0.0", "OK")
    window = observer.window("m", "2.0.0")
    assert (window.requests, window.errors, window.latencies_s) == (1, 0, (0.004,))
    observer.end("m", "2.0.0")
    assert observer.window("m", "2.0.0") == WindowStats()


def test_the_baseline_keeps_only_recent_requests() -> None:
    observer = WatchObserver(history=10)
    for _ in range(5):
        _observe(observer, "1.0.0", "INTERNAL")
    for _ in range(10):
        _observe(observer, "1.0.0", "OK")
    recent = observer.recent("m", "1.0.0")
    assert recent.requests == 10 and recent.errors == 0
    assert recent.p95_s == pytest.approx(0.001)


def test_window_figures_are_plain_json_values() -> None:
    figures = _stats(20, errors=2, latency_ms=2.5).figures()
    assert figures == {"requests": 20, "errors": 2, "error_rate": 0.1, "p95_ms": 2.5, "latency_samples": 18}
    assert np.isfinite(figures["p95_ms"])


@pytest.mark.parametrize("bad", [{"window_s": -1.0}, {"min_requests": 0}, {"max_latency_ratio": 0.0}])
def test_a_nonsensical_policy_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        WatchPolicy(**bad)
