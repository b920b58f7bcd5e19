"""The audit log: who did what, when, to what. Written in the same transaction as the change."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet.auth import Principal
from fleet.db.models import AuditEntry


def record_audit(
    session: Session,
    actor: Principal | str,
    action: str,
    target: str | None = None,
    *,
    details: dict[str, Any] | None = None,
    outcome: str = "ok",
    at: datetime | None = None,
) -> AuditEntry:
    """Add an entry to the session; it commits (or rolls back) with the change it describes."""
    entry = AuditEntry(
        actor=actor.actor if isinstance(actor, Principal) else actor,
        actor_role=actor.role.value if isinstance(actor, Principal) and actor.role else None,
        action=action,
        target=target,
        outcome=outcome,
        details=details or {},
    )
    if at is not None:
        entry.at = at
    session.add(entry)
    return entry


def list_audit(
    session: Session,
    *,
    limit: int = 100,
    action: str | None = None,
    actor: str | None = None,
    target: str | None = None,
    before_id: int | None = None,
) -> Sequence[AuditEntry]:
    """Newest first; ``before_id`` pages backwards."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEntry.action.startswith(action, autoescape=True))
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if target:
        query = query.where(AuditEntry.target == target)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return session.scalars(query).all()
