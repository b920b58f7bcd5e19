"""Errors the serving layer raises, each tied to the gRPC status a client receives.

The names of ``grpc.StatusCode`` members are stored as strings, so this module (and the
in-process API that raises the same errors) does not import grpc. Every message says what was
wrong and, in its hint, what to do next: these are the texts a client reads.
"""

from __future__ import annotations

from typing import ClassVar

from edge_agent.runtimes.errors import InferenceFailed, InvalidInput, RuntimeBackendError


class ServingError(Exception):
    """Base class: a request or an operation the agent refuses, with the gRPC status to answer with."""

    status: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message if hint is None else f"{message} ({hint})")
        self.message = message
        self.hint = hint


class ModelNotFound(ServingError):
    """No model (or no such version of it) is loaded, or none is known by that name."""

    status = "NOT_FOUND"


class InvalidRequest(ServingError):
    """The request does not fit the model: names, datatypes, shapes, byte counts, parameters."""

    status = "INVALID_ARGUMENT"


class InferenceError(ServingError):
    """The runtime failed while running a valid request; the model stays loaded."""

    status = "INTERNAL"


class LoadFailed(ServingError):
    """A model could not be loaded: its bundle was refused or its runtime could not open it."""

    status = "FAILED_PRECONDITION"


class ServerUnavailable(ServingError):
    """The agent is shutting down and takes no new work."""

    status = "UNAVAILABLE"


class AddressInUse(ServingError):
    """A listening address cannot be bound (taken, or not ours to take)."""

    status = "UNAVAILABLE"


def from_runtime_error(exc: RuntimeBackendError) -> ServingError:
    """The serving error for a runtime backend's error: the client's fault or the runtime's."""
    if isinstance(exc, InvalidInput):
        return InvalidRequest(exc.message, hint=exc.hint)
    if isinstance(exc, InferenceFailed):
        return InferenceError(exc.message, hint=exc.hint or "the model is still loaded; later requests run")
    return LoadFailed(exc.message, hint=exc.hint)
