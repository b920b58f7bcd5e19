"""Every way to spoil a bundle fails with its own error class, exit code and a message naming the culprit."""

from __future__ import annotations

import base64
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.bundle import (
    ALL_ERRORS,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    BadSignature,
    BundleError,
    HashMismatch,
    MalformedBundle,
    OversizedMember,
    UnsafePath,
    UntrustedKey,
    canonical_json,
    extract_bundle,
    inspect_bundle,
    verify_bundle,
)
from tests.support.bundles import (
    MODEL_NAME,
    TAMPER_CASES,
    BuiltBundle,
    RawMember,
    TamperCase,
    build_test_bundle,
    flip_byte,
    member_offset,
    read_members,
    write_members,
)

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> BuiltBundle:
    return build_test_bundle(tmp_path_factory.mktemp("good"))


def test_every_error_has_its_own_code_and_exit_code() -> None:
    codes = [cls.code for cls in ALL_ERRORS]
    exit_codes = [cls.exit_code for cls in ALL_ERRORS]
    assert len(set(codes)) == len(codes)
    assert len(set(exit_codes)) == len(exit_codes)
    assert all(code >= 10 for code in exit_codes)  # never 1 (generic) or 2 (usage)
    assert all(issubclass(cls, BundleError) and cls.default_hint for cls in ALL_ERRORS)


@pytest.mark.parametrize("case", TAMPER_CASES, ids=lambda case: case.id)
def test_tampered_bundle_fails_with_its_own_error(
    case: TamperCase, bundle: BuiltBundle, tmp_path: Path
) -> None:
    spoiled = tmp_path / f"{case.id}.efb"
    token = case.make(bundle, spoiled)
    with pytest.raises(BundleError) as caught:
        verify_bundle(spoiled, [bundle.public_key])
    assert type(caught.value) is case.error
    assert token in caught.value.message
    assert caught.value.hint  # always says what to do next


@pytest.mark.parametrize("case", TAMPER_CASES, ids=lambda case: case.id)
def test_extract_refuses_the_same_way_and_leaves_nothing(
    case: TamperCase, bundle: BuiltBundle, tmp_path: Path
) -> None:
    spoiled = tmp_path / f"{case.id}.efb"
    case.make(bundle, spoiled)
    dest = tmp_path / "slot"
    with pytest.raises(case.error):
        extract_bundle(spoiled, dest, [bundle.public_key])
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [spoiled.name]


@FUZZ
@given(data=st.data())
def test_any_flipped_model_byte_is_a_hash_mismatch_naming_the_file(bundle: BuiltBundle, data: Any) -> None:
    size = bundle.manifest.files[MODEL_NAME].size
    index = data.draw(st.integers(0, size - 1), label="offset")
    mask = data.draw(st.integers(1, 255), label="xor mask")
    with tempfile.TemporaryDirectory() as scratch:
        spoiled = flip_byte(bundle.path, Path(scratch) / "spoiled.efb", MODEL_NAME, index, mask)
        with pytest.raises(HashMismatch) as caught:
            verify_bundle(spoiled, [bundle.public_key])
    error = caught.value
    assert error.file == MODEL_NAME
    assert error.expected == bundle.manifest.files[MODEL_NAME].sha256
    assert error.got != error.expected and error.got in error.message


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [leaf for key in sorted(value) for leaf in _leaves(value[key], (*path, key))] or [path]
    if isinstance(value, list):
        return [leaf for i, item in enumerate(value) for leaf in _leaves(item, (*path, i))] or [path]
    return [path]


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


json_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=12), st.lists(st.integers())
)


@FUZZ
@given(data=st.data())
def test_any_changed_manifest_field_breaks_the_signature(bundle: BuiltBundle, data: Any) -> None:
    original = json.loads(bundle.manifest.canonical_bytes())
    leaves = [leaf for leaf in _leaves(original) if leaf]
    path = data.draw(st.sampled_from(leaves), label="field")
    tampered = json.loads(bundle.manifest.canonical_bytes())
    old = _get(original, path)
    new = data.draw(json_values.filter(lambda v: v != old or type(v) is not type(old)), label="new value")
    _set(tampered, path, new)
    members = [
        RawMember(m.name, canonical_json(tampered)) if m.name == MANIFEST_NAME else m
        for m in read_members(bundle.path)
    ]
    with tempfile.TemporaryDirectory() as scratch:
        spoiled = write_members(Path(scratch) / "spoiled.efb", members)
        with pytest.raises(BadSignature, match=bundle.key_id):
            verify_bundle(spoiled, [bundle.public_key])


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


@FUZZ
@given(index=st.integers(0, 63), mask=st.integers(1, 255))
def test_any_changed_signature_byte_is_refused(bundle: BuiltBundle, index: int, mask: int) -> None:
    members = read_members(bundle.path)
    envelope = json.loads(next(m.data for m in members if m.name == SIGNATURE_NAME))
    raw = bytearray(base64.b64decode(envelope["signature"]))
    raw[index] ^= mask
    envelope["signature"] = base64.b64encode(bytes(raw)).decode()
    members = [
        RawMember(m.name, canonical_json(envelope)) if m.name == SIGNATURE_NAME else m for m in members
    ]
    with tempfile.TemporaryDirectory() as scratch:
        spoiled = write_members(Path(scratch) / "spoiled.efb", members)
        with pytest.raises(BadSignature):
            verify_bundle(spoiled, [bundle.public_key])


segment = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,8}", fullmatch=True)
segments = st.lists(segment, min_size=1, max_size=3)
traversal_names = st.one_of(
    st.builds(lambda ups, tail: "../" * ups + "/".join(tail), st.integers(1, 4), segments),
    st.builds(
        lambda head, ups, tail: "/".join([*head, *[".."] * ups, *tail]),
        st.lists(segment, max_size=2),
        st.integers(1, 4),
        segments,
    ),
    st.builds(lambda tail: "/" + "/".join(tail), segments),
    st.builds(lambda tail: "..\\" + "\\".join(tail), segments),
    st.builds(lambda drive, tail: f"{drive}:/" + "/".join(tail), st.sampled_from("CDcz"), segments),
    st.builds(lambda tail: "./" + "/".join(tail), segments),
    st.builds(lambda tail: "/".join(tail) + "/..", segments),
)


@FUZZ
@given(name=traversal_names, position=st.integers(0, 3))
def test_traversal_names_are_unsafe_wherever_they_sit_and_nothing_escapes(
    bundle: BuiltBundle, name: str, position: int
) -> None:
    members = read_members(bundle.path)
    members.insert(position, RawMember(name, b"escaped"))
    with tempfile.TemporaryDirectory() as scratch:
        sandbox = Path(scratch) / "sandbox"
        target = sandbox / "a" / "b" / "dest"  # deep enough that '../../..' stays inside the sandbox
        target.parent.mkdir(parents=True)
        spoiled = write_members(Path(scratch) / "spoiled.efb", members)
        with pytest.raises(UnsafePath) as caught:
            extract_bundle(spoiled, target, [bundle.public_key])
        assert caught.value.member == name
        assert [p for p in sandbox.rglob("*") if p.is_file()] == []
        assert not target.exists()


def test_member_over_the_limit_is_oversized(bundle: BuiltBundle) -> None:
    with pytest.raises(OversizedMember) as caught:
        verify_bundle(bundle.path, [bundle.public_key], max_member_bytes=100)
    assert caught.value.member in bundle.manifest.files
    assert caught.value.limit == 100 and caught.value.size > 100


def test_manifest_over_its_limit_is_oversized(bundle: BuiltBundle) -> None:
    with pytest.raises(OversizedMember, match=MANIFEST_NAME):
        verify_bundle(bundle.path, [bundle.public_key], max_manifest_bytes=64)
    with pytest.raises(OversizedMember, match=MANIFEST_NAME):
        inspect_bundle(bundle.path, max_manifest_bytes=64)


def test_a_huge_pax_header_is_refused_before_it_is_read(bundle: BuiltBundle, tmp_path: Path) -> None:
    good = bundle.path.read_bytes()
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 512 * 1024**2  # tarfile would read all of it in one call
    spoiled = tmp_path / "pax-bomb.efb"
    spoiled.write_bytes(info.tobuf(tarfile.USTAR_FORMAT) + good)
    with pytest.raises(OversizedMember, match="extended header"):
        verify_bundle(spoiled, [bundle.public_key])


def test_missing_end_of_archive_marker_is_truncation(bundle: BuiltBundle, tmp_path: Path) -> None:
    spoiled = write_members(tmp_path / "cut.efb", read_members(bundle.path), end_marker=False)
    with pytest.raises(MalformedBundle, match="end-of-archive"):
        verify_bundle(spoiled, [bundle.public_key])


def test_garbage_after_the_last_member_is_refused(bundle: BuiltBundle, tmp_path: Path) -> None:
    members = read_members(bundle.path)
    blob = write_members(tmp_path / "x.efb", members, end_marker=False).read_bytes()
    spoiled = tmp_path / "garbage.efb"
    spoiled.write_bytes(blob + b"\x01" * 512 + bytes(1024))
    with pytest.raises(MalformedBundle, match=r"truncated or corrupt"):
        verify_bundle(spoiled, [bundle.public_key])


@pytest.mark.parametrize("content", [b"", b"\x00" * 1024], ids=["empty-file", "empty-tar"])
def test_empty_files_are_malformed(tmp_path: Path, bundle: BuiltBundle, content: bytes) -> None:
    path = tmp_path / "empty.efb"
    path.write_bytes(content)
    with pytest.raises(MalformedBundle, match="empty"):
        verify_bundle(path, [bundle.public_key])


def test_a_missing_path_or_a_non_file_is_reported_as_such(tmp_path: Path, bundle: BuiltBundle) -> None:
    with pytest.raises(MalformedBundle, match="does not exist"):
        verify_bundle(tmp_path / "nope.efb", [bundle.public_key])
    with pytest.raises(MalformedBundle, match="not a regular file"):
        verify_bundle(tmp_path, [bundle.public_key])
    fifo = tmp_path / "pipe.efb"
    os.mkfifo(fifo)
    with pytest.raises(MalformedBundle, match="not a regular file"):  # and does not hang
        inspect_bundle(fifo)


def test_no_trusted_keys_means_untrusted(bundle: BuiltBundle) -> None:
    with pytest.raises(UntrustedKey) as caught:
        verify_bundle(bundle.path, [])
    assert caught.value.key_id == bundle.key_id
    assert "--trusted-key" in caught.value.hint


def test_case_insensitive_clash_is_unsafe(bundle: BuiltBundle, tmp_path: Path) -> None:
    members = [*read_members(bundle.path), RawMember(MODEL_NAME.upper(), b"shadow")]
    spoiled = write_members(tmp_path / "clash.efb", members)
    with pytest.raises(UnsafePath, match="differ only in case"):
        verify_bundle(spoiled, [bundle.public_key])


def test_size_in_header_that_disagrees_with_manifest_is_a_mismatch(
    bundle: BuiltBundle, tmp_path: Path
) -> None:
    members = [
        RawMember(m.name, m.data + b"!") if m.name == MODEL_NAME else m for m in read_members(bundle.path)
    ]
    spoiled = write_members(tmp_path / "grown.efb", members)
    with pytest.raises(HashMismatch, match="bytes in the bundle") as caught:
        verify_bundle(spoiled, [bundle.public_key])
    assert caught.value.file == MODEL_NAME


def test_flip_byte_targets_the_member_data(bundle: BuiltBundle, tmp_path: Path) -> None:
    # Guards the helper the fuzz test relies on: only the model's bytes change.
    offset, size = member_offset(bundle.path, MODEL_NAME)
    spoiled = flip_byte(bundle.path, tmp_path / "f.efb", MODEL_NAME, 0)
    before, after = bundle.path.read_bytes(), spoiled.read_bytes()
    changed = [i for i in range(len(before)) if before[i] != after[i]]
    assert changed == [offset] and size > 0
