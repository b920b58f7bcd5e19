"""Each device's progress in a rollout, folded from its OTA reports. Pure.

A device in a rollout is ``pending`` until its wave starts, then follows the updater's states as
it reports them (BRIEF.md §4: assigned, downloading, ..., committed, or failed, rolled_back,
timed_out). After an abort it is ``reverting`` until it runs its previous version again
(``reverted``), or reports that going back failed (``revert_failed``). ``skipped`` devices were
never assigned (the rollout ended first); ``superseded`` ones were taken over by a newer rollout
of the same model.

Only reports for this rollout (its id) and this model count, each once, in the device's ``seq``
order; a report for the target version moves the forward states, one for the previous version
the revert. The controller also times out a device that makes no progress while online.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any


class DeviceState(StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    STAGED = "staged"
    SWITCHING = "switching"
    WATCHING = "watching"
    COMMITTED = "committed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    TIMED_OUT = "timed_out"
    REVERTING = "reverting"
    REVERTED = "reverted"
    REVERT_FAILED = "revert_failed"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"


UPDATER_STATES = frozenset(
    {
        DeviceState.ASSIGNED,
        DeviceState.DOWNLOADING,
        DeviceState.VERIFYING,
        DeviceState.STAGED,
        DeviceState.SWITCHING,
        DeviceState.WATCHING,
        DeviceState.COMMITTED,
        DeviceState.FAILED,
        DeviceState.ROLLED_BACK,
        DeviceState.TIMED_OUT,
    }
)
FAILURES = frozenset({DeviceState.FAILED, DeviceState.ROLLED_BACK, DeviceState.TIMED_OUT})
IN_PROGRESS = UPDATER_STATES - FAILURES - {DeviceState.COMMITTED}
FINAL = frozenset(
    {
        DeviceState.COMMITTED,
        *FAILURES,
        DeviceState.REVERTED,
        DeviceState.REVERT_FAILED,
        DeviceState.SKIPPED,
        DeviceState.SUPERSEDED,
    }
)
REVERT_STATES = frozenset({DeviceState.REVERTING, DeviceState.REVERTED, DeviceState.REVERT_FAILED})


@dataclass(frozen=True)
class OtaReport:
    """One OTA report as the ingest stored it (``models.mqtt_contract.OtaPayload``)."""

    device_id: str
    seq: int
    model: str
    version: str
    state: str
    rollout_id: str | None
    reason: str
    received_at: datetime

    @classmethod
    def from_payload(
        cls, device_id: str, seq: int, payload: dict[str, Any], received_at: datetime
    ) -> OtaReport:
        return cls(
            device_id=device_id,
            seq=seq,
            model=str(payload.get("model", "")),
            version=str(payload.get("version", "")),
            state=str(payload.get("state", "")),
            rollout_id=payload.get("rollout_id"),
            reason=str(payload.get("reason") or ""),
            received_at=received_at,
        )


@dataclass(frozen=True)
class Track:
    """One device's progress; ``progress_at`` is the clock of the per-device timeout."""

    state: DeviceState
    reason: str | None = None
    report_seq: int | None = None
    state_at: datetime | None = None
    progress_at: datetime | None = None


@dataclass(frozen=True)
class Subject:
    """What a rollout is about, for matching reports."""

    rollout_id: str
    model: str
    target: str
    previous: str | None


def apply_report(track: Track, report: OtaReport, subject: Subject) -> Track:
    """``track`` after ``report`` (unchanged when the report is not about this rollout or is old)."""
    if report.rollout_id != subject.rollout_id or report.model != subject.model:
        return track
    if track.report_seq is not None and report.seq <= track.report_seq:
        return track
    seen = replace(track, report_seq=report.seq)
    if track.state in UPDATER_STATES and report.version == subject.target:
        try:
            state = DeviceState(report.state)
        except ValueError:
            return seen
        if state not in UPDATER_STATES:
            return seen
        return _moved(seen, state, report.reason or None, report.received_at)
    if track.state is DeviceState.REVERTING and report.version == subject.previous:
        if report.state == DeviceState.COMMITTED:
            return _moved(seen, DeviceState.REVERTED, None, report.received_at)
        if report.state in FAILURES:
            reason = f"going back to {subject.previous} failed: {report.reason or report.state}"
            return _moved(seen, DeviceState.REVERT_FAILED, reason, report.received_at)
    return seen


def apply_reports(track: Track, reports: list[OtaReport], subject: Subject) -> Track:
    for report in sorted(reports, key=lambda r: r.seq):
        track = apply_report(track, report, subject)
    return track


def observe_running(track: Track, running: str | None, subject: Subject, now: datetime) -> Track:
    """A reverting device whose status says it runs its previous version again is reverted."""
    if track.state is DeviceState.REVERTING and running is not None and running == subject.previous:
        return _moved(track, DeviceState.REVERTED, None, now)
    return track


def check_timeout(track: Track, *, online: bool, now: datetime, timeout_s: float) -> Track:
    """Time out a device that made no progress for ``timeout_s`` while online.

    The clock stops while the device is offline (its ``progress_at`` follows ``now``): an offline
    device is not failing, it converges when it comes back (its desired state is retained).
    """
    if track.state not in IN_PROGRESS:
        return track
    if not online:
        return replace(track, progress_at=now)
    started = track.progress_at or track.state_at or now
    idle = (now - started).total_seconds()
    if idle <= timeout_s:
        return track
    reason = f"no progress for {idle:.0f} s in state {track.state.value} (device timeout {timeout_s:g} s)"
    return _moved(track, DeviceState.TIMED_OUT, reason, now)


def revert_start(track: Track, *, running: str | None, subject: Subject, now: datetime) -> Track:
    """On abort: an assigned device goes back to its previous version (``pending`` ones are skipped).

    A device that failed or rolled back by itself and runs its previous version is done already.
    A device with no previous version has nothing to go back to: the model leaves its desired
    state, and it keeps what it runs (the reason says so).
    """
    if track.state is DeviceState.PENDING:
        return _moved(track, DeviceState.SKIPPED, "the rollout ended before this device's wave", now)
    if track.state not in UPDATER_STATES:
        return track
    if subject.previous is None:
        reason = "no previous version to go back to: the model was removed from its desired state"
        return _moved(track, DeviceState.REVERTED, reason, now)
    if track.state in FAILURES and running == subject.previous:
        return _moved(track, DeviceState.REVERTED, track.reason, now)
    return _moved(track, DeviceState.REVERTING, None, now)


def _moved(track: Track, state: DeviceState, reason: str | None, at: datetime) -> Track:
    if state is track.state and reason == track.reason:
        return track
    return replace(track, state=state, reason=reason, state_at=at, progress_at=at)
