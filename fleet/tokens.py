"""API tokens in the database: create (shown once), authenticate, revoke, and the first admin.

On first start the server makes an admin token and writes it to ``<data-dir>/admin.token`` (mode
0600), so the operator who started the server, and only they, can use it. With
``--admin-token-file FILE`` the token comes from that file instead (a secret store can put it
there); if the file does not exist yet, the new token is written to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet.auth import Principal, Role, display_prefix, generate_token, hash_token
from fleet.db.models import ApiToken
from fleet.db.types import utcnow
from fleet.errors import ConfigError, Conflict, NotFound
from fleet.secret_files import write_secret_file

MIN_BOOTSTRAP_TOKEN_LENGTH: Final = 32
MAX_TOKEN_LENGTH: Final = 512
# Writing last_used_at on every request would turn every read into a write; once a minute is
# precise enough to tell a live token from a forgotten one.
LAST_USED_RESOLUTION: Final = timedelta(minutes=1)


def create_api_token(
    session: Session, *, name: str, role: Role, created_by: str | None, token: str | None = None
) -> tuple[ApiToken, str]:
    """Store a new token's hash; return the row and the token (the only time it is known)."""
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise Conflict(
            f"a token named {name!r} already exists",
            hint="pick another --name, or revoke the old one with `edgefleet tokens revoke`",
        )
    secret = token or generate_token()
    row = ApiToken(
        name=name,
        role=role.value,
        token_hash=hash_token(secret),
        prefix=display_prefix(secret),
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row, secret


def authenticate(session: Session, token: str, *, now: datetime | None = None) -> Principal | None:
    """The principal behind a token, or None when it is unknown or revoked."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        return None
    now = now or utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
    return Principal(name=row.name, role=Role(row.role), token_id=row.id)


def list_tokens(session: Session, *, include_revoked: bool = False) -> Sequence[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return session.scalars(query).all()


def revoke_token(session: Session, name_or_id: str) -> ApiToken:
    query = select(ApiToken).where(ApiToken.name == name_or_id)
    if name_or_id.isdigit():
        query = select(ApiToken).where((ApiToken.id == int(name_or_id)) | (ApiToken.name == name_or_id))
    row = session.scalars(query).first()
    if row is None:
        raise NotFound(f"no API token {name_or_id!r}", hint="list them with `edgefleet tokens ls`")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def active_admin_count(session: Session) -> int:
    rows = session.scalars(
        select(ApiToken.id).where(ApiToken.role == Role.ADMIN.value, ApiToken.revoked_at.is_(None))
    ).all()
    return len(rows)


@dataclass(frozen=True)
class AdminBootstrap:
    """What the first-start check did: nothing, registered a given token, or made a new one."""

    action: str  # "none" | "registered" | "created"
    path: Path | None


def ensure_admin_token(session: Session, *, default_path: Path, token_file: Path | None) -> AdminBootstrap:
    """Make sure an operator can get in: see the module docstring for the rules."""
    if token_file is not None and token_file.exists():
        token = _read_token_file(token_file)
        existing = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        if existing is not None:
            if existing.revoked_at is not None or existing.role != Role.ADMIN.value:
                raise ConfigError(
                    f"the token in {token_file} is {'revoked' if existing.revoked_at else existing.role}, "
                    "not an active admin token",
                    hint="put an admin token in that file, or remove the file to have a new one written",
                )
            return AdminBootstrap("none", token_file)
        create_api_token(
            session, name=_free_name(session, "admin"), role=Role.ADMIN, created_by="server", token=token
        )
        return AdminBootstrap("registered", token_file)
    if token_file is None and active_admin_count(session) > 0:
        return AdminBootstrap("none", default_path if default_path.exists() else None)
    path = token_file or default_path
    _, token = create_api_token(
        session, name=_free_name(session, "admin"), role=Role.ADMIN, created_by="server"
    )
    write_secret_file(path, token + "\n")
    return AdminBootstrap("created", path)


def _read_token_file(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the admin token file {path}: {exc}") from exc
    if (
        len(token) < MIN_BOOTSTRAP_TOKEN_LENGTH
        or len(token) > MAX_TOKEN_LENGTH
        or any(c.isspace() for c in token)
    ):
        raise ConfigError(
            f"{path} must hold one token of {MIN_BOOTSTRAP_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} "
            "characters without spaces",
            hint="remove the file and the server writes a fresh admin token there",
        )
    return token


def _free_name(session: Session, base: str) -> str:
    taken = set(session.scalars(select(ApiToken.name).where(ApiToken.name.startswith(base))).all())
    if base not in taken:
        return base
    return next(f"{base}-{n}" for n in range(2, len(taken) + 3) if f"{base}-{n}" not in taken)
