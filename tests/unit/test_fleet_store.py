"""The content-addressed bundle store: streaming uploads, size limits, atomic commits, ranged reads."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleet.registry.store import BundleStore, UploadTooLarge, is_sha256


async def _chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
def store(tmp_path: Path) -> BundleStore:
    store = BundleStore(tmp_path / "bundles", tmp_path / "uploads")
    store.prepare()
    return store


def test_upload_is_hashed_while_it_streams(store: BundleStore) -> None:
    data = bytes(range(256)) * 5
    upload = asyncio.run(store.receive(_chunks(data), max_bytes=len(data)))
    assert upload.sha256 == hashlib.sha256(data).hexdigest() and upload.size == len(data)
    assert upload.path.read_bytes() == data and upload.path.parent == store.upload_dir


def test_upload_over_the_limit_leaves_nothing_behind(store: BundleStore) -> None:
    with pytest.raises(UploadTooLarge) as refused:
        asyncio.run(store.receive(_chunks(b"x" * 100), max_bytes=99))
    assert refused.value.status_code == 413 and "99 byte" in refused.value.message
    assert list(store.upload_dir.iterdir()) == []


def test_commit_moves_to_the_content_address_once(store: BundleStore) -> None:
    data = b"bundle bytes"
    first = asyncio.run(store.receive(_chunks(data), max_bytes=100))
    target = store.commit(first)
    assert target == store.root / f"{hashlib.sha256(data).hexdigest()}.efb"
    assert target.read_bytes() == data and not first.path.exists()
    again = asyncio.run(store.receive(_chunks(data), max_bytes=100))
    assert store.commit(again) == target and not again.path.exists()
    assert store.has(first.sha256)


def test_ranged_reads(store: BundleStore) -> None:
    data = bytes(range(256)) * 9000  # several read chunks
    upload = asyncio.run(store.receive(_chunks(data, 65536), max_bytes=len(data)))
    store.commit(upload)
    assert b"".join(store.read(upload.sha256)) == data
    assert b"".join(store.read(upload.sha256, 1000, 2_000_000)) == data[1000:2_001_000]
    assert b"".join(store.read(upload.sha256, len(data) - 5, 100)) == data[-5:]


def test_prepare_clears_uploads_a_crash_left(tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "bundles", tmp_path / "uploads")
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / "dead.part").write_bytes(b"half")
    store.prepare()
    assert list(store.upload_dir.iterdir()) == []


def test_addresses_are_sha256_only(store: BundleStore) -> None:
    assert is_sha256("a" * 64) and not is_sha256("A" * 64) and not is_sha256("../" + "a" * 61)
    with pytest.raises(ValueError):
        store.path_for("../../etc/passwd")
