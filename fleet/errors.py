"""Errors the fleet server raises at its edges, each with a message and what to do next.

The server process turns these into a clean message and exit code at start; the REST layer turns
``ApiError`` into ``{"error": code, "message": ..., "hint": ...}`` with its HTTP status.
"""

from __future__ import annotations

from typing import Any


class FleetError(Exception):
    """Something an operator can fix: the message says what, the hint says how."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(FleetError):
    """A server option that cannot work: a malformed address or URL, a missing key file."""


class PortInUse(FleetError):
    """A listener (the HTTP API or the embedded MQTT broker) cannot bind its address."""


class DatabaseUnavailable(FleetError):
    """The database cannot be reached or migrated."""


class ApiError(Exception):
    """An HTTP error with a stable machine code, a message and an optional hint."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.hint = hint
        self.details = details or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        if self.details:
            body["details"] = self.details
        return body


class ServiceError(FleetError):
    """A request the registry refuses; the API maps ``status_code`` and ``code`` to the response."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, hint: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.details = details or {}


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class Invalid(ServiceError):
    status_code = 422
    code = "invalid"


class Gone(ServiceError):
    """A one-time thing already used, expired or revoked (an enrollment token)."""

    status_code = 410
    code = "gone"
