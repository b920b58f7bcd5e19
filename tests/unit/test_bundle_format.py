"""The happy path of the bundle format: pack, inspect, verify, extract, and byte-for-byte determinism."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from models.bundle import (
    GOLDEN_NAME,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    ExtraFile,
    FileRole,
    HashMismatch,
    MissingFile,
    build_manifest_files,
    extract_bundle,
    file_entry,
    inspect_bundle,
    inspect_bundle_details,
    key_id,
    pack_bundle,
    parse_signature,
    verify_bundle,
)
from tests.support.bundles import (
    MODEL_NAME,
    build_test_bundle,
    fixed_private_key,
    golden_arrays,
    read_members,
    tiny_manifest,
    write_members,
)


def test_a_built_bundle_verifies_and_names_its_signer(tmp_path: Path) -> None:
    bundle = build_test_bundle(tmp_path)
    verified = verify_bundle(bundle.path, [bundle.public_key])
    assert verified.key_id == key_id(bundle.public_key)
    assert verified.manifest == bundle.manifest
    assert verified.sha256 == hashlib.sha256(bundle.path.read_bytes()).hexdigest()
    assert verified.size == bundle.path.stat().st_size
    assert verified.manifest_bytes == bundle.manifest.canonical_bytes()
    assert verified.directory is None


def test_verification_picks_the_signer_among_several_trusted_keys(tmp_path: Path) -> None:
    bundle = build_test_bundle(tmp_path, private_key=fixed_private_key(3))
    others = [fixed_private_key(seed).public_key() for seed in (1, 2)]
    verified = verify_bundle(bundle.path, [*others, bundle.public_key])
    assert verified.key_id == key_id(fixed_private_key(3).public_key())


def test_layout_is_manifest_then_signature_then_sorted_files_with_neutral_headers(tmp_path: Path) -> None:
    bundle = build_test_bundle(tmp_path, extra_files={"b/extra.bin": b"1", "a.txt": b"2"})
    with tarfile.open(bundle.path, "r:") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names[:2] == [MANIFEST_NAME, SIGNATURE_NAME]
        assert names[2:] == sorted(bundle.manifest.files)
        for member in members:
            assert member.isreg()
            assert (member.mtime, member.uid, member.gid, member.mode) == (0, 0, 0, 0o644)
            assert (member.uname, member.gname) == ("", "")
        manifest_member = tar.extractfile(MANIFEST_NAME)
        assert manifest_member is not None
        assert manifest_member.read() == bundle.manifest.canonical_bytes()


def test_signature_is_a_small_json_envelope_over_the_canonical_manifest(tmp_path: Path) -> None:
    bundle = build_test_bundle(tmp_path)
    members = {m.name: m.data for m in read_members(bundle.path)}
    envelope = json.loads(members[SIGNATURE_NAME])
    assert set(envelope) == {"alg", "key_id", "signature"}
    assert envelope["alg"] == "ed25519"
    assert envelope["key_id"] == hashlib.sha256(bundle.public_key.public_bytes_raw()).hexdigest()[:16]
    parsed = parse_signature(members[SIGNATURE_NAME])
    bundle.public_key.verify(parsed.signature, bundle.manifest.canonical_bytes())  # raises if wrong


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    first = build_test_bundle(tmp_path / "one")
    second = build_test_bundle(tmp_path / "two")
    assert first.path.read_bytes() == second.path.read_bytes()
    changed = build_test_bundle(tmp_path / "three", version="1.0.1")
    assert changed.path.read_bytes() != first.path.read_bytes()


def test_extract_writes_the_verified_files_and_the_manifest(tmp_path: Path) -> None:
    bundle = build_test_bundle(tmp_path, extra_files={"nested/dir/extra.bin": b"\x00\x01"})
    dest = tmp_path / "slot"
    verified = extract_bundle(bundle.path, dest, [bundle.public_key])
    assert verified.directory == dest.resolve()
    written = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert written == sorted([*bundle.manifest.files, MANIFEST_NAME, SIGNATURE_NAME])
    for name in bundle.manifest.files:
        assert (dest / name).read_bytes() == bundle.sources[name].read_bytes()
    assert (dest / MANIFEST_NAME).read_bytes() == bundle.manifest.canonical_bytes()
    golden = np.load(dest / GOLDEN_NAME)
    expected = golden_arrays()
    assert set(golden.files) == set(expected)
    np.testing.assert_array_equal(golden["y"], expected["y"])


def test_extract_into_an_existing_empty_directory(tmp_path: Path) -> None:
    bundle = build_test_bundle(tmp_path)
    dest = tmp_path / "empty"
    dest.mkdir()
    extract_bundle(bundle.path, dest, [bundle.public_key])
    assert (dest / MODEL_NAME).read_bytes() == bundle.sources[MODEL_NAME].read_bytes()


def test_inspect_needs_no_key_and_reports_the_claimed_signer(tmp_path: Path) -> None:
    bundle = build_test_bundle(tmp_path)
    assert inspect_bundle(bundle.path) == bundle.manifest
    details = inspect_bundle_details(bundle.path)
    assert details.signed and details.signer_key_id == bundle.key_id
    assert details.size == bundle.path.stat().st_size


def test_inspect_accepts_an_unsigned_bundle_that_verify_refuses(tmp_path: Path) -> None:
    bundle = build_test_bundle(tmp_path)
    unsigned = write_members(
        tmp_path / "unsigned.efb", [m for m in read_members(bundle.path) if m.name != SIGNATURE_NAME]
    )
    details = inspect_bundle_details(unsigned)
    assert details.manifest == bundle.manifest
    assert not details.signed and details.signer_key_id is None


def test_file_entry_streams_sha256_and_size(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    data = bytes(range(256)) * 9000  # over one read chunk
    path.write_bytes(data)
    entry = file_entry(path, role="weights")
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert entry.size == len(data)
    assert entry.role == "weights"
    files = build_manifest_files({"w.bin": (path, "weights")})
    assert files == {"w.bin": entry}


def _sources(tmp_path: Path) -> tuple[dict[str, Path], dict[str, tuple[Path, FileRole]]]:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"model bytes")
    return {MODEL_NAME: model}, {MODEL_NAME: (model, "model")}


def test_pack_refuses_a_missing_source(tmp_path: Path) -> None:
    sources, roles = _sources(tmp_path)
    manifest = tiny_manifest(build_manifest_files(roles) | {"other.bin": file_entry(sources[MODEL_NAME])})
    with pytest.raises(MissingFile, match=r"other\.bin"):
        pack_bundle(tmp_path / "out.efb", manifest, sources, fixed_private_key())
    assert list(tmp_path.glob("*.efb")) == [] and list(tmp_path.glob(".*partial")) == []


def test_pack_refuses_an_unlisted_source(tmp_path: Path) -> None:
    sources, roles = _sources(tmp_path)
    manifest = tiny_manifest(build_manifest_files(roles))
    with pytest.raises(ExtraFile, match=r"stray\.bin"):
        pack_bundle(
            tmp_path / "out.efb", manifest, sources | {"stray.bin": sources[MODEL_NAME]}, fixed_private_key()
        )


@pytest.mark.parametrize("new_content", [b"model bytez", b"longer model bytes"], ids=["same-size", "resized"])
def test_pack_refuses_a_source_changed_after_hashing_and_leaves_nothing(
    tmp_path: Path, new_content: bytes
) -> None:
    sources, roles = _sources(tmp_path)
    manifest = tiny_manifest(build_manifest_files(roles))
    sources[MODEL_NAME].write_bytes(new_content)
    out = tmp_path / "bundles" / "out.efb"
    with pytest.raises(HashMismatch, match=MODEL_NAME) as caught:
        pack_bundle(out, manifest, sources, fixed_private_key())
    assert caught.value.file == MODEL_NAME
    assert list(out.parent.iterdir()) == []  # no bundle and no temporary file left behind


def test_pack_replaces_an_existing_bundle_atomically(tmp_path: Path) -> None:
    first = build_test_bundle(tmp_path, version="1.0.0")
    second = build_test_bundle(tmp_path, version="1.1.0")
    assert first.path == second.path
    assert verify_bundle(second.path, [second.public_key]).manifest.version == "1.1.0"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_member_names_survive_long_nested_paths(tmp_path: Path) -> None:
    long_name = "/".join(["segment-" + "x" * 20] * 6) + "/weights.bin"  # > 100 chars: pax header
    bundle = build_test_bundle(tmp_path, extra_files={long_name: b"w"})
    extracted = extract_bundle(bundle.path, tmp_path / "out", [bundle.public_key])
    assert extracted.directory is not None
    assert (extracted.directory / long_name).read_bytes() == b"w"


def test_a_bundle_with_trailing_tar_padding_from_other_writers_still_verifies(tmp_path: Path) -> None:
    bundle = build_test_bundle(tmp_path)
    members = read_members(bundle.path)
    rewritten = write_members(tmp_path / "rewritten.efb", members)  # different padding than tarfile's
    assert rewritten.read_bytes() != bundle.path.read_bytes()
    assert verify_bundle(rewritten, [bundle.public_key]).manifest == bundle.manifest
    extra_padding = tmp_path / "padded.efb"
    extra_padding.write_bytes(rewritten.read_bytes() + bytes(8192))
    assert verify_bundle(extra_padding, [bundle.public_key]).manifest == bundle.manifest


def test_models_bundle_imports_no_ml_framework() -> None:
    code = (
        "import sys, models.bundle, models.versioning, tests.support.bundles\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'nncf', 'onnx') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
