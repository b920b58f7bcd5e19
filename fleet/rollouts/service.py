"""Creating rollouts and an operator's actions on them, over the database.

``create_rollout`` checks everything that can be wrong before any device hears of it: the target
selects devices, the registry has a bundle of the version for each device's profile, no device
would go to an older version without an explicit rollback (``models.versioning.check_upgrade``),
each device's current version can be sent back on abort, and no other active rollout of the
model already holds one of the devices. Then it plans the waves and stores everything; the
controller starts the canary on its next step.

Functions take a ``Session`` and leave committing to the caller, except the operator's actions,
which take the rollout's lock (``locking``) and commit.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fleet.audit import record_audit
from fleet.auth import Principal
from fleet.db.models import Bundle, Device
from fleet.db.session import Database
from fleet.devices.registry import DeviceFilter, list_devices
from fleet.errors import Conflict, Invalid, NotFound, ServiceError
from fleet.registry.catalog import bundles_of, find_bundle
from fleet.rollouts import transitions
from fleet.rollouts.controller import fleet_view, load_tracks
from fleet.rollouts.locking import rollout_session
from fleet.rollouts.models import Rollout, RolloutDevice
from fleet.rollouts.planner import Candidate, plan_waves, wave_label
from fleet.rollouts.schemas import RolloutCreate
from fleet.rollouts.spec import (
    SpecError,
    TargetSelector,
    gate_config,
    parse_canary,
    parse_target,
    parse_waves,
)
from fleet.rollouts.tracking import FINAL, DeviceState
from fleet.rollouts.transitions import RolloutState
from models.versioning import RollbackRefused, VersionError, check_upgrade, parse_version

_SHOWN = 5  # devices named in an error message


class RolloutRefused(ServiceError):
    """An older version without ``--rollback``: the anti-rollback rule."""

    status_code = 409
    code = "rollback_refused"


@dataclass
class _Plan:
    device: Device
    bundle: Bundle
    previous: Bundle | None


@dataclass
class _Problems:
    older: list[str] = field(default_factory=list)
    unplaceable: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)


def new_rollout_id() -> str:
    return f"r-{secrets.token_hex(5)}"


def targeted_devices(session: Session, selector: TargetSelector) -> list[Device]:
    """Devices the selector matches: SQL for profile, fleet and tag values, the rest in Python."""
    valued = {key: value for key, value in selector.tags if value is not None}
    rows = list_devices(session, DeviceFilter(tags=valued, profile=selector.profile, fleet=selector.fleet))
    return [
        d for d in rows if selector.matches(profile=d.profile, fleet=d.fleet, tags=d.tag_map, device_id=d.id)
    ]


def create_rollout(session: Session, request: RolloutCreate, actor: Principal, *, now: datetime) -> Rollout:
    try:
        parse_version(request.version)
        selector = parse_target(request.target)
        canary = parse_canary(request.canary)
        waves = parse_waves(request.waves)
        gates = gate_config(request.gates, request.on_failure)
    except (SpecError, VersionError) as exc:
        raise Invalid(str(exc)) from None
    bundles = {b.profile: b for b in bundles_of(session, request.model, request.version)}
    devices = targeted_devices(session, selector)
    if not devices:
        raise Invalid(
            f"no device matches the target {selector}",
            hint="list devices with `edgefleet devices ls` (filter with --profile and --tag)",
        )
    plans, problems = _plan_devices(session, request, devices, bundles)
    _refuse_problems(request, problems, len(devices))
    if not plans:
        raise Invalid(
            f"every targeted device already runs {request.model} {request.version}: nothing to roll out",
            details={"already": problems.already},
        )
    _refuse_conflicts(session, request.model, [p.device.id for p in plans])

    rollout_id = new_rollout_id()
    sizes, placements = plan_waves(
        [Candidate(p.device.id, p.device.online) for p in plans], canary, waves, rollout_id
    )
    rollout = Rollout(
        id=rollout_id,
        model=request.model,
        version=request.version,
        target=str(selector),
        canary=str(canary),
        wave_percents={"waves": list(waves)},
        wave_sizes={"sizes": sizes},
        bake_s=request.bake_s,
        device_timeout_s=request.device_timeout_s,
        gates=gates.model_dump(mode="json"),
        allow_rollback=request.rollback,
        state=RolloutState.RUNNING,
        settled=False,
        wave=-1,
        created_at=now,
        created_by=actor.name,
        updated_at=now,
    )
    session.add(rollout)
    by_id = {p.device.id: p for p in plans}
    for placement in placements:
        plan = by_id[placement.device_id]
        session.add(
            RolloutDevice(
                rollout_id=rollout_id,
                device_id=placement.device_id,
                wave=placement.wave,
                position=placement.position,
                profile=plan.device.profile,
                bundle_sha256=plan.bundle.sha256,
                bundle_size=plan.bundle.size,
                previous_version=plan.previous.version if plan.previous else None,
                previous_sha256=plan.previous.sha256 if plan.previous else None,
                previous_size=plan.previous.size if plan.previous else None,
                state=DeviceState.PENDING.value,
                state_at=now,
            )
        )
    record_audit(
        session,
        actor,
        "rollout.create",
        rollout_id,
        details={
            "model": request.model,
            "version": request.version,
            "target": str(selector),
            "devices": len(plans),
            "already_on_version": problems.already,
            "waves": [{"label": wave_label(i), "cumulative": size} for i, size in enumerate(sizes)],
            "bake_s": request.bake_s,
            "device_timeout_s": request.device_timeout_s,
            "gates": gates.model_dump(mode="json"),
            "allow_rollback": request.rollback,
        },
        at=now,
    )
    session.flush()
    return rollout


def _plan_devices(
    session: Session, request: RolloutCreate, devices: Sequence[Device], bundles: dict[str, Bundle]
) -> tuple[list[_Plan], _Problems]:
    plans: list[_Plan] = []
    problems = _Problems()
    for device in devices:
        bundle = _bundle_for(device, bundles)
        if bundle is None:
            problems.unplaceable.append(_no_bundle(device, request, bundles))
            continue
        current = (device.models or {}).get(request.model)
        if current == request.version:
            problems.already.append(device.id)
            continue
        previous: Bundle | None = None
        if current:
            try:
                check_upgrade(current, request.version, allow_rollback=request.rollback)
            except RollbackRefused:
                problems.older.append(f"{device.id} runs {current}")
                continue
            except VersionError:
                pass  # the device runs a non-semver build: any version replaces it
            previous = find_bundle(session, request.model, current, bundle.profile)
            if previous is None:
                problems.unplaceable.append(
                    f"{device.id} runs {current}, which the registry lacks for profile {bundle.profile}: "
                    "an abort could not send it back"
                )
                continue
        plans.append(_Plan(device, bundle, previous))
    return plans, problems


def _bundle_for(device: Device, bundles: dict[str, Bundle]) -> Bundle | None:
    if device.profile is not None:
        return bundles.get(device.profile)
    return next(iter(bundles.values())) if len(bundles) == 1 else None


def _no_bundle(device: Device, request: RolloutCreate, bundles: dict[str, Bundle]) -> str:
    profiles = ", ".join(sorted(bundles))
    if device.profile is None:
        return f"{device.id} reports no hardware profile and {request.version} has bundles for {profiles}"
    return f"{device.id} is a {device.profile}, and {request.version} has bundles for {profiles} only"


def _refuse_problems(request: RolloutCreate, problems: _Problems, total: int) -> None:
    if problems.older:
        raise RolloutRefused(
            f"{request.model} {request.version} is older than what {len(problems.older)} of the "
            f"{total} targeted devices run ({_some(problems.older)}); a rollout never lowers a version "
            "unless asked",
            hint="to go back on purpose, create an explicit rollback: edgefleet rollout create "
            f"{request.model}:{request.version} --rollback",
            details={"older": problems.older},
        )
    if problems.unplaceable:
        raise Invalid(
            f"{len(problems.unplaceable)} targeted device(s) cannot take part: {_some(problems.unplaceable)}",
            hint="push the missing bundles (`edgefleet models push`), set the devices' profiles, or narrow "
            "--target",
            details={"devices": problems.unplaceable},
        )


def _some(items: Sequence[str]) -> str:
    shown = "; ".join(items[:_SHOWN])
    return shown + (f"; and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _refuse_conflicts(session: Session, model: str, device_ids: Sequence[str]) -> None:
    busy = session.execute(
        select(RolloutDevice.rollout_id, RolloutDevice.device_id)
        .join(Rollout, Rollout.id == RolloutDevice.rollout_id)
        .where(
            Rollout.model == model,
            Rollout.state.in_(RolloutState.ACTIVE),
            RolloutDevice.device_id.in_(sorted(device_ids)),
            RolloutDevice.state.not_in([s.value for s in FINAL]),
        )
    ).all()
    if busy:
        rollouts = sorted({rollout_id for rollout_id, _ in busy})
        raise Conflict(
            f"rollout {', '.join(rollouts)} of {model} is still active on {len(busy)} of these devices "
            f"({_some(sorted(device for _, device in busy))})",
            hint=f"let it finish, or stop it first: edgefleet rollout abort {rollouts[0]}",
            details={"rollouts": rollouts},
        )


# --- reading ---------------------------------------------------------------------------------------


def get_rollout(session: Session, rollout_id: str) -> Rollout:
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"no rollout {rollout_id!r}", hint="list rollouts with `edgefleet rollout ls`")
    return rollout


def list_rollouts(
    session: Session, *, state: str | None = None, model: str | None = None, limit: int = 100
) -> list[Rollout]:
    query = select(Rollout).order_by(Rollout.created_at.desc()).limit(limit)
    if state is not None:
        query = query.where(Rollout.state == state)
    if model is not None:
        query = query.where(Rollout.model == model)
    return list(session.scalars(query).all())


def state_counts(session: Session, rollout_ids: Sequence[str]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {rollout_id: Counter() for rollout_id in rollout_ids}
    if rollout_ids:
        rows = session.execute(
            select(RolloutDevice.rollout_id, RolloutDevice.state, func.count())
            .where(RolloutDevice.rollout_id.in_(list(rollout_ids)))
            .group_by(RolloutDevice.rollout_id, RolloutDevice.state)
        )
        for rollout_id, state, count in rows:
            counts[rollout_id][state] = int(count)
    return counts


# --- an operator's actions ---------------------------------------------------------------------------

ACTIONS = ("pause", "resume", "abort", "promote")


@dataclass
class ActionResult:
    rollout_id: str
    desired: set[str]


def act(
    database: Database, rollout_id: str, action: str, actor: Principal, *, reason: str | None, now: datetime
) -> ActionResult:
    """Pause, resume, abort or promote, under the rollout's lock, committed on return."""
    if action not in ACTIONS:
        raise Invalid(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    with rollout_session(database, rollout_id, wait=True) as session:
        assert session is not None  # wait=True always gets the lock
        rollout = get_rollout(session, rollout_id)
        desired = _act(session, rollout, action, actor, reason, now)
    return ActionResult(rollout_id, desired)


def _act(
    session: Session, rollout: Rollout, action: str, actor: Principal, reason: str | None, now: datetime
) -> set[str]:
    said = f": {reason}" if reason else ""
    if action == "pause":
        _require(rollout, (RolloutState.RUNNING,), action)
        transitions.pause(
            session,
            rollout,
            f"paused by {actor.name}{said}",
            now=now,
            actor=actor,
            details={"wave": rollout.wave},
        )
        return set()
    if action == "resume":
        _require(rollout, (RolloutState.PAUSED,), action)
        transitions.resume(session, rollout, now=now, actor=actor)
        return set()
    tracks = load_tracks(session, rollout.id)
    if action == "abort":
        _require(rollout, RolloutState.ACTIVE, action)
        details = {"wave": rollout.wave, "last_decision": rollout.decision}
        view = fleet_view(session, rollout.model, [t.device_id for t in tracks])
        return transitions.abort(
            session,
            rollout,
            tracks,
            view.running,
            f"aborted by {actor.name}{said}",
            now=now,
            actor=actor,
            details=details,
        )
    _require(rollout, RolloutState.ACTIVE, action)
    return _promote(session, rollout, tracks, actor, reason, now)


def _promote(
    session: Session,
    rollout: Rollout,
    tracks: Sequence[RolloutDevice],
    actor: Principal,
    reason: str | None,
    now: datetime,
) -> set[str]:
    """Skip the current wave's gates: it ends *promoted* (by whom, why, over which decision), and
    the next wave starts, or the rollout completes."""
    wave = rollout.wave
    record_audit(
        session,
        actor,
        "rollout.promote",
        rollout.id,
        details={
            "wave": wave,
            "label": wave_label(wave) if wave >= 0 else None,
            "reason": reason,
            "state": rollout.state,
            "decision": rollout.decision,  # what the operator overrode (it may have been waiting)
        },
        at=now,
    )
    rollout.state = RolloutState.RUNNING
    rollout.reason = None
    transitions.end_wave(rollout, transitions.PROMOTED, now=now, actor=actor, reason=reason)
    if wave >= len(rollout.sizes) - 1:  # the reason of the completion says who promoted and why
        details = {"wave": wave, "promoted_by": actor.name}
        transitions.complete(session, rollout, now=now, actor=actor, details=details)
        return set()
    promoted = {"promoted_by": actor.name, "reason": reason}
    return transitions.start_wave(session, rollout, tracks, wave + 1, now=now, actor=actor, details=promoted)


def _require(rollout: Rollout, states: Sequence[str], action: str) -> None:
    if rollout.state not in states:
        raise Conflict(
            f"rollout {rollout.id} is {rollout.state}: it cannot {action}",
            hint=f"{action} applies to {' or '.join(states)} rollouts; "
            f"see `edgefleet rollout status {rollout.id}`",
        )
