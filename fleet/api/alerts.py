"""``/api/v1/alerts``: drift alerts, open or resolved; an operator may resolve one by hand."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet.api.deps import Operator, Viewer, db_session
from fleet.api.schemas import API_PREFIX, AlertInfo, AlertResolve, ErrorBody
from fleet.auth import Principal
from fleet.db.models import Alert
from fleet.db.types import utcnow
from fleet.drift.alerts import resolve_manually
from fleet.errors import Conflict, NotFound

router = APIRouter(prefix=API_PREFIX, tags=["alerts"])


def alert_view(alert: Alert) -> AlertInfo:
    details = dict(alert.details or {})
    return AlertInfo(
        id=alert.id,
        created_at=alert.created_at,
        kind=alert.kind,
        severity=alert.severity,
        model=alert.model_name,
        version=alert.model_version,
        cohort=alert.cohort,
        against=details.get("against"),
        feature=alert.feature,
        metric=alert.metric,
        value=alert.value,
        threshold=alert.threshold,
        message=alert.message,
        resolved_at=alert.resolved_at,
        details=details,
    )


@router.get("/alerts", response_model=list[AlertInfo], summary="Alerts, newest first")
def get_alerts(
    state: Literal["open", "resolved", "all"] = Query("open", description="open, resolved or all"),
    model: str | None = Query(None, description="Only this model's alerts"),
    limit: int = Query(100, ge=1, le=1000),
    _: Principal = Viewer,
    session: Session = Depends(db_session),
) -> list[AlertInfo]:
    query = select(Alert).order_by(Alert.id.desc()).limit(limit)
    if state == "open":
        query = query.where(Alert.resolved_at.is_(None))
    elif state == "resolved":
        query = query.where(Alert.resolved_at.is_not(None))
    if model is not None:
        query = query.where(Alert.model_name == model)
    return [alert_view(row) for row in session.scalars(query).all()]


@router.post(
    "/alerts/{alert_id}/resolve",
    response_model=AlertInfo,
    summary="Resolve an alert by hand (it opens again if the feature still drifts at the next evaluation)",
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def resolve_alert(
    alert_id: int,
    body: AlertResolve | None = None,
    principal: Principal = Operator,
    session: Session = Depends(db_session),
) -> AlertInfo:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise NotFound(f"no alert {alert_id}", hint="list alerts with `edgefleet drift alerts --all`")
    if alert.resolved_at is not None:
        raise Conflict(f"alert {alert_id} was resolved at {alert.resolved_at.isoformat()}")
    resolve_manually(session, alert, principal, utcnow(), body.note if body else None)
    session.commit()
    return alert_view(alert)
