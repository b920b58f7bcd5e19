"""An on-disk cache for trained reference weights, safe across processes and crashes.

Each entry is one payload file plus a small JSON sidecar holding its sha256, keyed by a
fingerprint of everything that decides the weights (the model's code, its hyper-parameters and
the framework version). So:

* a change of code, hyper-parameters or framework gives a new key, never stale weights;
* both files are written to a temporary name and renamed (atomic on POSIX), the sidecar last, so a
  crash mid-write leaves an entry whose hash does not match, which is then rebuilt;
* an exclusive ``fcntl`` lock per entry makes a second process wait while the first trains, and
  then reuse its result instead of training again or interleaving writes;
* an entry whose bytes do not match the sidecar, or that the loader cannot read, is rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

CACHE_DIR_ENV = "EDGEFLEET_CACHE_DIR"
"""When set, the zoo keeps its entries in ``$EDGEFLEET_CACHE_DIR/zoo``."""

_SIDECAR_SUFFIX = ".meta.json"
_CHUNK = 1 << 20

T = TypeVar("T")


class CacheError(RuntimeError):
    """The cache directory cannot be used; the message says which path and what to do."""


def default_cache_dir() -> Path:
    """``$EDGEFLEET_CACHE_DIR/zoo`` when the variable is set, else ``~/.cache/edgefleet/zoo``."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser() / "zoo"
    return Path.home() / ".cache" / "edgefleet" / "zoo"


def fingerprint(parts: Mapping[str, Any]) -> str:
    """A short, stable hash of JSON-serialisable ``parts`` (key order does not matter)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def source_digests(*modules: ModuleType) -> dict[str, str]:
    """The sha256 of each module's source file, by module name: code changes change the cache key."""
    digests = {}
    for module in modules:
        if module.__file__ is None:
            raise CacheError(f"module {module.__name__} has no source file to fingerprint")
        digests[module.__name__] = file_sha256(Path(module.__file__))
    return digests


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class WeightCache:
    """Payload files under ``root``, named ``{name}-{key}{suffix}``, each guarded by a lock file."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else default_cache_dir()

    def entry_path(self, name: str, key: str, suffix: str) -> Path:
        return self.root / f"{name}-{key}{suffix}"

    def is_valid(self, path: Path) -> bool:
        """True when ``path`` and its sidecar exist and the payload's sha256 matches the sidecar."""
        sidecar = _sidecar(path)
        try:
            recorded = json.loads(sidecar.read_text())
            return bool(recorded["sha256"] == file_sha256(path) and recorded["size"] == path.stat().st_size)
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def invalidate(self, path: Path) -> None:
        """Forget an entry (sidecar first, so a reader never trusts a half-removed entry)."""
        for stale in (_sidecar(path), path):
            stale.unlink(missing_ok=True)

    def get_or_create(self, name: str, key: str, suffix: str, produce: Callable[[Path], None]) -> Path:
        """The path of a valid entry, calling ``produce(tmp_path)`` to write one if it is missing or corrupt.

        ``produce`` writes the payload to the path it is given (which ends in ``suffix``, as some
        savers insist on); the cache then records its hash and moves it into place.
        """
        path = self.entry_path(name, key, suffix)
        with self._locked(path):
            if self.is_valid(path):
                return path
            self.invalidate(path)
            self._write(path, produce)
        return path

    def load(
        self, name: str, key: str, suffix: str, produce: Callable[[Path], None], read: Callable[[Path], T]
    ) -> T:
        """``read`` the entry, rebuilding it once if it is corrupt or ``read`` rejects it."""
        path = self.get_or_create(name, key, suffix, produce)
        try:
            return read(path)
        except Exception:
            # The bytes matched the sidecar but do not load (say, written by a broken producer):
            # rebuild once. A second failure is a real bug and propagates.
            with self._locked(path):
                self.invalidate(path)
            return read(self.get_or_create(name, key, suffix, produce))

    def _write(self, path: Path, produce: Callable[[Path], None]) -> None:
        with _temporary_sibling(path, path.suffix if path.suffix else ".tmp") as tmp:
            produce(tmp)
            if not tmp.is_file():
                raise CacheError(f"the producer of {path.name} wrote nothing to {tmp}")
            _fsync(tmp)
            meta = {"sha256": file_sha256(tmp), "size": tmp.stat().st_size, "name": path.name}
            tmp.replace(path)
        with _temporary_sibling(path, _SIDECAR_SUFFIX) as tmp_meta:
            tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True))
            _fsync(tmp_meta)
            tmp_meta.replace(_sidecar(path))

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = path.with_name(path.name + ".lock").open("a+b")
        except OSError as exc:
            raise CacheError(
                f"cannot use the model cache at {self.root}: {exc}. "
                f"Set {CACHE_DIR_ENV} to a writable directory."
            ) from exc
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + _SIDECAR_SUFFIX)


@contextlib.contextmanager
def _temporary_sibling(path: Path, suffix: str) -> Iterator[Path]:
    """A free temporary path next to ``path`` (same filesystem: rename is atomic), removed if left over."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    # Some savers refuse to overwrite, or append to, an existing file: hand them a free path.
    tmp.unlink()
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
