"""``/api/v1/audit``: the audit log, newest first."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from fleet.api.deps import Viewer, db_session
from fleet.api.schemas import API_PREFIX, AuditRecord
from fleet.audit import list_audit
from fleet.auth import Principal

router = APIRouter(prefix=API_PREFIX, tags=["audit"])


@router.get("/audit", response_model=list[AuditRecord], summary="Audit log entries, newest first")
def get_audit(
    limit: int = Query(100, ge=1, le=1000),
    action: str | None = Query(None, description="Entries whose action starts with this, e.g. 'model.'"),
    actor: str | None = Query(None, description="e.g. token:admin or device:cam-01"),
    target: str | None = Query(None, description="What the entry is about, e.g. a rollout id"),
    before_id: int | None = Query(None, description="Page backwards: entries older than this id"),
    _: Principal = Viewer,
    session: Session = Depends(db_session),
) -> list[AuditRecord]:
    rows = list_audit(session, limit=limit, action=action, actor=actor, target=target, before_id=before_id)
    return [AuditRecord.model_validate(row) for row in rows]
