"""The edge agent: serves a bundle's model on a device and reports to the fleet.

This package must stay light: importing it loads no runtime and no training framework. The
runtime backends live in ``edge_agent.runtimes``; each imports its runtime package only when a
session opens. ``open_session`` and ``open_bundle_session`` are reachable from here lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgefleet import __version__  # one version for the whole distribution

if TYPE_CHECKING:
    from edge_agent.runtimes import open_bundle_session, open_session

__all__ = ["__version__", "open_bundle_session", "open_session"]


def __getattr__(name: str) -> Any:
    if name in ("open_session", "open_bundle_session"):
        from edge_agent import runtimes

        return getattr(runtimes, name)
    raise AttributeError(f"module 'edge_agent' has no attribute {name!r}")
