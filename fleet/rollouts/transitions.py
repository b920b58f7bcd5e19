"""What happens to a rollout at each decision: a wave starts, the rollout pauses, resumes, completes
or aborts. Shared by the controller (decisions from the gates) and the API (an operator's).

Each function changes rows in the caller's session (under the rollout's lock: ``locking``),
writes the audit entry with the figures behind the decision, and returns the devices whose
desired state changed; the caller asks the publisher to send them once the transaction commits.

How each wave ended is kept on the rollout (``end_wave``): it passed its gates, an operator
promoted it past them, or the rollout aborted during it. A completed rollout's reason says which
waves were promoted, by whom and why (``completion_reason``), rather than claiming they passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fleet.audit import record_audit
from fleet.auth import Principal
from fleet.rollouts.desired import set_desired_models
from fleet.rollouts.models import Rollout, RolloutDevice
from fleet.rollouts.planner import wave_label
from fleet.rollouts.tracking import FINAL, UPDATER_STATES, DeviceState, Subject, Track, revert_start
from models.mqtt_contract import DesiredModel

CONTROLLER = "rollout-controller"
BUNDLE_PATH = "/api/v1/bundles/{sha256}"  # relative: devices resolve it against their fleet URL


class RolloutState:
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"

    ACTIVE = (RUNNING, PAUSED)
    FINISHED = (COMPLETED, ABORTED)


Actor = Principal | str

PASSED = "passed"
PROMOTED = "promoted"
ABORTED = "aborted"
ALL_PASSED = "every wave committed and passed its gates"


def actor_name(actor: Actor) -> str:
    """Who, for people: the token's name (``admin``), or ``rollout-controller``."""
    return actor.name if isinstance(actor, Principal) else actor


def end_wave(rollout: Rollout, how: str, *, now: datetime, actor: Actor, reason: str | None) -> None:
    """Record how the current wave ended (``passed``, ``promoted`` or ``aborted``), with the gate
    evaluation that stood then when it is this wave's."""
    if rollout.wave < 0:
        return  # no wave had started
    decision = rollout.decision if (rollout.decision or {}).get("wave") == rollout.wave else None
    end = {
        "wave": rollout.wave,
        "label": wave_label(rollout.wave),
        "how": how,
        "at": now.isoformat(),
        "by": actor_name(actor),
        "actor": actor.actor if isinstance(actor, Principal) else actor,
        "reason": reason,
        "decision": dict(decision) if decision else None,
    }
    kept = [e for e in rollout.ends if e.get("wave") != rollout.wave]
    rollout.wave_ends = {"waves": [*kept, end]}  # a new value: JSON columns do not track mutation


def completion_reason(ends: Sequence[Mapping[str, Any]]) -> str:
    """``every wave committed and passed its gates``, unless an operator promoted a wave: then
    each wave's end, e.g. ``completed: canary promoted by admin (idle lab device); wave 1 passed
    its gates``."""
    if not any(e.get("how") == PROMOTED for e in ends):
        return ALL_PASSED
    return "completed: " + "; ".join(told(e) for e in ends)


def told(end: Mapping[str, Any]) -> str:
    """One wave's end in words."""
    label = str(end.get("label") or wave_label(int(end.get("wave", 0))))
    if end.get("how") == PROMOTED:
        why = f" ({end['reason']})" if end.get("reason") else ""
        return f"{label} promoted by {end.get('by')}{why}"
    return f"{label} passed its gates"


def subject_of(rollout: Rollout, track: RolloutDevice) -> Subject:
    return Subject(rollout.id, rollout.model, rollout.version, track.previous_version)


def track_of(row: RolloutDevice) -> Track:
    return Track(
        state=DeviceState(row.state),
        reason=row.reason,
        report_seq=row.report_seq,
        state_at=row.state_at,
        progress_at=row.progress_at,
    )


def store_track(row: RolloutDevice, track: Track) -> bool:
    """Write ``track`` into ``row``; True when anything changed."""
    changed = (row.state, row.reason, row.report_seq, row.state_at, row.progress_at) != (
        track.state.value,
        track.reason,
        track.report_seq,
        track.state_at,
        track.progress_at,
    )
    if changed:
        row.state = track.state.value
        row.reason = track.reason
        row.report_seq = track.report_seq
        row.state_at = track.state_at
        row.progress_at = track.progress_at
    return changed


def desired_model(
    rollout: Rollout, sha256: str, size: int, version: str, *, allow_rollback: bool
) -> DesiredModel:
    return DesiredModel(
        version=version,
        bundle_sha256=sha256,
        bundle_size=size,
        bundle_url=BUNDLE_PATH.format(sha256=sha256),
        rollout_id=rollout.id,
        allow_rollback=allow_rollback,
    )


def start_wave(
    session: Session,
    rollout: Rollout,
    tracks: Sequence[RolloutDevice],
    index: int,
    *,
    now: datetime,
    actor: Actor = CONTROLLER,
    details: Mapping[str, Any] | None = None,
) -> set[str]:
    """Assign every still-pending device of waves up to ``index``: their desired state gets the new
    version; older rollouts of the model that still track them let go of them."""
    rollout.wave = index
    rollout.wave_started_at = now
    rollout.window_started_at = now
    rollout.wave_committed_at = None
    rollout.updated_at = now
    assigned = [t for t in tracks if t.state == DeviceState.PENDING and t.wave <= index]
    for track in assigned:
        wanted = desired_model(
            rollout,
            track.bundle_sha256,
            track.bundle_size,
            rollout.version,
            allow_rollback=rollout.allow_rollback,
        )
        set_desired_models(session, track.device_id, {rollout.model: wanted}, now=now)
        track.state = DeviceState.ASSIGNED.value
        track.reason = None
        track.assigned_at = track.state_at = track.progress_at = now
    _supersede(session, rollout, [t.device_id for t in assigned], now)
    record_audit(
        session,
        actor,
        "rollout.wave",
        rollout.id,
        details={
            **(details or {}),
            "wave": index,
            "label": wave_label(index),
            "devices": sorted(t.device_id for t in assigned),
            "model": rollout.model,
            "version": rollout.version,
        },
        at=now,
    )
    return {t.device_id for t in assigned}


def _supersede(session: Session, rollout: Rollout, device_ids: list[str], now: datetime) -> None:
    if not device_ids:
        return
    others = select(Rollout.id).where(Rollout.model == rollout.model, Rollout.id != rollout.id)
    session.execute(
        update(RolloutDevice)
        .where(
            RolloutDevice.device_id.in_(device_ids),
            RolloutDevice.rollout_id.in_(others),
            RolloutDevice.state.not_in([s.value for s in FINAL]),
        )
        .values(
            state=DeviceState.SUPERSEDED.value, reason=f"taken over by rollout {rollout.id}", state_at=now
        )
        .execution_options(synchronize_session=False)
    )


def pause(
    session: Session,
    rollout: Rollout,
    reason: str,
    *,
    now: datetime,
    actor: Actor,
    details: Mapping[str, Any],
) -> None:
    rollout.state = RolloutState.PAUSED
    rollout.reason = reason
    rollout.updated_at = now
    record_audit(session, actor, "rollout.pause", rollout.id, details={"reason": reason, **details}, at=now)


def resume(session: Session, rollout: Rollout, *, now: datetime, actor: Actor) -> None:
    """Running again; the gates judge telemetry from now on, and the wave bakes again."""
    rollout.state = RolloutState.RUNNING
    rollout.reason = None
    rollout.window_started_at = now
    rollout.wave_committed_at = None
    rollout.updated_at = now
    record_audit(session, actor, "rollout.resume", rollout.id, details={"wave": rollout.wave}, at=now)


def complete(
    session: Session, rollout: Rollout, *, now: datetime, actor: Actor, details: Mapping[str, Any]
) -> None:
    """The last wave ended (``end_wave`` first): the reason says how each wave ended."""
    rollout.state = RolloutState.COMPLETED
    rollout.reason = completion_reason(rollout.ends)
    rollout.finished_at = rollout.updated_at = now
    record_audit(
        session, actor, "rollout.complete", rollout.id, details={**details, "reason": rollout.reason}, at=now
    )


def abort(
    session: Session,
    rollout: Rollout,
    tracks: Sequence[RolloutDevice],
    running: Mapping[str, str | None],
    reason: str,
    *,
    now: datetime,
    actor: Actor,
    details: Mapping[str, Any],
) -> set[str]:
    """Every assigned device goes back to its previous version: a new desired state with
    ``allow_rollback``; devices not assigned yet never get the new version."""
    changed: set[str] = set()
    for row in tracks:
        before = DeviceState(row.state)
        track = revert_start(
            track_of(row), running=running.get(row.device_id), subject=subject_of(rollout, row), now=now
        )
        store_track(row, track)
        if before not in UPDATER_STATES:
            continue  # never assigned, superseded (another rollout owns it now) or reverted already
        previous: DesiredModel | None = None
        if row.previous_version is not None and row.previous_sha256 is not None:
            previous = desired_model(
                rollout,
                row.previous_sha256,
                row.previous_size or 0,
                row.previous_version,
                allow_rollback=True,
            )
        set_desired_models(session, row.device_id, {rollout.model: previous}, now=now)
        changed.add(row.device_id)
    end_wave(rollout, ABORTED, now=now, actor=actor, reason=reason)
    rollout.state = RolloutState.ABORTED
    rollout.reason = reason
    rollout.finished_at = rollout.updated_at = now
    record_audit(
        session,
        actor,
        "rollout.abort",
        rollout.id,
        details={"reason": reason, "reverting": sorted(changed), **details},
        at=now,
    )
    return changed
