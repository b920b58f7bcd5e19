"""The model repository: every known model version, its state, and routing requests to loaded ones.

A version becomes known when its bundle is installed (``add``); ``load`` opens its runtime session
and ``unload`` drains and closes it. A request names a model and, optionally, a version; without
one it goes to the highest loaded version. So a swap is: load the new version (requests start
going to it), then unload the old one (it refuses new requests, finishes the ones in flight, and
closes). No request is dropped or failed by a swap.

Two locks: ``_lock`` guards the routing table and is held only for dictionary work, so requests
never wait behind a slow load; ``_admin`` serialises loads and unloads with each other.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

from edge_agent.runtimes import RuntimeBackendError, RuntimeSession
from edge_agent.serving.errors import LoadFailed, ModelNotFound
from edge_agent.serving.installer import InstalledBundle
from edge_agent.serving.model import BatchingConfig, ServedModel
from models.versioning import parse_version

log = logging.getLogger("edgefleet.agent")

SessionOpener = Callable[[InstalledBundle], RuntimeSession]


class ModelState(StrEnum):
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: ModelState
    reason: str = ""


@dataclass(eq=False)
class _Entry:
    installed: InstalledBundle
    state: ModelState = ModelState.UNAVAILABLE
    reason: str = "not loaded yet"
    model: ServedModel | None = None


class ModelRepository:
    """Known model versions by name, and the loaded ones that requests are routed to."""

    def __init__(
        self,
        opener: SessionOpener,
        batching: BatchingConfig = BatchingConfig(),
        *,
        drain_timeout_s: float = 30.0,
    ) -> None:
        self._opener = opener
        self._batching = batching
        self._drain_timeout_s = drain_timeout_s
        self._entries: dict[str, dict[str, _Entry]] = {}
        self._pins: dict[str, str] = {}
        self._lock = threading.Lock()
        self._admin = threading.RLock()

    # --- administration -------------------------------------------------------------------------

    def add(self, installed: InstalledBundle) -> bool:
        """Make a version known; False when that very bundle is known already.

        A different bundle under a known name and version is refused: versions are immutable.
        """
        with self._admin, self._lock:
            versions = self._entries.setdefault(installed.name, {})
            existing = versions.get(installed.version)
            if existing is None:
                versions[installed.version] = _Entry(installed)
                return True
            if existing.installed.sha256 == installed.sha256:
                if existing.state is ModelState.UNAVAILABLE:
                    existing.installed = installed  # the same bundle, extracted elsewhere (an A/B slot)
                return False
            raise LoadFailed(
                f"model {installed.name!r} version {installed.version} is already known from another "
                f"bundle ({existing.installed.source.name}, sha256 {existing.installed.sha256[:12]}...)",
                hint="a version's contents never change: publish the new bundle under a higher version",
            )

    def pin_default(self, name: str, version: str | None) -> None:
        """Route requests naming no version to ``version`` while it is loaded (None: the highest).

        The OTA updater checks a new version beside the serving one, then switches with one pin
        change: requests in flight finish on the version they leased, new ones take the pinned one.
        A pinned version that is not loaded is ignored, so a stale pin never hides a model.
        """
        with self._lock:
            if version is None:
                self._pins.pop(name, None)
            else:
                self._pins[name] = version

    def pinned_default(self, name: str) -> str | None:
        with self._lock:
            return self._pins.get(name)

    def load(self, name: str, version: str | None = None) -> list[str]:
        """Load ``version`` of ``name``, or every known version of it; returns the versions now loaded."""
        with self._admin:
            entries = self._select(name, version)
            loaded: list[str] = []
            for entry in entries:
                if entry.state is not ModelState.READY:
                    self._load_entry(entry)
                loaded.append(entry.installed.version)
            return loaded

    def _load_entry(self, entry: _Entry) -> None:
        installed = entry.installed
        with self._lock:
            entry.state, entry.reason = ModelState.LOADING, ""
        try:
            session = self._opener(installed)
        except RuntimeBackendError as exc:
            self._mark_unavailable(entry, exc.message)
            raise LoadFailed(
                f"cannot load {installed.name} {installed.version}: {exc.message}", hint=exc.hint
            ) from exc
        except Exception as exc:
            self._mark_unavailable(entry, str(exc))
            raise LoadFailed(
                f"cannot load {installed.name} {installed.version}: {exc}",
                hint="check the bundle runs with `edgefleet bundle verify` and the runtime is installed",
            ) from exc
        try:
            model = ServedModel(installed, session, self._batching)
        except BaseException:
            session.close()
            self._mark_unavailable(entry, "could not set up serving")
            raise
        with self._lock:
            entry.model, entry.state, entry.reason = model, ModelState.READY, ""
        log.info(
            "loaded %s %s (%s on %s%s)",
            installed.name,
            installed.version,
            model.platform,
            session.provider,
            ", dynamic batching" if model.batched else "",
        )
        for note in session.fallbacks:
            log.warning("%s %s: %s", installed.name, installed.version, note)

    def _mark_unavailable(self, entry: _Entry, reason: str) -> None:
        with self._lock:
            entry.state, entry.reason, entry.model = ModelState.UNAVAILABLE, reason, None

    def unload(self, name: str, version: str | None = None) -> list[str]:
        """Unload ``version`` of ``name`` (or every loaded version), after its requests in flight finish."""
        with self._admin:
            with self._lock:
                entries = [e for e in self._select_locked(name, version) if e.state is ModelState.READY]
                for entry in entries:
                    entry.state = ModelState.UNLOADING  # no longer routed to: new requests go elsewhere
            for entry in entries:
                model = entry.model
                assert model is not None
                if not model.drain(self._drain_timeout_s):
                    log.warning(
                        "%s %s: %d request(s) still running after %.0f s; closing anyway",
                        model.name,
                        model.version,
                        model.in_flight,
                        self._drain_timeout_s,
                    )
                model.close()
                with self._lock:
                    entry.model, entry.state, entry.reason = None, ModelState.UNAVAILABLE, "unloaded"
                log.info("unloaded %s %s", model.name, model.version)
            return [entry.installed.version for entry in entries]

    def close(self) -> None:
        """Unload every model (each drains first)."""
        with self._admin:
            for name in self.names():
                self.unload(name)

    # --- routing --------------------------------------------------------------------------------

    @contextmanager
    def lease(self, name: str, version: str = "") -> Iterator[ServedModel]:
        """The loaded model a request runs on, held until the request is done."""
        with self._lock:
            model = self._route(name, version)
            if not model.try_acquire():  # cannot happen while READY; kept as a guard
                raise ModelNotFound(f"model {name!r} version {model.version} is unloading")
        try:
            yield model
        finally:
            model.release()

    def _route(self, name: str, version: str) -> ServedModel:
        versions = self._entries.get(name)
        if not versions:
            known = sorted(self._entries) or ["none"]
            raise ModelNotFound(
                f"no model named {name!r}; known models: {', '.join(known)}",
                hint="check the name, or load its bundle with RepositoryModelLoad",
            )
        ready = {
            v: e.model for v, e in versions.items() if e.state is ModelState.READY and e.model is not None
        }
        if version:
            model = ready.get(version)
            if model is None:
                state = versions[version].state.value if version in versions else "unknown"
                raise ModelNotFound(
                    f"model {name!r} has no version {version!r} loaded (that version is {state}); "
                    f"loaded versions: {', '.join(_sorted_versions(ready)) or 'none'}",
                    hint="leave the version empty for the latest, or load that version first",
                )
            return model
        if not ready:
            raise ModelNotFound(
                f"model {name!r} is not loaded (known versions: {', '.join(_sorted_versions(versions))})",
                hint="load it with RepositoryModelLoad",
            )
        return ready[_default_of(ready, self._pins.get(name))]

    # --- questions ------------------------------------------------------------------------------

    def default_version(self, name: str) -> str | None:
        """The version a request naming none gets now (the pinned one, else the highest ready)."""
        with self._lock:
            versions = self._entries.get(name, {})
            ready = [v for v, e in versions.items() if e.state is ModelState.READY and e.model is not None]
            return _default_of(ready, self._pins.get(name)) if ready else None

    def is_ready(self, name: str, version: str = "") -> bool:
        with self._lock:
            try:
                self._route(name, version)
            except ModelNotFound:
                return False
            return True

    def ready_versions(self, name: str) -> list[str]:
        with self._lock:
            versions = self._entries.get(name, {})
            return _sorted_versions({v: e for v, e in versions.items() if e.state is ModelState.READY})

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    def loaded(self, name: str = "", version: str = "") -> list[ServedModel]:
        """Loaded models, all or by name (and version); NOT_FOUND when a named one is not loaded."""
        with self._lock:
            if name:
                if version:
                    return [self._route(name, version)]
                self._route(name, "")  # raises NOT_FOUND with the right message
                names = [name]
            else:
                names = sorted(self._entries)
            models = []
            for model_name in names:
                versions = self._entries[model_name]
                for model_version in _sorted_versions(versions):
                    entry = versions[model_version]
                    if entry.state is ModelState.READY and entry.model is not None:
                        models.append(entry.model)
            return models

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        with self._lock:
            rows = []
            for name in sorted(self._entries):
                versions = self._entries[name]
                for version in _sorted_versions(versions):
                    entry = versions[version]
                    if ready_only and entry.state is not ModelState.READY:
                        continue
                    reason = "" if entry.state is ModelState.READY else entry.reason
                    rows.append(IndexEntry(name, version, entry.state, reason))
            return rows

    # --- helpers --------------------------------------------------------------------------------

    def _select(self, name: str, version: str | None) -> list[_Entry]:
        with self._lock:
            return self._select_locked(name, version)

    def _select_locked(self, name: str, version: str | None) -> list[_Entry]:
        versions = self._entries.get(name)
        if not versions:
            known = sorted(self._entries) or ["none"]
            raise ModelNotFound(
                f"no model named {name!r} in the repository; known models: {', '.join(known)}",
                hint="pass the bundle to load with the 'bundle' parameter, or start the agent with --bundle",
            )
        if version is None or version == "":
            return [versions[v] for v in _sorted_versions(versions)]
        if version not in versions:
            raise ModelNotFound(
                f"model {name!r} has no version {version!r}; known versions: "
                f"{', '.join(_sorted_versions(versions))}",
                hint="pass the bundle of that version with the 'bundle' parameter",
            )
        return [versions[version]]


def _default_of(ready: Iterable[str], pinned: str | None) -> str:
    """The pinned version when it is ready, else the highest ready one (``ready`` is not empty)."""
    versions = list(ready)
    return pinned if pinned in versions else _sorted_versions(versions)[-1]


def _sorted_versions(versions: Iterable[str]) -> list[str]:
    """Versions in semantic-version order, lowest first."""
    return sorted(versions, key=parse_version)
