"""Errors a runtime backend raises: each says what went wrong and what to do next.

Every error carries a ``hint`` (the next step for an operator or a client), so the CLI can print
it like a ``CLIError`` and the gRPC server can map the class to a status code: ``InvalidInput`` is
the client's fault (INVALID_ARGUMENT), ``InferenceFailed`` the model's or the runtime's (INTERNAL),
the others happen while opening a session (the model cannot be served: UNAVAILABLE).
"""

from __future__ import annotations


class RuntimeBackendError(Exception):
    """Base class of every error raised by ``edge_agent.runtimes``."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message if hint is None else f"{message} ({hint})")
        self.message = message
        self.hint = hint


class RuntimeUnavailable(RuntimeBackendError):
    """The Python package of the runtime is not installed."""


class RuntimeConfigError(RuntimeBackendError):
    """The runtime options are wrong: an unknown provider, a profile without a runtime for the format."""


class ModelLoadFailed(RuntimeBackendError):
    """The model file is missing, unreadable or rejected by the runtime."""


class SignatureMismatch(RuntimeBackendError):
    """The model's real inputs and outputs differ from what the manifest says."""


class InvalidInput(RuntimeBackendError):
    """A request does not fit the model's signature: unknown or missing name, dtype, rank or shape."""


class InferenceFailed(RuntimeBackendError):
    """The runtime raised while running the model."""
