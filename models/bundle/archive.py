"""Writing bundles: hash the files, sign the manifest, and lay out a deterministic tar.

The same manifest, files and key always give the same bytes: members are written in a fixed order
(``manifest.json``, ``manifest.sig``, then the files sorted by name) with mtime 0, uid/gid 0, mode
0644 and no owner names. The file appears atomically (written beside the target, then renamed),
so a reader never sees half a bundle.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import stat
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models.bundle.errors import ExtraFile, HashMismatch, MissingFile
from models.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, FileEntry, FileRole, Manifest
from models.bundle.signing import sign_manifest_bytes

CHUNK_SIZE = 1 << 20
BUNDLE_SUFFIX = ".efb"
_MEMBER_MODE = 0o644


def iter_chunks(handle: BinaryIO, limit: int | None = None) -> Iterator[bytes]:
    """Read ``handle`` in CHUNK_SIZE pieces, stopping after ``limit`` bytes when given."""
    remaining = limit
    while remaining is None or remaining > 0:
        chunk = handle.read(CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining))
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex sha256, size) of a file, streamed so that large weights never sit in memory."""
    digest = hashlib.sha256()
    size = 0
    with Path(path).open("rb") as handle:
        for chunk in iter_chunks(handle):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def file_entry(path: Path, role: FileRole = "model") -> FileEntry:
    """The manifest entry (sha256, size, role) for a file on disk."""
    digest, size = sha256_file(path)
    return FileEntry(sha256=digest, size=size, role=role)


def build_manifest_files(sources: Mapping[str, tuple[Path, FileRole]]) -> dict[str, FileEntry]:
    """``Manifest.files`` for ``{member name: (path on disk, role)}``."""
    return {name: file_entry(path, role) for name, (path, role) in sorted(sources.items())}


def pack_bundle(
    out: Path, manifest: Manifest, sources: Mapping[str, Path], private_key: Ed25519PrivateKey
) -> Path:
    """Sign ``manifest`` and write it with ``sources`` as the bundle ``out``; return ``out``.

    ``sources`` maps each name in ``manifest.files`` to its file on disk. Every file is re-hashed
    while it is copied into the tar, so a file that changed since the manifest was built (or
    while packing) is refused instead of shipped under a signature that does not match it.
    """
    _check_sources_match(manifest, sources)
    manifest_bytes = manifest.canonical_bytes()
    signature_bytes = sign_manifest_bytes(manifest_bytes, private_key)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.partial")
    try:
        with tmp.open("xb") as raw:
            with tarfile.TarFile(
                fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK_SIZE
            ) as tar:
                _add_bytes(tar, MANIFEST_NAME, manifest_bytes)
                _add_bytes(tar, SIGNATURE_NAME, signature_bytes)
                for name in sorted(manifest.files):
                    _add_source(tar, name, Path(sources[name]), manifest.files[name])
            raw.flush()
            os.fsync(raw.fileno())
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(out.parent)
    return out


def _check_sources_match(manifest: Manifest, sources: Mapping[str, Path]) -> None:
    missing = sorted(manifest.files.keys() - sources.keys())
    if missing:
        raise MissingFile(
            f"the manifest lists {missing[0]!r} but no source file was given for it",
            file=missing[0],
            hint="pass a path for every name in manifest.files",
        )
    extra = sorted(sources.keys() - manifest.files.keys())
    if extra:
        raise ExtraFile(
            f"source {extra[0]!r} is not listed in the manifest's files",
            file=extra[0],
            hint="add it to manifest.files (see build_manifest_files) or leave it out",
        )


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = _MEMBER_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))


class _HashingReader:
    """Hands a file to tarfile while hashing exactly the bytes that go into the bundle."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        return data


def _add_source(tar: tarfile.TarFile, name: str, path: Path, entry: FileEntry) -> None:
    try:
        handle = path.open("rb")
    except FileNotFoundError as exc:
        raise MissingFile(f"source file {path} for {name!r} does not exist", file=name) from exc
    with handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise MissingFile(f"source {path} for {name!r} is not a regular file", file=name)
        if info.st_size != entry.size:
            raise HashMismatch(
                f"source {path} for {name!r} is {info.st_size} bytes but the manifest says {entry.size}",
                file=name,
                expected=f"{entry.size} bytes",
                got=f"{info.st_size} bytes",
                hint="the file changed after the manifest was built: rebuild the manifest's files",
            )
        reader = _HashingReader(handle)
        try:
            tar.addfile(_tarinfo(name, entry.size), reader)
        except OSError as exc:  # tarfile's "unexpected end of data": the file shrank meanwhile
            raise HashMismatch(
                f"source {path} for {name!r} shrank while it was being packed",
                file=name,
                expected=entry.sha256,
                got="(short read)",
                hint="do not modify model files while packing; pack again",
            ) from exc
    got = reader.digest.hexdigest()
    if got != entry.sha256:
        raise HashMismatch(
            f"source {path} for {name!r} has sha256 {got}, but the manifest says {entry.sha256}",
            file=name,
            expected=entry.sha256,
            got=got,
            hint="the file changed after the manifest was built: rebuild the manifest's files",
        )


def _fsync_directory(directory: Path) -> None:
    # Makes the rename durable; not every platform lets a directory be opened, which is harmless.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
