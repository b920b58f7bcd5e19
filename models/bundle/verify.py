"""Reading bundles without trusting them: inspect, verify, and extract.

Verification runs in a fixed order, cheapest and most dangerous first, and stops at the first
problem with its own error class (see ``docs/bundle-format.md``):

1. the file is an uncompressed tar, complete, and every member header is safe: a plain relative
   name (UnsafePath), a regular file (LinkMember, UnsupportedMember), within the size limits
   (OversizedMember), not cut short (MalformedBundle); ``manifest.json`` comes first;
2. ``manifest.sig`` exists (MissingSignature), names a trusted key (UntrustedKey) and verifies over
   the exact bytes of ``manifest.json`` (BadSignature); only then is the manifest parsed
   (MalformedManifest), so untrusted bytes never reach the schema of a verifying reader;
3. the members are exactly the manifest's files (MissingFile, ExtraFile) and each one's size and
   sha256 match (HashMismatch).

Nothing is extracted until all of that holds; extraction then writes each verified regular file
itself (never ``tarfile.extractall``), re-hashing what it writes and what landed on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from models.bundle.archive import CHUNK_SIZE, iter_chunks
from models.bundle.errors import (
    BadSignature,
    DestinationNotEmpty,
    ExtractionFailed,
    ExtraFile,
    HashMismatch,
    LinkMember,
    MalformedBundle,
    MalformedManifest,
    MissingFile,
    MissingSignature,
    OversizedMember,
    UnsafePath,
    UnsupportedMember,
)
from models.bundle.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    SIGNATURE_NAME,
    FileEntry,
    Manifest,
    member_name_problem,
    member_names_conflict,
)
from models.bundle.signing import parse_signature, verify_manifest_signature

DEFAULT_MAX_MEMBER_BYTES = 2 * 1024**3
DEFAULT_MAX_MANIFEST_BYTES = 4 * 1024**2
MAX_SIGNATURE_BYTES = 64 * 1024
MAX_MEMBERS = 4096
# tarfile reads a pax or GNU long-name header in one read() of the size the header claims;
# refusing huge single reads keeps a crafted header from allocating gigabytes.
_MAX_SINGLE_READ = 4 * CHUNK_SIZE


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature, layout and every file hash were checked."""

    manifest: Manifest
    key_id: str
    path: Path
    sha256: str = field(metadata={"doc": "sha256 of the whole .efb file"})
    size: int
    manifest_bytes: bytes = field(repr=False)
    directory: Path | None = None


@dataclass(frozen=True)
class BundleInspection:
    """What ``inspect`` can say without a key: the manifest, and who claims to have signed it."""

    manifest: Manifest
    path: Path
    size: int
    signed: bool
    signer_key_id: str | None = field(
        default=None, metadata={"doc": "as claimed by manifest.sig; not verified"}
    )


@dataclass(frozen=True)
class _Limits:
    max_member_bytes: int
    max_manifest_bytes: int


@dataclass
class _Layout:
    manifest: tarfile.TarInfo
    signature: tarfile.TarInfo | None
    files: dict[str, tarfile.TarInfo]


def verify_bundle(
    path: Path,
    trusted_keys: Sequence[Ed25519PublicKey],
    *,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
) -> VerifiedBundle:
    """Check everything about the bundle at ``path`` without extracting it."""
    limits = _Limits(max_member_bytes, max_manifest_bytes)
    with _BundleReader(Path(path), limits) as reader:
        manifest, key, manifest_bytes = _authenticate(reader, trusted_keys)
        _check_file_set(manifest, reader.layout)
        for name in sorted(manifest.files):
            digest = hashlib.sha256()
            for chunk in reader.stream(name):
                digest.update(chunk)
            _expect_digest(name, manifest.files[name], digest.hexdigest(), where="in the bundle")
        return VerifiedBundle(
            manifest=manifest,
            key_id=key,
            path=reader.path,
            sha256=reader.sha256(),
            size=reader.size,
            manifest_bytes=manifest_bytes,
        )


def extract_bundle(
    path: Path,
    dest: Path,
    trusted_keys: Sequence[Ed25519PublicKey],
    *,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
) -> VerifiedBundle:
    """Verify the bundle, then write its files (and manifest) into ``dest``, a new or empty directory.

    Nothing is written before the signature and layout are checked, nothing is written outside
    ``dest``, and ``manifest.json`` is written last, so a directory holding it is complete. On any
    failure everything written so far is removed again.
    """
    limits = _Limits(max_member_bytes, max_manifest_bytes)
    dest = Path(dest)
    with _BundleReader(Path(path), limits) as reader:
        manifest, key, manifest_bytes = _authenticate(reader, trusted_keys)
        _check_file_set(manifest, reader.layout)
        try:
            created = _prepare_destination(dest)
        except OSError as exc:
            raise ExtractionFailed(f"cannot create {dest}: {exc.strerror}") from exc
        try:
            root = dest.resolve(strict=True)
            for name in sorted(manifest.files):
                got = _write_file(root, name, reader.stream(name))
                _expect_digest(name, manifest.files[name], got, where="while extracting")
            for name in sorted(manifest.files):
                got = _hash_written(root, name)
                _expect_digest(name, manifest.files[name], got, where="on disk after extraction")
            signature = reader.read_member(SIGNATURE_NAME, MAX_SIGNATURE_BYTES)
            _write_file(root, SIGNATURE_NAME, [signature])
            _write_file(root, MANIFEST_NAME, [manifest_bytes])
            _fsync_tree(root)
        except OSError as exc:
            _remove_written(dest, created=created)
            raise ExtractionFailed(f"cannot write into {dest}: {exc.strerror or exc}") from exc
        except BaseException:
            _remove_written(dest, created=created)
            raise
        return VerifiedBundle(
            manifest=manifest,
            key_id=key,
            path=reader.path,
            sha256=reader.sha256(),
            size=reader.size,
            manifest_bytes=manifest_bytes,
            directory=root,
        )


def inspect_bundle(
    path: Path,
    *,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
) -> Manifest:
    """The manifest of an unverified bundle, after every structural check (no key needed)."""
    return inspect_bundle_details(
        path, max_member_bytes=max_member_bytes, max_manifest_bytes=max_manifest_bytes
    ).manifest


def inspect_bundle_details(
    path: Path,
    *,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
) -> BundleInspection:
    """Like ``inspect_bundle``, plus the size and the key id that ``manifest.sig`` claims.

    Runs the structural checks, parses the manifest and matches the member list and sizes
    against it; it neither checks the signature nor hashes the files (``verify_bundle`` does).
    """
    limits = _Limits(max_member_bytes, max_manifest_bytes)
    with _BundleReader(Path(path), limits) as reader:
        manifest = parse_manifest(reader.read_member(MANIFEST_NAME, max_manifest_bytes))
        _check_file_set(manifest, reader.layout)
        signer: str | None = None
        signed = reader.layout.signature is not None
        if signed:
            try:
                signer = parse_signature(reader.read_member(SIGNATURE_NAME, MAX_SIGNATURE_BYTES)).key_id
            except BadSignature:
                signer = None
        return BundleInspection(
            manifest=manifest, path=reader.path, size=reader.size, signed=signed, signer_key_id=signer
        )


def parse_manifest(data: bytes) -> Manifest:
    """Parse ``manifest.json`` strictly: UTF-8 JSON, no duplicate keys or NaN, then the schema."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"manifest.json is not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise MalformedManifest(reason) from exc
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise MalformedManifest(
            f"manifest.json is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except _NotStrictJSON as exc:
        raise MalformedManifest(exc.message, fields=[exc.key] if exc.key else []) from exc
    if not isinstance(obj, dict):
        raise MalformedManifest(f"manifest.json must hold a JSON object, not a {type(obj).__name__}")
    version = obj.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise MalformedManifest(
            f"manifest.json uses schema version {version}; this edgefleet reads version {SCHEMA_VERSION}",
            fields=["schema_version"],
            hint="upgrade edgefleet on this machine to read newer bundles",
        )
    try:
        return Manifest.model_validate(obj)
    except ValidationError as exc:
        raise _schema_error(exc) from exc


# --- the reader --------------------------------------------------------------------------------


class _GuardedFile:
    """The bundle file as tarfile sees it: reads larger than a bound are refused."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > _MAX_SINGLE_READ:
            raise OversizedMember(
                f"a tar extended header claims {_human_bytes(size)}; real ones are a few hundred bytes",
                member="(tar header)",
                size=size if size is not None else -1,
                limit=_MAX_SINGLE_READ,
                hint="this is not a bundle edgefleet wrote: do not deploy it",
            )
        return self._handle.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()


class _BundleReader:
    """An open bundle whose member headers have all passed the structural checks."""

    def __init__(self, path: Path, limits: _Limits) -> None:
        self.path = path
        self._limits = limits
        try:
            # Checked before opening: opening a FIFO would block until someone writes to it.
            if not stat.S_ISREG(path.stat().st_mode):
                raise MalformedBundle(f"{path} is not a regular file", hint="pass the .efb file")
            self._handle: BinaryIO = path.open("rb")
        except FileNotFoundError as exc:
            raise MalformedBundle(f"{path} does not exist", hint="check the path") from exc
        except PermissionError as exc:
            raise MalformedBundle(f"cannot read {path}: permission denied", hint="check its mode") from exc
        try:
            info = os.fstat(self._handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise MalformedBundle(f"{path} is not a regular file", hint="pass the .efb file")
            self.size = info.st_size
            self._tar = self._open_tar()
            self.layout = self._scan()
        except BaseException:
            self._handle.close()
            raise

    def __enter__(self) -> _BundleReader:
        return self

    def __exit__(self, *_: object) -> None:
        self._tar.close()
        self._handle.close()

    def sha256(self) -> str:
        digest = hashlib.sha256()
        self._handle.seek(0)
        for chunk in iter_chunks(self._handle):
            digest.update(chunk)
        return digest.hexdigest()

    def member(self, name: str) -> tarfile.TarInfo:
        if name == MANIFEST_NAME:
            return self.layout.manifest
        if name == SIGNATURE_NAME and self.layout.signature is not None:
            return self.layout.signature
        return self.layout.files[name]

    def stream(self, name: str) -> Iterator[bytes]:
        """The member's bytes in chunks; its length was bounds-checked against the file size."""
        info = self.member(name)
        extracted = self._tar.extractfile(info)
        if extracted is None:  # pragma: no cover - only regular members get this far
            raise UnsupportedMember(f"bundle member {name!r} has no data", member=name)
        with extracted:
            try:
                yield from iter_chunks(cast(BinaryIO, extracted), info.size)
            except tarfile.ReadError as exc:
                raise MalformedBundle(f"the bundle is truncated inside member {name!r}: {exc}") from exc

    def read_member(self, name: str, limit: int) -> bytes:
        info = self.member(name)
        if info.size > limit:
            raise OversizedMember(
                f"{name} is {_human_bytes(info.size)}, over the {_human_bytes(limit)} limit",
                member=name,
                size=info.size,
                limit=limit,
            )
        return b"".join(self.stream(name))

    def _open_tar(self) -> tarfile.TarFile:
        guarded = cast(IO[bytes], _GuardedFile(self._handle))
        try:
            # "r:" reads uncompressed tar only: a compressed stream would hide its real size.
            return tarfile.open(fileobj=guarded, mode="r:")
        except tarfile.TarError as exc:
            self._handle.seek(0)
            magic = self._handle.read(4)
            if self.size == 0:
                reason = "is empty"
            elif magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zX":
                reason = "is compressed; bundles are uncompressed tar archives"
            else:
                reason = f"is not a tar archive ({exc})"
            raise MalformedBundle(f"{self.path} {reason}") from exc

    def _scan(self) -> _Layout:
        manifest: tarfile.TarInfo | None = None
        signature: tarfile.TarInfo | None = None
        files: dict[str, tarfile.TarInfo] = {}
        seen: set[str] = set()
        for index, info in enumerate(self._members()):
            self._check_member(info)
            if info.name in seen:
                raise UnsafePath(
                    f"bundle member {info.name!r} appears twice; a later copy would replace the checked one",
                    member=info.name,
                )
            seen.add(info.name)
            if index == 0 and info.name != MANIFEST_NAME:
                raise MalformedBundle(
                    f"the bundle starts with {info.name!r}; a bundle's first member is {MANIFEST_NAME}"
                )
            if info.name == MANIFEST_NAME:
                manifest = info
            elif info.name == SIGNATURE_NAME:
                if index != 1:
                    raise MalformedBundle(
                        f"{SIGNATURE_NAME} is member {index + 1}; it must come right after {MANIFEST_NAME}"
                    )
                signature = info
            else:
                files[info.name] = info
        conflict = member_names_conflict(seen)
        if conflict is not None:
            raise UnsafePath(f"bundle members clash: {conflict}", member=conflict)
        if manifest is None:
            raise MalformedBundle(f"{self.path} is an empty tar archive, not a bundle")
        return _Layout(manifest=manifest, signature=signature, files=files)

    def _members(self) -> Iterator[tarfile.TarInfo]:
        last = "(start of file)"
        count = 0
        while True:
            try:
                info = self._tar.next()
            except tarfile.TarError as exc:
                reason = f"the bundle is truncated or corrupt after member {last!r}: {exc}"
                raise MalformedBundle(reason) from exc
            if info is None:
                break
            count += 1
            if count > MAX_MEMBERS:
                raise MalformedBundle(f"the bundle has over {MAX_MEMBERS} members; bundles hold a few files")
            last = info.name
            yield info
        self._check_end_of_archive(last)

    def _check_end_of_archive(self, last: str) -> None:
        # tarfile stops quietly at a truncated or garbled header; a complete archive has a zero
        # block where the next header would be.
        self._handle.seek(self._tar.offset)
        if self._handle.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
            raise MalformedBundle(
                f"the bundle is truncated or corrupt after member {last!r}: "
                f"no end-of-archive marker at byte {self._tar.offset} of {self.size}"
            )

    def _size_limit(self, name: str) -> int:
        if name == MANIFEST_NAME:
            return self._limits.max_manifest_bytes
        if name == SIGNATURE_NAME:
            return MAX_SIGNATURE_BYTES
        return self._limits.max_member_bytes

    def _check_member(self, info: tarfile.TarInfo) -> None:
        name = info.name
        problem = member_name_problem(name)
        if problem is not None:
            raise UnsafePath(f"bundle member {name!r} {problem}", member=name)
        if info.issym() or info.islnk():
            kind = "a symbolic link" if info.issym() else "a hard link"
            raise LinkMember(f"bundle member {name!r} is {kind} to {info.linkname!r}", member=name)
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise UnsupportedMember(f"bundle member {name!r} is {_member_kind(info)}", member=name)
        limit = self._size_limit(name)
        if info.size > limit:
            raise OversizedMember(
                f"bundle member {name!r} is {_human_bytes(info.size)}, over the {_human_bytes(limit)} limit",
                member=name,
                size=info.size,
                limit=limit,
            )
        end = info.offset_data + info.size
        if end > self.size:
            raise MalformedBundle(
                f"the bundle is truncated: member {name!r} needs {end} bytes but the file has {self.size}"
            )


# --- the checks, in order ----------------------------------------------------------------------


def _authenticate(
    reader: _BundleReader, trusted_keys: Sequence[Ed25519PublicKey]
) -> tuple[Manifest, str, bytes]:
    if reader.layout.signature is None:
        raise MissingSignature(f"{reader.path} has no {SIGNATURE_NAME}: the bundle is not signed")
    manifest_bytes = reader.read_member(MANIFEST_NAME, reader.layout.manifest.size)
    signature_bytes = reader.read_member(SIGNATURE_NAME, MAX_SIGNATURE_BYTES)
    key = verify_manifest_signature(manifest_bytes, signature_bytes, trusted_keys)
    return parse_manifest(manifest_bytes), key, manifest_bytes


def _check_file_set(manifest: Manifest, layout: _Layout) -> None:
    missing = sorted(manifest.files.keys() - layout.files.keys())
    if missing:
        raise MissingFile(
            f"the manifest lists {missing[0]!r} but the bundle does not contain it", file=missing[0]
        )
    extra = sorted(layout.files.keys() - manifest.files.keys())
    if extra:
        raise ExtraFile(f"the bundle contains {extra[0]!r}, which the manifest does not list", file=extra[0])
    for name, entry in sorted(manifest.files.items()):
        size = layout.files[name].size
        if size != entry.size:
            raise HashMismatch(
                f"{name!r} is {size} bytes in the bundle but the manifest says {entry.size}",
                file=name,
                expected=f"{entry.size} bytes",
                got=f"{size} bytes",
            )


def _expect_digest(name: str, entry: FileEntry, got: str, *, where: str) -> None:
    if got != entry.sha256:
        raise HashMismatch(
            f"{name!r} has sha256 {got} {where}, but the signed manifest says {entry.sha256}",
            file=name,
            expected=entry.sha256,
            got=got,
        )


# --- extraction --------------------------------------------------------------------------------


def _prepare_destination(dest: Path) -> bool:
    """Make sure ``dest`` is a new or empty real directory; True when this call created it."""
    if dest.is_symlink():
        raise DestinationNotEmpty(f"{dest} is a symbolic link; extract into a real directory")
    if dest.exists():
        if not dest.is_dir():
            raise DestinationNotEmpty(f"{dest} exists and is not a directory")
        if any(dest.iterdir()):
            raise DestinationNotEmpty(f"{dest} is not empty")
        return False
    dest.mkdir(parents=True)
    return True


def _target(root: Path, name: str) -> Path:
    # The name already passed member_name_problem; this re-check costs nothing and keeps the
    # guarantee local to the place that writes.
    target = root.joinpath(*name.split("/"))
    if member_name_problem(name) is not None or not target.parent.resolve().is_relative_to(root):
        raise UnsafePath(f"refusing to write {name!r} outside {root}", member=name)
    return target


def _write_file(root: Path, name: str, chunks: Iterable[bytes]) -> str:
    """Create ``root/name`` (it must not exist yet) from ``chunks``; return the sha256 written."""
    parts = name.split("/")
    directory = root
    for part in parts[:-1]:
        directory = directory / part
        try:
            directory.mkdir()
        except FileExistsError:
            if directory.is_symlink() or not directory.is_dir():
                raise UnsafePath(f"{directory} is in the way of {name!r}", member=name) from None
    target = _target(root, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(target, flags, 0o644)
    digest = hashlib.sha256()
    with os.fdopen(fd, "wb") as handle:
        for chunk in chunks:
            digest.update(chunk)
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    return digest.hexdigest()


def _hash_written(root: Path, name: str) -> str:
    target = _target(root, name)
    fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise UnsupportedMember(f"{target} is no longer a regular file", member=name)
        digest = hashlib.sha256()
        for chunk in iter_chunks(handle):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_tree(root: Path) -> None:
    for directory, _, _ in os.walk(root):
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _remove_written(dest: Path, *, created: bool) -> None:
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    # dest was empty before: everything in it now is ours.
    for child in dest.iterdir() if dest.is_dir() else ():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


# --- helpers -----------------------------------------------------------------------------------


class _NotStrictJSON(ValueError):
    """JSON that Python accepts but other readers may not: duplicate keys, NaN, Infinity."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _NotStrictJSON(f"manifest.json repeats the key {key!r}; readers could disagree on it", key)
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise _NotStrictJSON(f"manifest.json contains {name}, which is not JSON")


def _schema_error(exc: ValidationError) -> MalformedManifest:
    errors = exc.errors()
    fields = [".".join(str(part) for part in error["loc"]) or "(top level)" for error in errors]
    shown = [f"field {loc!r}: {error['msg']}" for loc, error in zip(fields, errors, strict=True)][:3]
    more = f"; and {len(errors) - 3} more" if len(errors) > 3 else ""
    return MalformedManifest(
        "manifest.json does not match the manifest schema: " + "; ".join(shown) + more, fields=fields
    )


def _member_kind(info: tarfile.TarInfo) -> str:
    if info.isdir():
        return "a directory (bundles hold regular files only; directories are implied by names)"
    if info.ischr():
        return "a character device"
    if info.isblk():
        return "a block device"
    if info.isfifo():
        return "a FIFO"
    if info.issparse():
        return "a sparse file"
    return f"of unsupported tar type {info.type!r}"


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({size} bytes)"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover
