"""Ed25519 keys and the ``manifest.sig`` envelope.

A key's id is the first 16 hex digits of sha256 over its 32 raw public bytes: short enough to read
out loud, long enough that two keys of one organisation never share it. The envelope is a small
JSON object ``{"alg": "ed25519", "key_id": ..., "signature": <base64>}`` over the exact bytes of
``manifest.json`` (which the packer writes as ``Manifest.canonical_bytes()``), so what is verified
is exactly what is parsed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from models.bundle.errors import BadSignature, KeyFileError, UntrustedKey
from models.bundle.manifest import canonical_json

SIGNATURE_ALGORITHM = "ed25519"
PRIVATE_KEY_SUFFIX = ".key"
PUBLIC_KEY_SUFFIX = ".pub.pem"
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_MAX_KEY_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class SignatureEnvelope:
    """The parsed content of ``manifest.sig``."""

    key_id: str
    signature: bytes
    alg: str = SIGNATURE_ALGORITHM

    def to_bytes(self) -> bytes:
        return canonical_json(
            {"alg": self.alg, "key_id": self.key_id, "signature": base64.b64encode(self.signature).decode()}
        )


def key_id(public_key: Ed25519PublicKey) -> str:
    """16 hex digits of sha256 over the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out_dir: Path, name: str = "edgefleet", *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<name>.key`` (PKCS#8 PEM, mode 0600) and ``<name>.pub.pem``; return both paths.

    Refuses to replace existing files unless ``overwrite``: losing a signing key strands every
    device that trusts it.
    """
    if not _KEY_NAME.fullmatch(name):
        raise KeyFileError(
            f"key name {name!r} is not usable as a file name",
            hint="use letters, digits, '.', '_' and '-' (at most 64 characters), e.g. --name release",
        )
    out_dir = Path(out_dir)
    private_path = out_dir / f"{name}{PRIVATE_KEY_SUFFIX}"
    public_path = out_dir / f"{name}{PUBLIC_KEY_SUFFIX}"
    existing = [str(p) for p in (private_path, public_path) if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        raise KeyFileError(
            f"{' and '.join(existing)} already exist; refusing to overwrite a signing key",
            hint="pick another --name or --out, or pass --force to replace the key pair",
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create {out_dir}: {exc.strerror}", hint="pick a writable --out") from exc

    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_atomically(private_path, private_pem, mode=0o600)
    _write_atomically(public_path, public_pem, mode=0o644)
    return private_path, public_path


def load_private_key(path: Path, password: bytes | None = None) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from a PEM file (PKCS#8, optionally encrypted)."""
    data = _read_key_file(path, "private")
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError as exc:
        raise KeyFileError(
            f"{path} is encrypted" if password is None else f"{path}: {exc}",
            hint="pass the key's passphrase, or generate an unencrypted key with `edgefleet keys generate`",
        ) from exc
    except ValueError as exc:
        hint = "pass the private key (<name>.key), not the public one" if b"PUBLIC KEY" in data else None
        message = f"{path} is not a PEM private key (or the passphrase is wrong)"
        raise KeyFileError(message, hint=hint) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(
            f"{path} holds a {type(key).__name__}, not an Ed25519 key",
            hint="bundles are signed with Ed25519: create a key with `edgefleet keys generate`",
        )
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a PEM file (SubjectPublicKeyInfo)."""
    data = _read_key_file(path, "public")
    if b"PRIVATE KEY" in data:
        raise KeyFileError(
            f"{path} is a private key; a trusted key must be the public half",
            hint="pass the <name>.pub.pem file, and keep the private key off devices and servers",
        )
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(
            f"{path} is not a PEM public key", hint="pass the .pub.pem written by `edgefleet keys generate`"
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(
            f"{path} holds a {type(key).__name__}, not an Ed25519 public key",
            hint="pass the .pub.pem written by `edgefleet keys generate`",
        )
    return key


def load_trusted_keys(paths: Iterable[Path]) -> list[Ed25519PublicKey]:
    """Load public keys from files, or from every ``*.pem`` in a directory; duplicates dropped."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in map(Path, paths):
        files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
        if path.is_dir() and not files:
            raise KeyFileError(f"{path} holds no *.pem public keys", hint="copy the signer's .pub.pem there")
        for file in files:
            key = load_public_key(file)
            keys.setdefault(key_id(key), key)
    return list(keys.values())


def sign_manifest_bytes(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The ``manifest.sig`` content for these exact manifest bytes."""
    envelope = SignatureEnvelope(
        key_id=key_id(private_key.public_key()), signature=private_key.sign(manifest_bytes)
    )
    return envelope.to_bytes()


def parse_signature(data: bytes) -> SignatureEnvelope:
    """Parse ``manifest.sig``; anything unexpected is a BadSignature."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadSignature(f"manifest.sig is not JSON: {exc}") from exc
    if not isinstance(obj, dict) or set(obj) != {"alg", "key_id", "signature"}:
        raise BadSignature('manifest.sig must be {"alg", "key_id", "signature"} and nothing else')
    alg, kid, encoded = obj["alg"], obj["key_id"], obj["signature"]
    if alg != SIGNATURE_ALGORITHM:
        raise BadSignature(
            f"manifest.sig uses algorithm {alg!r}; only {SIGNATURE_ALGORITHM!r} is accepted",
            hint="re-sign the bundle with an Ed25519 key from `edgefleet keys generate`",
        )
    if not isinstance(kid, str) or not _KEY_ID.fullmatch(kid):
        raise BadSignature(f"manifest.sig key_id {kid!r} is not 16 lowercase hex digits")
    try:
        signature = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else b""
    except binascii.Error as exc:
        raise BadSignature(f"manifest.sig signature is not base64: {exc}") from exc
    if len(signature) != 64:
        raise BadSignature(f"manifest.sig signature is {len(signature)} bytes; Ed25519 signatures are 64")
    return SignatureEnvelope(key_id=kid, signature=signature, alg=alg)


def verify_manifest_signature(
    manifest_bytes: bytes, signature_bytes: bytes, trusted_keys: Sequence[Ed25519PublicKey]
) -> str:
    """Check ``manifest.sig`` against ``manifest.json``'s exact bytes; return the signer's key id.

    Raises UntrustedKey when the named key is not trusted, BadSignature when the signature does
    not verify (the manifest or the signature changed after signing).
    """
    envelope = parse_signature(signature_bytes)
    by_id = {key_id(key): key for key in trusted_keys}
    key = by_id.get(envelope.key_id)
    if key is None:
        trusted = ", ".join(sorted(by_id)) or "none"
        raise UntrustedKey(
            f"the bundle is signed by key {envelope.key_id}, which is not trusted (trusted: {trusted})",
            key_id=envelope.key_id,
            hint=None if by_id else "pass the signer's public key with --trusted-key",
        )
    try:
        key.verify(envelope.signature, manifest_bytes)
    except InvalidSignature as exc:
        raise BadSignature(
            f"the signature by key {envelope.key_id} does not match manifest.json: "
            "the manifest or its signature was altered after signing"
        ) from exc
    return envelope.key_id


def _read_key_file(path: Path, kind: str) -> bytes:
    path = Path(path)
    try:
        if path.stat().st_size > _MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"{path} is too large to be a {kind} key file")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(f"{kind} key file {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise KeyFileError(f"{path} is a directory, not a {kind} key file") from exc
    except PermissionError as exc:
        raise KeyFileError(
            f"cannot read {kind} key file {path}: permission denied", hint="check the file's owner and mode"
        ) from exc


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    # Created with its final mode (never briefly world-readable), then renamed into place.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(mode)  # the umask may have narrowed it; public keys should stay readable
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
