"""The rollout gates, exhaustively: every gate alone can stop a wave, nothing proceeds without data."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.rollouts import CohortStats, GateAction, GateConfig, Snapshot, Verdict, evaluate_gates
from fleet.rollouts.gates import ProfileLatency

CONFIG = GateConfig(min_reporting_devices=2, min_requests=100)
HEALTHY = CohortStats(
    devices=3, reporting=3, committed=3, requests=1000, errors=1, p95_ms=10.0, output_drift=0.02
)
CONTROL = CohortStats(
    devices=5, reporting=5, committed=0, requests=2000, errors=2, p95_ms=10.0, output_drift=0.02
)


def snap(canary: CohortStats = HEALTHY, control: CohortStats | None = CONTROL, **kw: object) -> Snapshot:
    return Snapshot(canary=canary, control=control, bake_elapsed=bool(kw.get("bake_elapsed", True)))


def test_a_healthy_committed_baked_wave_proceeds() -> None:
    decision = evaluate_gates(snap(), CONFIG)
    assert decision.verdict == Verdict.PROCEED
    assert all(g.passed for g in decision.gates)
    assert {g.name for g in decision.gates} == {
        "failure_rate",
        "error_rate_delta",
        "p95_latency_ratio",
        "output_drift_delta",
    }


def test_baking_waits() -> None:
    assert evaluate_gates(snap(bake_elapsed=False), CONFIG).verdict == Verdict.WAIT


def test_uncommitted_devices_wait_installed_is_not_good() -> None:
    canary = dataclasses.replace(HEALTHY, committed=2)
    decision = evaluate_gates(snap(canary), CONFIG)
    assert decision.verdict == Verdict.WAIT
    assert "2/3 devices committed" in decision.reason


@pytest.mark.parametrize(
    ("change", "gate"),
    [
        ({"failed": 1}, "failure_rate"),
        ({"errors": 100}, "error_rate_delta"),
        ({"p95_ms": 30.0}, "p95_latency_ratio"),
        ({"output_drift": 0.5}, "output_drift_delta"),
    ],
)
@pytest.mark.parametrize(
    ("action", "verdict"), [(GateAction.ABORT, Verdict.ABORT), (GateAction.PAUSE, Verdict.PAUSE)]
)
def test_each_gate_alone_stops_the_wave_with_the_configured_action(
    change: dict[str, float], gate: str, action: GateAction, verdict: Verdict
) -> None:
    config = CONFIG.model_copy(update={"on_failure": action})
    decision = evaluate_gates(snap(dataclasses.replace(HEALTHY, **change)), config)  # type: ignore[arg-type]
    assert decision.verdict == verdict
    assert [g.name for g in decision.failed_gates] == [gate]
    assert gate in decision.reason


def test_failures_judge_before_the_minimum_of_reporting_devices() -> None:
    canary = CohortStats(devices=1, reporting=0, failed=1)
    decision = evaluate_gates(snap(canary), CONFIG)
    assert decision.verdict == Verdict.ABORT
    assert decision.failed_gates[0].name == "failure_rate"


def test_too_few_reporting_devices_never_proceed() -> None:
    canary = dataclasses.replace(HEALTHY, reporting=1)
    decision = evaluate_gates(snap(canary), CONFIG)
    assert decision.verdict == Verdict.WAIT
    assert "not enough data" in decision.reason


def test_too_few_requests_hold_latency_and_errors() -> None:
    canary = dataclasses.replace(HEALTHY, requests=10, errors=10, p95_ms=100.0)
    decision = evaluate_gates(snap(canary), CONFIG)
    assert decision.verdict == Verdict.WAIT
    undecided = {g.name for g in decision.gates if g.passed is None}
    assert undecided == {"error_rate_delta", "p95_latency_ratio"}


def test_without_control_the_old_version_baseline_is_used() -> None:
    slow = dataclasses.replace(HEALTHY, p95_ms=40.0)
    baseline = dataclasses.replace(CONTROL, p95_ms=10.0)
    with_baseline = Snapshot(canary=slow, control=None, baseline=baseline, bake_elapsed=True)
    assert evaluate_gates(with_baseline, CONFIG).verdict == Verdict.ABORT
    alone = Snapshot(canary=slow, control=None, bake_elapsed=True)
    assert evaluate_gates(alone, CONFIG).verdict == Verdict.PROCEED


def test_silent_control_falls_back_to_baseline() -> None:
    silent = dataclasses.replace(CONTROL, reporting=0, p95_ms=None)
    baseline = dataclasses.replace(CONTROL, p95_ms=8.0)
    decision = evaluate_gates(Snapshot(HEALTHY, silent, baseline, True), CONFIG)
    assert decision.verdict == Verdict.PROCEED
    ratio = next(g for g in decision.gates if g.name == "p95_latency_ratio")
    assert ratio.value == pytest.approx(10.0 / 8.0)
    assert "baseline" in ratio.detail


def test_a_bundle_without_reference_statistics_passes_the_drift_gate_saying_so() -> None:
    canary = dataclasses.replace(HEALTHY, output_drift=None)
    decision = evaluate_gates(Snapshot(canary, CONTROL, None, True, drift_measured=False), CONFIG)
    assert decision.verdict == Verdict.PROCEED
    drift = next(g for g in decision.gates if g.name == "output_drift_delta")
    assert drift.passed is True and "no reference statistics" in drift.detail
    # Measured, but no figure yet: that is missing data, not a pass.
    assert evaluate_gates(Snapshot(canary, CONTROL, None, True), CONFIG).verdict == Verdict.WAIT


def test_drift_without_a_control_or_baseline_figure_is_not_compared_with_zero() -> None:
    drifting = dataclasses.replace(HEALTHY, output_drift=0.3)
    silent = dataclasses.replace(CONTROL, output_drift=None)
    decision = evaluate_gates(Snapshot(drifting, silent, None, True), CONFIG)
    drift = next(g for g in decision.gates if g.name == "output_drift_delta")
    assert (drift.passed, drift.value) == (True, None)
    assert "no control or baseline drift" in drift.detail
    baseline = dataclasses.replace(CONTROL, output_drift=0.05)
    judged = evaluate_gates(Snapshot(drifting, silent, baseline, True), CONFIG)
    assert judged.verdict == Verdict.ABORT
    assert "against baseline 0.050" in judged.reason


def test_a_wave_with_no_devices_yet_waits() -> None:
    decision = evaluate_gates(snap(CohortStats()), CONFIG)
    assert decision.verdict == Verdict.WAIT


def test_decision_serialises_with_the_figures() -> None:
    data = evaluate_gates(snap(dataclasses.replace(HEALTHY, p95_ms=30.0)), CONFIG).as_dict()
    assert data["verdict"] == "abort"
    gates = {g["name"]: g for g in data["gates"]}  # type: ignore[attr-defined]
    assert gates["p95_latency_ratio"]["value"] == pytest.approx(3.0)
    assert gates["p95_latency_ratio"]["threshold"] == pytest.approx(1.5)


# --- latency per hardware profile ----------------------------------------------------------------

PI, JETSON = "raspberry-pi-5", "jetson-orin"


def latency_gate(snapshot: Snapshot) -> tuple[Verdict, bool | None, float | None, str]:
    decision = evaluate_gates(snapshot, CONFIG)
    gate = next(g for g in decision.gates if g.name == "p95_latency_ratio")
    return decision.verdict, gate.passed, gate.value, gate.detail


def test_a_pi_canary_is_not_judged_against_jetson_controls() -> None:
    # Pooled, the Pi canary (40 ms) is 4x the Jetson controls (10 ms): far above the 1.5x limit.
    canary = dataclasses.replace(HEALTHY, p95_ms=40.0)
    pairs = (
        ProfileLatency(PI, 40.0, 38.0, "baseline"),  # the Pi on its old version: as slow
        ProfileLatency(JETSON, 10.0, 10.0, "control"),
    )
    verdict, passed, value, detail = latency_gate(
        Snapshot(canary, CONTROL, None, True, latency_by_profile=pairs)
    )
    assert (verdict, passed) == (Verdict.PROCEED, True)
    assert value == pytest.approx(40.0 / 38.0)
    assert f"on {PI}" in detail and f"also {JETSON} 1.00x" in detail
    # The same snapshot without the pairs: the pooled comparison would have aborted a good release.
    assert evaluate_gates(Snapshot(canary, CONTROL, None, True), CONFIG).verdict == Verdict.ABORT


def test_a_regression_on_one_profile_of_two_fails_naming_it() -> None:
    # Pooled, the slow Pis hide among fast Jetsons; per profile the Jetsons regressed 3x.
    pairs = (
        ProfileLatency(PI, 40.0, 40.0, "control"),
        ProfileLatency(JETSON, 30.0, 10.0, "control"),
    )
    canary = dataclasses.replace(HEALTHY, p95_ms=38.0)
    control = dataclasses.replace(CONTROL, p95_ms=39.0)
    verdict, passed, value, detail = latency_gate(
        Snapshot(canary, control, None, True, latency_by_profile=pairs)
    )
    assert (verdict, passed) == (Verdict.ABORT, False)
    assert value == pytest.approx(3.0)
    assert detail.startswith(f"canary p95 30.00 ms / control 10.00 ms = 3.00x on {JETSON} (limit 1.50x)")
    assert f"also {PI} 1.00x" in detail


def test_no_profile_with_both_figures_passes_saying_so() -> None:
    pairs = (ProfileLatency(PI, 40.0, None, "baseline"), ProfileLatency(JETSON, None, 10.0, "control"))
    verdict, passed, value, detail = latency_gate(
        Snapshot(HEALTHY, CONTROL, None, True, latency_by_profile=pairs)
    )
    assert (verdict, passed, value) == (Verdict.PROCEED, True, None)
    assert "no latency on the same hardware profile to compare with" in detail
    assert PI in detail and JETSON in detail


def test_an_uncompared_profile_is_listed_but_does_not_decide() -> None:
    pairs = (ProfileLatency(PI, 90.0, None, "baseline"), ProfileLatency(JETSON, 11.0, 10.0, "control"))
    _, passed, value, detail = latency_gate(Snapshot(HEALTHY, CONTROL, None, True, latency_by_profile=pairs))
    assert (passed, value) == (True, pytest.approx(1.1))
    assert detail.endswith(f"also {PI} not compared")


def test_not_enough_canary_data_still_waits_with_profile_pairs() -> None:
    canary = dataclasses.replace(HEALTHY, requests=10)
    pairs = (ProfileLatency(PI, 90.0, 10.0, "control"),)
    verdict, passed, _, detail = latency_gate(Snapshot(canary, CONTROL, None, True, latency_by_profile=pairs))
    assert (verdict, passed) == (Verdict.WAIT, None)
    assert "10/100 requests" in detail


def test_without_profile_pairs_the_pooled_cohorts_are_compared() -> None:
    slow = dataclasses.replace(HEALTHY, p95_ms=30.0)
    verdict, passed, value, detail = latency_gate(Snapshot(slow, CONTROL, None, True))
    assert (verdict, passed, value) == (Verdict.ABORT, False, pytest.approx(3.0))
    assert detail == "canary p95 30.00 ms / control 10.00 ms = 3.00x (limit 1.50x)"


cohorts = st.builds(
    CohortStats,
    devices=st.integers(0, 50),
    reporting=st.integers(0, 50),
    committed=st.integers(0, 50),
    failed=st.integers(0, 50),
    requests=st.integers(0, 10_000),
    errors=st.integers(0, 10_000),
    p95_ms=st.one_of(st.none(), st.floats(0.01, 1e4)),
    output_drift=st.one_of(st.none(), st.floats(0, 1)),
)
configs = st.builds(
    GateConfig,
    max_failure_rate=st.floats(0, 1),
    max_error_rate_delta=st.floats(0, 1),
    max_p95_latency_ratio=st.floats(0.1, 10),
    max_output_drift_delta=st.floats(0, 1),
    min_reporting_devices=st.integers(1, 10),
    min_requests=st.integers(0, 1000),
    on_failure=st.sampled_from(list(GateAction)),
)


@given(canary=cohorts, control=st.one_of(st.none(), cohorts), bake=st.booleans(), config=configs)
def test_invariants(canary: CohortStats, control: CohortStats | None, bake: bool, config: GateConfig) -> None:
    decision = evaluate_gates(Snapshot(canary, control, None, bake), config)
    failed = decision.failed_gates
    # A failed gate always yields the configured action, and only a failed gate does.
    assert bool(failed) == (decision.verdict in (Verdict.ABORT, Verdict.PAUSE))
    if failed:
        assert decision.verdict.value == config.on_failure.value
    if decision.verdict == Verdict.PROCEED:
        assert bake
        assert canary.committed >= canary.devices > 0
        assert canary.reporting >= config.min_reporting_devices
        assert all(g.passed for g in decision.gates)
    # Pure: the same input gives the same answer.
    assert evaluate_gates(Snapshot(canary, control, None, bake), config) == decision


@given(canary=cohorts, config=configs, extra=st.integers(1, 1000))
def test_more_errors_never_turn_a_failure_into_a_pass(
    canary: CohortStats, config: GateConfig, extra: int
) -> None:
    before = evaluate_gates(Snapshot(canary, CONTROL, None, True), config)
    worse = dataclasses.replace(canary, errors=canary.errors + extra, requests=canary.requests + extra)
    after = evaluate_gates(Snapshot(worse, CONTROL, None, True), config)
    gate_before = next(g for g in before.gates if g.name == "error_rate_delta")
    gate_after = next(g for g in after.gates if g.name == "error_rate_delta")
    if gate_before.passed is False and gate_after.passed is not None:
        assert gate_after.passed is False


latencies = st.one_of(st.none(), st.floats(0.01, 1e4))
profile_pairs = st.lists(
    st.builds(
        ProfileLatency,
        profile=st.sampled_from([PI, JETSON, "x86", "(no profile)"]),
        canary_p95_ms=latencies,
        reference_p95_ms=latencies,
        reference=st.sampled_from(["control", "baseline"]),
    ),
    max_size=4,
    unique_by=lambda p: p.profile,
).map(tuple)


@given(canary=cohorts, pairs=profile_pairs, config=configs)
def test_the_latency_gate_fails_exactly_when_some_profile_exceeds_the_limit(
    canary: CohortStats, pairs: tuple[ProfileLatency, ...], config: GateConfig
) -> None:
    decision = evaluate_gates(Snapshot(canary, CONTROL, None, True, latency_by_profile=pairs), config)
    gate = next(g for g in decision.gates if g.name == "p95_latency_ratio")
    enough = (
        canary.reporting >= config.min_reporting_devices
        and canary.requests >= config.min_requests
        and canary.p95_ms is not None
    )
    ratios = [p.ratio for p in pairs if p.ratio is not None]
    if not enough:
        assert gate.passed is None
    elif not pairs:
        assert gate.passed is not None  # the pooled comparison
    else:
        assert gate.passed == all(r <= config.max_p95_latency_ratio for r in ratios)
        assert gate.value == (max(ratios) if ratios else None)
