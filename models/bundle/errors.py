"""Every way a bundle (or a signing key) can be refused, one class each.

Each class carries a stable machine ``code`` (for JSON output and logs), its own process
``exit_code`` (so scripts can tell a tampered model from an untrusted key without parsing text),
and a default ``hint`` that tells the operator what to do next. Exit codes start at 10 so they
never collide with 1 (a generic failure) or 2 (a command-line usage error).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar


class BundleError(Exception):
    """Base class: a bundle or key that edgefleet refuses, with a message that says why."""

    code: ClassVar[str] = "bundle_error"
    exit_code: ClassVar[int] = 1
    default_hint: ClassVar[str] = "rebuild the bundle with `edgefleet convert`, or download it again"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON-ready data, for ``--json`` output and audit logs."""
        return {"code": self.code, "exit_code": self.exit_code, "message": self.message, "hint": self.hint}


class MalformedBundle(BundleError):
    """Not an uncompressed tar, truncated, or not laid out as a bundle (manifest.json first)."""

    code = "malformed_bundle"
    exit_code = 10
    default_hint = "the file is not a complete .efb bundle: download or copy it again, or rebuild it"


class MalformedManifest(BundleError):
    """manifest.json is not JSON, or does not match the manifest schema."""

    code = "malformed_manifest"
    exit_code = 11
    default_hint = "rebuild the bundle with a matching edgefleet version (`edgefleet convert`)"

    def __init__(self, message: str, *, fields: Sequence[str] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.fields = tuple(fields)


class MissingSignature(BundleError):
    """The bundle carries no manifest.sig."""

    code = "missing_signature"
    exit_code = 12
    default_hint = "unsigned bundles are never trusted: package it again with a signing key (--key)"


class BadSignature(BundleError):
    """The signature does not match the manifest: the manifest or the signature was altered."""

    code = "bad_signature"
    exit_code = 13
    default_hint = "the manifest or its signature was altered after signing: do not deploy this file"


class UntrustedKey(BundleError):
    """A well-formed signature by a key that is not among the trusted keys."""

    code = "untrusted_key"
    exit_code = 14
    default_hint = "pass the signer's public key with --trusted-key if you trust it, or re-sign the bundle"

    def __init__(self, message: str, *, key_id: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.key_id = key_id


class HashMismatch(BundleError):
    """A file's bytes (or size) differ from what the signed manifest says."""

    code = "hash_mismatch"
    exit_code = 15
    default_hint = "the file was altered or corrupted after signing: download it again, do not deploy it"

    def __init__(self, message: str, *, file: str, expected: str, got: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.file = file
        self.expected = expected
        self.got = got


class MissingFile(BundleError):
    """The manifest lists a file that the bundle does not contain."""

    code = "missing_file"
    exit_code = 16

    def __init__(self, message: str, *, file: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.file = file


class ExtraFile(BundleError):
    """The bundle contains a file that the signed manifest does not list."""

    code = "extra_file"
    exit_code = 17
    default_hint = "a file was slipped into the bundle after signing: do not deploy it; rebuild it"

    def __init__(self, message: str, *, file: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.file = file


class UnsafePath(BundleError):
    """A member name that could escape the target directory or clash with another one."""

    code = "unsafe_path"
    exit_code = 18
    default_hint = "member names must be plain relative paths (letters, digits, '._+-', '/'): rebuild it"

    def __init__(self, message: str, *, member: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.member = member


class LinkMember(BundleError):
    """A symbolic or hard link member: bundles carry regular files only."""

    code = "link_member"
    exit_code = 19
    default_hint = "bundles carry regular files only; package the link's target file instead"

    def __init__(self, message: str, *, member: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.member = member


class OversizedMember(BundleError):
    """A member (or the manifest, or a tar extended header) larger than the configured limit."""

    code = "oversized_member"
    exit_code = 20
    default_hint = "if the file is genuine, raise the limit (--max-member-bytes); otherwise do not deploy it"

    def __init__(self, message: str, *, member: str, size: int, limit: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.member = member
        self.size = size
        self.limit = limit


class UnsupportedMember(BundleError):
    """A directory, device, FIFO or sparse member: bundles carry regular files only."""

    code = "unsupported_member"
    exit_code = 21
    default_hint = "bundles carry regular files only (no directories, devices or FIFOs): rebuild it"

    def __init__(self, message: str, *, member: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.member = member


class KeyFileError(BundleError):
    """A signing or trusted key file that is missing, unreadable, of the wrong kind, or in the way."""

    code = "key_file"
    exit_code = 22
    default_hint = "create a key pair with `edgefleet keys generate --out DIR`"


class DestinationNotEmpty(BundleError):
    """``extract_bundle`` was pointed at a directory that already holds something."""

    code = "destination_not_empty"
    exit_code = 23
    default_hint = "extract into a new or empty directory"


class ExtractionFailed(BundleError):
    """The file system refused a write while extracting (permissions, disk full, ...)."""

    code = "extraction_failed"
    exit_code = 24
    default_hint = "check free space and permissions of the destination, then extract again"


ALL_ERRORS: tuple[type[BundleError], ...] = (
    MalformedBundle,
    MalformedManifest,
    MissingSignature,
    BadSignature,
    UntrustedKey,
    HashMismatch,
    MissingFile,
    ExtraFile,
    UnsafePath,
    LinkMember,
    OversizedMember,
    UnsupportedMember,
    KeyFileError,
    DestinationNotEmpty,
    ExtractionFailed,
)
