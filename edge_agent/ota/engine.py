"""What the updater needs from the engine: a repository that pins a default version per model.

``ModelRepository.pin_default`` routes requests that name no version to the pinned version while
it is loaded: the updater loads a new version beside the serving one, checks it, then switches
with one pin change. Build the engine with ``InferenceEngine.create``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class DefaultPinning(Protocol):
    """What the updater needs from the engine's repository."""

    def pin_default(self, name: str, version: str | None) -> None: ...

    def pinned_default(self, name: str) -> str | None: ...
