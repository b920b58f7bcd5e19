"""``/api/v1/rollouts``: create, list and inspect rollouts; pause, resume, abort, promote; desired states."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from fleet.api.deps import Operator, Viewer, db_session, get_context
from fleet.api.schemas import API_PREFIX, ErrorBody
from fleet.auth import Principal
from fleet.context import ServerContext
from fleet.db.types import utcnow
from fleet.devices.registry import get_device
from fleet.errors import NotFound
from fleet.rollouts import service
from fleet.rollouts.controller import fleet_view, load_tracks
from fleet.rollouts.models import DesiredStateRecord
from fleet.rollouts.schemas import (
    DesiredStateInfo,
    RolloutAction,
    RolloutCreate,
    RolloutDetail,
    RolloutInfo,
    RolloutStateName,
)
from fleet.rollouts.views import desired_info, rollout_detail, rollout_info

router = APIRouter(prefix=API_PREFIX, tags=["rollouts"])

_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorBody},
    409: {"model": ErrorBody, "description": "A conflicting rollout, a refused rollback, a wrong state."},
    422: {"model": ErrorBody},
}


def _detail(session: Session, rollout_id: str) -> RolloutDetail:
    rollout = service.get_rollout(session, rollout_id)
    tracks = load_tracks(session, rollout.id)
    return rollout_detail(rollout, tracks, fleet_view(session, rollout.model, [t.device_id for t in tracks]))


def _after_change(context: ServerContext, desired: Iterable[str]) -> None:
    """Publish what changed now, and let the controller look again soon."""
    changed = sorted(desired)
    if changed and context.desired is not None:
        context.desired.nudge(changed)
    if context.rollouts is not None:
        context.rollouts.wake()


@router.post(
    "/rollouts",
    response_model=RolloutDetail,
    status_code=201,
    summary="Create a rollout: the canary starts at the controller's next step",
    responses=_ERRORS,
)
def create_rollout(
    body: RolloutCreate,
    principal: Principal = Operator,
    context: ServerContext = Depends(get_context),
    session: Session = Depends(db_session),
) -> RolloutDetail:
    rollout = service.create_rollout(session, body, principal, now=utcnow())
    session.commit()
    _after_change(context, ())
    return _detail(session, rollout.id)


@router.get("/rollouts", response_model=list[RolloutInfo], summary="Rollouts, newest first")
def list_rollouts(
    state: RolloutStateName | None = None,
    model: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    _: Principal = Viewer,
    session: Session = Depends(db_session),
) -> list[RolloutInfo]:
    rollouts = service.list_rollouts(session, state=state, model=model, limit=limit)
    counts = service.state_counts(session, [r.id for r in rollouts])
    return [rollout_info(r, counts[r.id]) for r in rollouts]


@router.get(
    "/rollouts/{rollout_id}",
    response_model=RolloutDetail,
    summary="One rollout: waves, devices, and the last gate evaluation with its figures",
    responses=_ERRORS,
)
def get_rollout(
    rollout_id: str, _: Principal = Viewer, session: Session = Depends(db_session)
) -> RolloutDetail:
    return _detail(session, rollout_id)


def _action(action: str, summary: str) -> None:
    def handler(
        rollout_id: str,
        body: RolloutAction | None = None,
        principal: Principal = Operator,
        context: ServerContext = Depends(get_context),
        session: Session = Depends(db_session),
    ) -> RolloutDetail:
        result = service.act(
            context.db, rollout_id, action, principal, reason=body.reason if body else None, now=utcnow()
        )
        _after_change(context, result.desired)
        return _detail(session, rollout_id)

    handler.__name__ = f"{action}_rollout"
    router.post(
        f"/rollouts/{{rollout_id}}/{action}", response_model=RolloutDetail, summary=summary, responses=_ERRORS
    )(handler)


_action("pause", "Pause: devices keep what they run; nothing new is assigned")
_action("resume", "Resume a paused rollout: the gates judge again from now on")
_action("abort", "Abort: every assigned device goes back to its previous version")
_action("promote", "Promote: start the next wave now, without waiting for the current wave's gates")


@router.get(
    "/desired/{device_id}",
    response_model=DesiredStateInfo,
    summary="A device's desired state, and the revision the broker last acknowledged",
    responses={404: {"model": ErrorBody}},
)
def get_desired(
    device_id: str, _: Principal = Viewer, session: Session = Depends(db_session)
) -> DesiredStateInfo:
    get_device(session, device_id)
    record = session.get(DesiredStateRecord, device_id)
    if record is None:
        raise NotFound(
            f"device {device_id!r} has no desired state yet: no rollout assigned it anything",
            hint="it runs the bundles its agent was started with",
        )
    return desired_info(record)
