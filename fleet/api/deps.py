"""FastAPI dependencies: the server context, database sessions, and who is calling with which role."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from fleet.auth import Principal, Role
from fleet.context import ServerContext
from fleet.devices.registry import check_device_password
from fleet.errors import ApiError
from fleet.tokens import authenticate


def get_context(request: Request) -> ServerContext:
    context: ServerContext = request.app.state.fleet
    return context


def db_session(context: ServerContext = Depends(get_context)) -> Iterator[Session]:
    """A session for one request. Handlers that change anything call ``session.commit()``
    themselves, before they answer, so a client never reads its own write too early."""
    with context.db.session() as session:
        yield session


def _credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return scheme.strip().lower(), value.strip()


def _unauthorized(context: ServerContext, message: str, reason: str) -> ApiError:
    context.metrics.auth_failures.labels(reason).inc()
    return ApiError(
        401,
        "unauthorized",
        message,
        hint="send 'Authorization: Bearer TOKEN'; the first admin token is in the server's "
        "<data-dir>/admin.token, and `edgefleet tokens create` makes more",
        headers={"WWW-Authenticate": 'Bearer realm="edgefleet"'},
    )


def _token_principal(context: ServerContext, token: str) -> Principal | None:
    with context.db.session() as session:
        return authenticate(session, token)


def current_principal(request: Request, context: ServerContext = Depends(get_context)) -> Principal:
    """The caller behind an API token; 401 without one, or with one the server does not know."""
    credentials = _credentials(request)
    if credentials is None:
        raise _unauthorized(context, "no API token given", "missing")
    scheme, value = credentials
    if scheme != "bearer":
        raise _unauthorized(context, f"unsupported authorization scheme {scheme!r}; use Bearer", "scheme")
    principal = _token_principal(context, value)
    if principal is None:
        raise _unauthorized(context, "the API token is unknown or revoked", "invalid")
    return principal


def require(role: Role) -> Callable[..., Principal]:
    """A dependency that lets through callers whose role is ``role`` or higher; 403 for the rest."""

    def dependency(
        principal: Principal = Depends(current_principal), context: ServerContext = Depends(get_context)
    ) -> Principal:
        if not principal.can(role):
            context.metrics.auth_failures.labels("forbidden").inc()
            raise ApiError(
                403,
                "forbidden",
                f"token {principal.name!r} has the {principal.role} role; this needs {role} or higher",
                hint=f"ask an admin for one: `edgefleet tokens create --role {role} --name NAME`",
                details={"role": str(principal.role), "required": str(role)},
            )
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency


def bundle_reader(request: Request, context: ServerContext = Depends(get_context)) -> Principal:
    """Bundle downloads: any API token, or a device's own MQTT credentials over HTTP Basic."""
    credentials = _credentials(request)
    if credentials is not None and credentials[0] == "basic":
        try:
            device_id, _, password = (
                base64.b64decode(credentials[1], validate=True).decode("utf-8").partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise _unauthorized(context, "malformed Basic credentials", "malformed") from None
        with context.db.session() as session:
            if check_device_password(session, device_id, password):
                return Principal(name=device_id, role=None, device_id=device_id)
        raise _unauthorized(context, "unknown device or wrong password", "invalid")
    principal = current_principal(request, context)
    if not principal.can(Role.VIEWER):  # pragma: no cover - every token has at least viewer
        raise ApiError(403, "forbidden", "this token may not download bundles")
    return principal


Viewer = Depends(require(Role.VIEWER))
Operator = Depends(require(Role.OPERATOR))
Admin = Depends(require(Role.ADMIN))
