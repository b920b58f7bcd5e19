"""A device's progress in a rollout, from its OTA reports, its status and the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.rollouts.tracking import (
    FINAL,
    UPDATER_STATES,
    DeviceState,
    OtaReport,
    Subject,
    Track,
    apply_report,
    apply_reports,
    check_timeout,
    observe_running,
    revert_start,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SUBJECT = Subject(rollout_id="r-1", model="m", target="2.0.0", previous="1.0.0")
ASSIGNED = Track(DeviceState.ASSIGNED, state_at=T0, progress_at=T0)


def report(
    seq: int, state: str, version: str = "2.0.0", rollout_id: str | None = "r-1", model: str = "m"
) -> OtaReport:
    return OtaReport("d", seq, model, version, state, rollout_id, f"why {state}", T0 + timedelta(seconds=seq))


def test_reports_move_the_device_in_seq_order_once() -> None:
    reports = [report(3, "staged"), report(1, "downloading"), report(2, "verifying")]
    track = apply_reports(ASSIGNED, reports, SUBJECT)
    assert (track.state, track.report_seq, track.state_at) == (
        DeviceState.STAGED,
        3,
        T0 + timedelta(seconds=3),
    )
    assert apply_report(track, report(2, "verifying"), SUBJECT) == track  # an old one, redelivered


@pytest.mark.parametrize(
    "other",
    [
        report(5, "committed", rollout_id="r-2"),
        report(5, "committed", rollout_id=None),
        report(5, "committed", model="other"),
        report(5, "committed", version="9.9.9"),
        report(5, "paused"),
    ],
)
def test_reports_about_something_else_do_not_count(other: OtaReport) -> None:
    assert apply_report(ASSIGNED, other, SUBJECT).state is DeviceState.ASSIGNED


def test_a_failed_device_that_retries_can_still_commit() -> None:
    track = apply_reports(
        ASSIGNED, [report(1, "rolled_back"), report(2, "assigned"), report(3, "committed")], SUBJECT
    )
    assert track.state is DeviceState.COMMITTED


def test_a_revert_ends_when_the_previous_version_commits_or_runs() -> None:
    reverting = Track(DeviceState.REVERTING)
    assert (
        apply_report(reverting, report(7, "committed", version="1.0.0"), SUBJECT).state
        is DeviceState.REVERTED
    )
    failed = apply_report(reverting, report(7, "failed", version="1.0.0"), SUBJECT)
    assert failed.state is DeviceState.REVERT_FAILED and failed.reason is not None
    assert "going back to 1.0.0 failed" in failed.reason
    assert apply_report(reverting, report(7, "committed"), SUBJECT).state is DeviceState.REVERTING
    assert observe_running(reverting, "1.0.0", SUBJECT, T0).state is DeviceState.REVERTED
    assert observe_running(reverting, "2.0.0", SUBJECT, T0).state is DeviceState.REVERTING
    assert observe_running(ASSIGNED, "1.0.0", SUBJECT, T0) == ASSIGNED


def test_the_timeout_counts_only_while_online() -> None:
    late = T0 + timedelta(seconds=31)
    timed_out = check_timeout(ASSIGNED, online=True, now=late, timeout_s=30)
    assert timed_out.state is DeviceState.TIMED_OUT and "no progress for 31 s" in (timed_out.reason or "")
    paused = check_timeout(ASSIGNED, online=False, now=late, timeout_s=30)
    assert paused.state is DeviceState.ASSIGNED and paused.progress_at == late
    assert check_timeout(paused, online=True, now=late + timedelta(seconds=29), timeout_s=30) == paused
    done = Track(DeviceState.COMMITTED, progress_at=T0)
    assert check_timeout(done, online=True, now=late, timeout_s=30) == done


def test_an_abort_reverts_assigned_devices_and_skips_the_rest() -> None:
    now = T0 + timedelta(minutes=1)
    assert (
        revert_start(Track(DeviceState.PENDING), running="1.0.0", subject=SUBJECT, now=now).state
        is DeviceState.SKIPPED
    )
    assert (
        revert_start(Track(DeviceState.COMMITTED), running="2.0.0", subject=SUBJECT, now=now).state
        is DeviceState.REVERTING
    )
    failed = Track(DeviceState.FAILED, reason="golden check failed")
    back = revert_start(failed, running="1.0.0", subject=SUBJECT, now=now)
    assert (back.state, back.reason) == (DeviceState.REVERTED, "golden check failed")
    first = Subject("r-1", "m", "2.0.0", None)
    fresh = revert_start(Track(DeviceState.COMMITTED), running="2.0.0", subject=first, now=now)
    assert fresh.state is DeviceState.REVERTED and "no previous version" in (fresh.reason or "")
    superseded = Track(DeviceState.SUPERSEDED)
    assert revert_start(superseded, running=None, subject=SUBJECT, now=now) == superseded


states = st.sampled_from([s.value for s in DeviceState] + ["bogus"])
reports = st.lists(
    st.builds(
        OtaReport,
        device_id=st.just("d"),
        seq=st.integers(0, 50),
        model=st.sampled_from(["m", "x"]),
        version=st.sampled_from(["1.0.0", "2.0.0", "3.0.0"]),
        state=states,
        rollout_id=st.sampled_from(["r-1", "r-2", None]),
        reason=st.just(""),
        received_at=st.just(T0),
    ),
    max_size=20,
)


@given(start=st.sampled_from(list(DeviceState)), batch=reports)
def test_reports_never_take_a_device_out_of_its_phase(start: DeviceState, batch: list[OtaReport]) -> None:
    """Forward states stay forward states; a revert only ends; final non-forward states never move."""
    track = apply_reports(Track(start), batch, SUBJECT)
    if start in UPDATER_STATES:
        assert track.state in UPDATER_STATES
    elif start is DeviceState.REVERTING:
        assert track.state in {DeviceState.REVERTING, DeviceState.REVERTED, DeviceState.REVERT_FAILED}
    else:
        assert track.state is start
    if start in FINAL - UPDATER_STATES:
        assert track.state is start
    # Idempotent: the same reports again change nothing (QoS 1 redelivers).
    assert apply_reports(track, batch, SUBJECT) == track
