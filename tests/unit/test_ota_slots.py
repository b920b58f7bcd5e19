"""A/B slots on disk: staging, and checking an extraction again before it is served."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge_agent.ota import SlotStore, verify_extracted
from models.bundle import BadSignature, ExtraFile, HashMismatch, MissingFile, UntrustedKey
from tests.support.bundles import fixed_private_key
from tests.support.ota_bundles import Release, tiny_release

KEY = fixed_private_key()


@pytest.fixture
def release(tmp_path: Path) -> Release:
    return tiny_release(tmp_path / "bundles", "2.0.0")


@pytest.fixture
def store(tmp_path: Path) -> SlotStore:
    return SlotStore(tmp_path / "data", [KEY.public_key()])


def test_staging_extracts_into_the_slot_under_a_content_name(store: SlotStore, release: Release) -> None:
    installed, record = store.stage("tiny-linear", "b", release.path)
    assert installed.directory == store.root / "tiny-linear" / "b" / f"2.0.0-{release.sha256[:16]}"
    assert (installed.directory / "model.onnx").is_file()
    assert record.directory == f"slots/tiny-linear/b/2.0.0-{release.sha256[:16]}"
    assert (record.version, record.sha256, record.committed) == ("2.0.0", release.sha256, False)
    assert [p.name for p in (store.root / "tiny-linear").iterdir()] == ["b"]  # no scratch left


def test_staging_replaces_what_the_slot_held(store: SlotStore, release: Release, tmp_path: Path) -> None:
    older = tiny_release(tmp_path / "bundles", "1.0.0")
    first, _ = store.stage("tiny-linear", "a", older.path)
    second, _ = store.stage("tiny-linear", "a", release.path)
    assert not first.directory.exists()
    assert [p.name for p in store.slot_dir("tiny-linear", "a").iterdir()] == [second.directory.name]


def test_a_refused_bundle_leaves_the_slot_empty(store: SlotStore, release: Release) -> None:
    other = SlotStore(store.data_dir, [fixed_private_key(7).public_key()])
    with pytest.raises(UntrustedKey):
        other.stage("tiny-linear", "a", release.path)
    assert not store.slot_dir("tiny-linear", "a").exists()


def test_a_model_name_that_cannot_name_a_directory_is_refused(store: SlotStore) -> None:
    with pytest.raises(ValueError, match="model name"):
        store.slot_dir("../etc", "a")


def test_an_intact_slot_reopens_verified(store: SlotStore, release: Release) -> None:
    installed, record = store.stage("tiny-linear", "a", release.path)
    again = store.reopen(record)
    assert again.directory == installed.directory
    assert again.manifest == installed.manifest
    assert again.key_id == installed.key_id


def test_a_changed_file_is_caught(store: SlotStore, release: Release) -> None:
    installed, record = store.stage("tiny-linear", "a", release.path)
    model = installed.directory / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(HashMismatch, match="changed on disk"):
        store.reopen(record)


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (lambda d: (d / "golden.npz").unlink(), MissingFile),
        (lambda d: (d / "notes.txt").write_text("hi"), ExtraFile),
        (
            lambda d: (d / "manifest.json").write_bytes(
                (d / "manifest.json").read_bytes().replace(b"2.0.0", b"2.0.1")
            ),
            BadSignature,
        ),
        (lambda d: shutil.rmtree(d), MissingFile),
    ],
)
def test_an_extraction_that_no_longer_matches_its_signed_manifest_is_refused(
    store: SlotStore, release: Release, damage: object, error: type[Exception]
) -> None:
    installed, _ = store.stage("tiny-linear", "a", release.path)
    damage(installed.directory)  # type: ignore[operator]
    with pytest.raises(error):
        verify_extracted(installed.directory, [KEY.public_key()])
