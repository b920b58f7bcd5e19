"""Extraction never writes outside its target directory, and cleans up after any refusal."""

from __future__ import annotations

import errno
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from models.bundle import (
    BundleError,
    DestinationNotEmpty,
    ExtractionFailed,
    HashMismatch,
    LinkMember,
    UnsafePath,
    extract_bundle,
)
from models.bundle import verify as verify_module
from tests.support.bundles import (
    MODEL_NAME,
    BuiltBundle,
    RawMember,
    build_test_bundle,
    flip_byte,
    read_members,
    write_members,
)


@pytest.fixture
def bundle(tmp_path: Path) -> BuiltBundle:
    return build_test_bundle(tmp_path / "build")


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _with_members(bundle: BuiltBundle, path: Path, *extra: RawMember) -> Path:
    return write_members(path, [*read_members(bundle.path), *extra])


def test_successful_extraction_creates_files_only_inside_dest(bundle: BuiltBundle, tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "neighbour.txt").write_text("untouched")
    before = _snapshot(sandbox)
    extract_bundle(bundle.path, sandbox / "dest", [bundle.public_key])
    new = _snapshot(sandbox) - before
    assert new and all(name == "dest" or name.startswith("dest/") for name in new)
    assert (sandbox / "neighbour.txt").read_text() == "untouched"


@pytest.mark.parametrize(
    "member_factory",
    [
        lambda outside: RawMember("../outside.txt", b"escaped"),
        lambda outside: RawMember("../../outside.txt", b"escaped"),
        lambda outside: RawMember(str(outside / "absolute.txt"), b"escaped"),
        lambda outside: RawMember("a/../../outside.txt", b"escaped"),
        lambda outside: RawMember("..\\outside.txt", b"escaped"),
    ],
    ids=["dotdot", "dotdot-twice", "absolute", "inner-dotdot", "backslash"],
)
def test_path_escapes_write_nothing(
    bundle: BuiltBundle, tmp_path: Path, member_factory: Callable[[Path], RawMember]
) -> None:
    sandbox = tmp_path / "sandbox"
    outside = sandbox / "outside"
    outside.mkdir(parents=True)
    member = member_factory(outside)
    spoiled = _with_members(bundle, tmp_path / "spoiled.efb", member)
    before = _snapshot(sandbox)
    with pytest.raises(UnsafePath):
        extract_bundle(spoiled, sandbox / "deep" / "dest", [bundle.public_key])
    assert _snapshot(sandbox) == before  # not even the destination's parent is created
    assert list(outside.iterdir()) == []


def test_a_symlink_then_a_file_through_it_writes_nothing(bundle: BuiltBundle, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    spoiled = _with_members(
        bundle,
        tmp_path / "spoiled.efb",
        RawMember("link", type=tarfile.SYMTYPE, linkname=str(outside)),
        RawMember("link/pwned.txt", b"escaped"),
    )
    with pytest.raises(LinkMember, match="link"):
        extract_bundle(spoiled, tmp_path / "dest", [bundle.public_key])
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "dest").exists()


def test_a_hard_link_to_a_system_file_writes_nothing(bundle: BuiltBundle, tmp_path: Path) -> None:
    spoiled = _with_members(
        bundle, tmp_path / "spoiled.efb", RawMember("passwd", type=tarfile.LNKTYPE, linkname="/etc/passwd")
    )
    with pytest.raises(LinkMember, match="hard link"):
        extract_bundle(spoiled, tmp_path / "dest", [bundle.public_key])
    assert not (tmp_path / "dest").exists()


def test_a_hash_mismatch_found_while_writing_removes_what_was_written(
    bundle: BuiltBundle, tmp_path: Path
) -> None:
    spoiled = flip_byte(bundle.path, tmp_path / "spoiled.efb", MODEL_NAME, 3)
    created = tmp_path / "created"
    with pytest.raises(HashMismatch, match=MODEL_NAME):
        extract_bundle(spoiled, created, [bundle.public_key])
    assert not created.exists()
    preexisting = tmp_path / "preexisting"
    preexisting.mkdir()
    with pytest.raises(HashMismatch):
        extract_bundle(spoiled, preexisting, [bundle.public_key])
    assert preexisting.is_dir() and list(preexisting.iterdir()) == []


def test_refuses_a_non_empty_destination_and_leaves_it_alone(bundle: BuiltBundle, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(DestinationNotEmpty, match="not empty"):
        extract_bundle(bundle.path, dest, [bundle.public_key])
    assert _snapshot(dest) == {"keep.txt"}
    assert (dest / "keep.txt").read_text() == "mine"


def test_refuses_a_destination_that_is_a_file_or_a_symlink(bundle: BuiltBundle, tmp_path: Path) -> None:
    as_file = tmp_path / "file"
    as_file.write_text("x")
    with pytest.raises(DestinationNotEmpty, match="not a directory"):
        extract_bundle(bundle.path, as_file, [bundle.public_key])
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(DestinationNotEmpty, match="symbolic link"):
        extract_bundle(bundle.path, link, [bundle.public_key])
    assert list(real.iterdir()) == []


def test_every_refusal_is_a_bundle_error_with_an_exit_code(bundle: BuiltBundle, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "x").write_text("x")
    with pytest.raises(BundleError) as caught:
        extract_bundle(bundle.path, dest, [bundle.public_key])
    assert caught.value.exit_code == DestinationNotEmpty.exit_code
    assert caught.value.to_dict()["code"] == "destination_not_empty"


def test_a_destination_that_cannot_be_created_is_an_extraction_failure(
    bundle: BuiltBundle, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ExtractionFailed, match="cannot create"):
        extract_bundle(bundle.path, blocker / "dest", [bundle.public_key])
    assert blocker.read_text() == "not a directory"


def test_a_write_error_midway_removes_what_was_written(
    bundle: BuiltBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(root: Path, name: str) -> str:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(verify_module, "_hash_written", disk_full)
    dest = tmp_path / "dest"
    with pytest.raises(ExtractionFailed, match="No space left") as caught:
        extract_bundle(bundle.path, dest, [bundle.public_key])
    assert caught.value.exit_code == ExtractionFailed.exit_code
    assert not dest.exists()
