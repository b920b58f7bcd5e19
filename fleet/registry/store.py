"""Content-addressed bundle files: ``<data-dir>/bundles/<sha256>.efb``.

An upload streams into ``<data-dir>/uploads`` while it is hashed, is verified there, and only then
moves into place with an atomic rename. Two uploads of the same bytes land on the same name, so
storing twice is harmless.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fleet.errors import ApiError

CHUNK_SIZE: Final = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(text: str) -> bool:
    return _SHA256.fullmatch(text) is not None


@dataclass(frozen=True)
class Upload:
    """A received, not yet verified file: where it is, its sha256 and size."""

    path: Path
    sha256: str
    size: int


class UploadTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            "too_large",
            f"the bundle is larger than the server's {limit} byte limit",
            hint="raise the limit with `edgefleet server run --max-bundle-bytes`, or make the model smaller",
        )


class BundleStore:
    def __init__(self, root: Path, upload_dir: Path) -> None:
        self.root = root
        self.upload_dir = upload_dir

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        # Uploads left by a crash are never referenced: clear them.
        for leftover in self.upload_dir.glob("*.part"):
            leftover.unlink(missing_ok=True)

    def path_for(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise ValueError(f"{sha256!r} is not a sha256 hex digest")
        return self.root / f"{sha256}.efb"

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    async def receive(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> Upload:
        """Stream a request body to a temporary file, hashing as it goes; refuse past ``max_bytes``."""
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        path = self.upload_dir / f"{secrets.token_hex(16)}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            with path.open("xb") as handle:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise UploadTooLarge(max_bytes)
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                # fsync can take a while on a big file: not on the event loop.
                await asyncio.to_thread(os.fsync, handle.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Upload(path=path, sha256=digest.hexdigest(), size=size)

    def commit(self, upload: Upload) -> Path:
        """Move a verified upload to its content address (or drop it when the same bytes are there)."""
        target = self.path_for(upload.sha256)
        if target.is_file():
            upload.path.unlink(missing_ok=True)
        else:
            upload.path.replace(target)
        return target

    @staticmethod
    def discard(upload: Upload) -> None:
        upload.path.unlink(missing_ok=True)

    def read(self, sha256: str, first: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The bytes ``first .. first+length`` of a stored bundle, in chunks."""
        with self.path_for(sha256).open("rb") as handle:
            handle.seek(first)
            remaining = length
            while remaining is None or remaining > 0:
                chunk = handle.read(CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
