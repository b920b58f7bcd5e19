"""Which version of a model a device runs, read from its last status. Pure.

A status lists every *loaded* version of each model (``models``), and the updater's slots and
state (``ota``). Most of the time one version of a model is loaded. While the updater installs a
version, or goes back to one after an abort, two are: the one being installed is loaded beside
the one serving from ``staged`` on, it takes over the requests at ``switching`` and keeps them
through ``watching``, and the other is unloaded only at ``committed`` (or the new one at
``rolled_back``). The version the device runs is the one requests naming no version get:

- one version loaded: that one;
- two loaded: the one being installed (the version in the slot that is not the active one) once
  the updater switched to it (``switching``, ``watching``, ``committed``), the other one before
  that and after a roll-back;
- anything else (no slot information, more versions): the ingest's summary (``devices.models``).

Agents that flag the version serving by default (``ModelState.default``) are taken at their word;
the rules above read the statuses of agents that do not.

``alone`` says whether the version is the only one loaded, i.e. no update is in flight: an
update or a revert in its watch window may still roll back, so the controller counts a device
as having gone back only once the previous version runs alone.

A device that never sent a status (or a status from an agent that reports no models list) has
only the ingest's summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SERVING_NEW = frozenset({"switching", "watching", "committed"})


@dataclass(frozen=True)
class Running:
    version: str | None  # the version requests naming none get, as far as the status says
    alone: bool  # the only version of the model loaded: no update in flight

    @property
    def settled(self) -> str | None:
        """The version, when it runs alone."""
        return self.version if self.alone else None


def running_version(status: Any, model: str, summary: str | None) -> Running:
    """What the device runs of ``model``, from its last ``status`` (the stored JSON payload), or
    ``summary`` (the ingest's ``devices.models`` entry) when the status cannot say."""
    if not isinstance(status, Mapping) or not isinstance(status.get("models"), list):
        return Running(summary, True)
    loaded = _loaded(status["models"], model)
    if len(loaded) <= 1:
        return Running(loaded[0] if loaded else None, True)
    flagged = _flagged_default(status["models"], model)
    if flagged in loaded:
        return Running(flagged, False)
    found = status.get("ota")
    ota: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    installing = _installing(ota, model)
    if installing in loaded:
        if ota.get("state") in SERVING_NEW:
            return Running(installing, False)
        others = [v for v in loaded if v != installing]
        if len(others) == 1:
            return Running(others[0], False)
    return Running(summary if summary in loaded else loaded[-1], False)


def _loaded(entries: list[Any], model: str) -> list[str]:
    versions: list[str] = []
    for entry in entries:
        if not isinstance(entry, Mapping) or entry.get("name") != model or entry.get("ready") is False:
            continue
        version = entry.get("version")
        if isinstance(version, str) and version not in versions:
            versions.append(version)
    return versions


def _flagged_default(entries: list[Any], model: str) -> str | None:
    """The version the agent itself says serves requests naming none (``ModelState.default``)."""
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("name") == model and entry.get("default") is True:
            version = entry.get("version")
            return version if isinstance(version, str) else None
    return None


def _installing(ota: Mapping[str, Any], model: str) -> str | None:
    """The version in the model's slot that is not the active one (the updater stages there)."""
    slots = (ota.get("slots") or {}).get(model) if isinstance(ota.get("slots"), Mapping) else None
    if not isinstance(slots, Mapping):
        return None
    active = slots.get("active")
    versions = [
        record.get("version")
        for name, record in slots.items()
        if name != "active" and name != active and isinstance(record, Mapping)
    ]
    return versions[0] if len(versions) == 1 and isinstance(versions[0], str) else None
