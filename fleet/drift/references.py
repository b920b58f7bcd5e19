"""The reference statistics of the bundles in the registry, read once from the stored bundle files.

A bundle names its frozen bins in the manifest (``reference_stats``, normally
``reference_stats.json``). The registry stores the verified ``.efb`` under its sha256, and a
stored bundle never changes, so its reference is read the first time drift analysis needs it
(the member's sha256 is checked against the manifest the server verified at push time) and kept
in memory, keyed by the bundle's sha256. Windows say which bins they were counted into (the
reference's fingerprint), so a model version whose bundles differ per profile still matches
each window to its own reference.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
import threading
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet.db.models import Bundle
from fleet.registry.store import BundleStore
from models.stats import ReferenceStats

log = logging.getLogger(__name__)

MAX_REFERENCE_BYTES = 32 * 1024 * 1024
CACHE_SIZE = 256


class ReferenceUnavailable(Exception):
    """A bundle's reference statistics could not be read; the message says why."""


@dataclass(frozen=True)
class BundleReference:
    sha256: str
    profile: str
    stats: ReferenceStats

    @property
    def fingerprint(self) -> str:
        return self.stats.fingerprint()


class ReferenceCatalog:
    """``for_version(session, name, version)``: fingerprint → reference, for every bundle of it."""

    def __init__(self, store: BundleStore, *, cache_size: int = CACHE_SIZE) -> None:
        self.store = store
        self._cache: OrderedDict[str, ReferenceStats | None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def for_version(self, session: Session, name: str, version: str) -> dict[str, BundleReference]:
        bundles = session.scalars(select(Bundle).where(Bundle.name == name, Bundle.version == version)).all()
        found: dict[str, BundleReference] = {}
        for bundle in sorted(bundles, key=lambda b: b.profile):
            try:
                stats = self.load(bundle)
            except ReferenceUnavailable as exc:
                log.warning("drift: %s", exc)
                continue
            if stats is not None:
                found.setdefault(stats.fingerprint(), BundleReference(bundle.sha256, bundle.profile, stats))
        return found

    def load(self, bundle: Bundle) -> ReferenceStats | None:
        """The bundle's reference (None when it carries none), from the cache or the stored file."""
        with self._lock:
            if bundle.sha256 in self._cache:
                self._cache.move_to_end(bundle.sha256)
                return self._cache[bundle.sha256]
        stats = read_reference(self.store, bundle)
        with self._lock:
            self._cache[bundle.sha256] = stats
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return stats


def read_reference(store: BundleStore, bundle: Bundle) -> ReferenceStats | None:
    manifest = bundle.manifest or {}
    member = manifest.get("reference_stats")
    if not member:
        return None
    entry = (manifest.get("files") or {}).get(member) or {}
    where = f"bundle {bundle.name} {bundle.version} ({bundle.profile}, {bundle.sha256[:12]})"
    path = store.path_for(bundle.sha256)
    try:
        with tarfile.open(path, mode="r:") as archive:
            info = archive.getmember(member)
            if not info.isreg() or info.size > MAX_REFERENCE_BYTES:
                raise ReferenceUnavailable(f"{where}: {member} is not a regular file of sane size")
            handle = archive.extractfile(info)
            if handle is None:
                raise ReferenceUnavailable(f"{where}: {member} cannot be read")
            data = handle.read()
    except (OSError, KeyError, tarfile.TarError) as exc:
        raise ReferenceUnavailable(f"{where}: cannot read {member} from {path}: {exc}") from exc
    expected = entry.get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise ReferenceUnavailable(
            f"{where}: {member} does not match the manifest's sha256; the stored file changed"
        )
    try:
        return ReferenceStats.from_dict(json.loads(data))
    except (ValueError, KeyError, TypeError) as exc:
        raise ReferenceUnavailable(f"{where}: {member} is not valid reference statistics: {exc}") from exc
