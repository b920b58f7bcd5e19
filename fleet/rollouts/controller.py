"""The rollout controller: one loop that moves every rollout forward, one step at a time.

Each step, for one rollout, in one transaction under the rollout's lock (``locking``):

1. fold the devices' new OTA reports into their progress (``tracking``), notice reverted
   devices from their status, and time out devices that made no progress while online;
2. a running rollout starts its canary; afterwards it gathers the telemetry snapshot
   (``snapshot``), asks the gates (``gates.evaluate_gates``) and acts: proceed (the next wave, or
   complete after the last), wait, pause, or abort (every assigned device back to its previous
   version);
3. after the commit, the devices whose desired state changed are handed to the publisher.

All state is in the database, so a restarted server (or another replica) continues where the
last step left off; the decisions and their figures are in the audit log. Finished rollouts keep
being stepped while some of their devices have not settled (an offline device that converges
when it reconnects, a device going back to its previous version).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from fleet.db.models import Device, DeviceEvent
from fleet.db.session import Database
from fleet.db.types import utcnow
from fleet.rollouts import transitions
from fleet.rollouts.desired import DesiredNotifier
from fleet.rollouts.gates import Decision, GateConfig, Verdict, evaluate_gates
from fleet.rollouts.locking import rollout_session
from fleet.rollouts.models import Rollout, RolloutDevice
from fleet.rollouts.planner import wave_label
from fleet.rollouts.running import running_version
from fleet.rollouts.snapshot import ReferenceSource, SnapshotSettings, canary_devices, gather
from fleet.rollouts.tracking import (
    FINAL,
    REVERT_STATES,
    UPDATER_STATES,
    DeviceState,
    OtaReport,
    apply_reports,
    check_timeout,
    observe_running,
)
from fleet.rollouts.transitions import CONTROLLER, RolloutState, store_track, subject_of, track_of

log = logging.getLogger(__name__)

_CHUNK = 500
# Reports are placed by the server's clock when received; replicas' clocks may differ a little.
_CLOCK_SLACK = timedelta(seconds=60)
_DECISION_REFRESH_S = 5.0


@dataclass(frozen=True)
class ControllerSettings:
    interval_s: float = 1.0
    snapshot: SnapshotSettings = field(default_factory=SnapshotSettings)


@dataclass
class StepOutcome:
    rollout_id: str
    state: str
    verdict: str | None = None
    desired: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class FleetView:
    """What the step needs of the devices' registry records."""

    online: dict[str, bool]
    # The version each device runs, as its last status says (``running.running_version``): while
    # an update or a revert has two versions loaded, the one that serves requests.
    running: dict[str, str | None]
    # The version each device runs when it is the only one loaded (no update in flight), else None.
    settled: dict[str, str | None] = field(default_factory=dict)


class RolloutController:
    def __init__(
        self,
        database: Database,
        *,
        references: ReferenceSource | None = None,
        notifier: DesiredNotifier | None = None,
        settings: ControllerSettings | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.database = database
        self.references = references
        self.notifier = notifier
        self.settings = settings or ControllerSettings()
        self.clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the loop -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="rollout-controller", daemon=True)
            self._thread.start()
            log.info("rollout controller started (a step every %.1f s)", self.settings.interval_s)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def wake(self) -> None:
        """Step soon (an operator created or changed a rollout)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except SQLAlchemyError as exc:
                log.warning("rollout controller: the database is away (%s); retrying", _first_line(exc))
            except Exception:  # a bug in one step must not stop every rollout for good
                log.exception("rollout controller step failed")
            self._wake.wait(self.settings.interval_s)
            self._wake.clear()

    def tick(self) -> list[StepOutcome]:
        """Step every rollout that is active or still has devices to follow."""
        with self.database.session() as session:
            due = session.scalars(
                select(Rollout.id)
                .where(
                    or_(
                        Rollout.state.in_(RolloutState.ACTIVE),
                        Rollout.settled.is_(False),
                    )
                )
                .order_by(Rollout.created_at)
            ).all()
        outcomes = []
        for rollout_id in due:
            outcome = self.step(rollout_id)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def step(self, rollout_id: str) -> StepOutcome | None:
        """One step of one rollout; None when another replica holds it, or it is gone."""
        with rollout_session(self.database, rollout_id, wait=False) as session:
            if session is None:
                return None
            rollout = session.get(Rollout, rollout_id)
            if rollout is None:
                return None
            outcome = advance(
                session,
                rollout,
                now=self.clock(),
                references=self.references,
                settings=self.settings.snapshot,
            )
        if outcome.desired and self.notifier is not None:
            self.notifier.nudge(sorted(outcome.desired))
        return outcome


# --- one step (pure decisions over what the database says) -------------------------------------


def load_tracks(session: Session, rollout_id: str) -> list[RolloutDevice]:
    return list(
        session.scalars(
            select(RolloutDevice)
            .where(RolloutDevice.rollout_id == rollout_id)
            .order_by(RolloutDevice.position)
        ).all()
    )


def fleet_view(session: Session, model: str, device_ids: Sequence[str]) -> FleetView:
    online: dict[str, bool] = {}
    running: dict[str, str | None] = {}
    settled: dict[str, str | None] = {}
    ordered = sorted(device_ids)
    for start in range(0, len(ordered), _CHUNK):
        rows = session.execute(
            select(Device.id, Device.online, Device.models, Device.status).where(
                Device.id.in_(ordered[start : start + _CHUNK])
            )
        )
        for device_id, is_online, models, status in rows:
            online[device_id] = bool(is_online)
            runs = running_version(status, model, (models or {}).get(model))
            running[device_id] = runs.version
            settled[device_id] = runs.settled
    return FleetView(online, running, settled)


def load_reports(session: Session, device_ids: Sequence[str], since: datetime) -> dict[str, list[OtaReport]]:
    reports: dict[str, list[OtaReport]] = defaultdict(list)
    ordered = sorted(device_ids)
    for start in range(0, len(ordered), _CHUNK):
        rows = session.execute(
            select(
                DeviceEvent.device_id, DeviceEvent.seq, DeviceEvent.payload, DeviceEvent.received_at
            ).where(
                DeviceEvent.kind == "ota",
                DeviceEvent.device_id.in_(ordered[start : start + _CHUNK]),
                DeviceEvent.received_at >= since,
            )
        )
        for device_id, seq, payload, received_at in rows:
            if isinstance(payload, dict):
                reports[device_id].append(OtaReport.from_payload(device_id, int(seq), payload, received_at))
    return reports


def follow_devices(
    session: Session, rollout: Rollout, tracks: Sequence[RolloutDevice], view: FleetView, now: datetime
) -> None:
    """Fold reports, notice reverted devices, time out the idle ones (while the rollout is active)."""
    moving = [t for t in tracks if t.state in UPDATER_STATES or t.state in REVERT_STATES]
    unsettled = [t for t in moving if t.state not in FINAL or rollout.state in RolloutState.ACTIVE]
    if not unsettled:
        return
    reports = load_reports(session, [t.device_id for t in unsettled], rollout.created_at - _CLOCK_SLACK)
    for row in unsettled:
        subject = subject_of(rollout, row)
        track = apply_reports(track_of(row), reports.get(row.device_id, []), subject)
        # Gone back only once the previous version runs alone: a revert may still fail its watch.
        track = observe_running(track, view.settled.get(row.device_id), subject, now)
        if rollout.state in RolloutState.ACTIVE:
            track = check_timeout(
                track,
                online=view.online.get(row.device_id, False),
                now=now,
                timeout_s=rollout.device_timeout_s,
            )
        store_track(row, track)


def advance(
    session: Session,
    rollout: Rollout,
    *,
    now: datetime,
    references: ReferenceSource | None,
    settings: SnapshotSettings,
) -> StepOutcome:
    tracks = load_tracks(session, rollout.id)
    view = fleet_view(session, rollout.model, [t.device_id for t in tracks])
    follow_devices(session, rollout, tracks, view, now)
    outcome = StepOutcome(rollout.id, rollout.state)
    if rollout.state == RolloutState.RUNNING:
        if rollout.wave < 0:
            outcome.desired |= transitions.start_wave(session, rollout, tracks, 0, now=now)
        else:
            outcome.verdict, desired = judge(session, rollout, tracks, view, now, references, settings)
            outcome.desired |= desired
    if rollout.state in RolloutState.FINISHED:
        settled = all(t.state in FINAL for t in tracks)
        if settled != rollout.settled:
            rollout.settled = settled
    outcome.state = rollout.state
    return outcome


def judge(
    session: Session,
    rollout: Rollout,
    tracks: Sequence[RolloutDevice],
    view: FleetView,
    now: datetime,
    references: ReferenceSource | None,
    settings: SnapshotSettings,
) -> tuple[str, set[str]]:
    """Evaluate the gates over the current wave and act on the verdict."""
    canary = canary_devices(tracks, view.online)
    all_committed = bool(canary) and all(t.state == DeviceState.COMMITTED for t in canary)
    if all_committed and rollout.wave_committed_at is None:
        rollout.wave_committed_at = now
    elif not all_committed and rollout.wave_committed_at is not None:
        rollout.wave_committed_at = None
    gathered = gather(
        session, rollout, tracks, view.online, now=now, references=references, settings=settings
    )
    config = GateConfig.model_validate(rollout.gates)
    decision = evaluate_gates(gathered.snapshot, config)
    figures = gathered.figures()
    _remember(rollout, decision, figures, now)
    details = {"wave": rollout.wave, "decision": decision.as_dict(), "figures": figures}
    if decision.verdict is Verdict.PROCEED:
        transitions.end_wave(rollout, transitions.PASSED, now=now, actor=CONTROLLER, reason=decision.reason)
        last = len(rollout.sizes) - 1
        if rollout.wave >= last:
            transitions.complete(session, rollout, now=now, actor=CONTROLLER, details=details)
            log.info(
                "rollout %s completed: %s %s on every targeted device",
                rollout.id,
                rollout.model,
                rollout.version,
            )
            return decision.verdict.value, set()
        next_wave = rollout.wave + 1
        log.info(
            "rollout %s: %s passed its gates; starting %s",
            rollout.id,
            wave_label(rollout.wave),
            wave_label(next_wave),
        )
        started = transitions.start_wave(
            session, rollout, tracks, next_wave, now=now, details={"after": details}
        )
        return decision.verdict.value, started
    if decision.verdict is Verdict.PAUSE:
        log.warning("rollout %s paused: %s", rollout.id, decision.reason)
        transitions.pause(session, rollout, decision.reason, now=now, actor=CONTROLLER, details=details)
    elif decision.verdict is Verdict.ABORT:
        log.warning("rollout %s aborted: %s", rollout.id, decision.reason)
        return decision.verdict.value, transitions.abort(
            session,
            rollout,
            tracks,
            view.running,
            decision.reason,
            now=now,
            actor=CONTROLLER,
            details=details,
        )
    return decision.verdict.value, set()


def _remember(rollout: Rollout, decision: Decision, figures: dict[str, Any], now: datetime) -> None:
    """Keep the last evaluation on the rollout (for ``rollout status``), written when it changes."""
    fresh = {"wave": rollout.wave, **decision.as_dict(), "figures": figures}
    previous = dict(rollout.decision or {})
    at = previous.pop("at", None)
    stale = at is None or (now - datetime.fromisoformat(at)).total_seconds() >= _DECISION_REFRESH_S
    if previous != fresh or stale:
        rollout.decision = {"at": now.isoformat(), **fresh}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
