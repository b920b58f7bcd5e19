"""The engine the updater drives: ``InferenceEngine`` whose repository pins a default version.

``ModelRepository.pin_default`` routes requests that name no version to the pinned version while
it is loaded: the updater loads a new version beside the serving one, checks it, then switches
with one pin change. ``DefaultPinning`` names what the updater relies on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.runtimes import RuntimeSession
from edge_agent.serving import (
    BatchingConfig,
    BundleInstaller,
    InferenceEngine,
    InstalledBundle,
    ModelRepository,
)
from edge_agent.serving.engine import profile_opener
from hw_profiles.schema import HardwareProfile


@runtime_checkable
class DefaultPinning(Protocol):
    """What the updater needs from the engine's repository."""

    def pin_default(self, name: str, version: str | None) -> None: ...

    def pinned_default(self, name: str) -> str | None: ...


def create_engine(
    *,
    data_dir: Path,
    trusted_keys: Sequence[Ed25519PublicKey],
    profile: HardwareProfile | None = None,
    batching: BatchingConfig = BatchingConfig(),
    drain_timeout_s: float = 30.0,
    opener: Callable[[InstalledBundle], RuntimeSession] | None = None,
) -> InferenceEngine:
    """``InferenceEngine.create``, with an optional session opener (tests inject failures)."""
    repository = ModelRepository(opener or profile_opener(profile), batching, drain_timeout_s=drain_timeout_s)
    return InferenceEngine(repository, BundleInstaller(data_dir, trusted_keys))
