"""The manifest side of the format: safe member names, strict parsing, schema errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from models.bundle import MalformedManifest, file_entry, member_name_problem, parse_manifest
from models.bundle.manifest import MAX_MEMBER_NAME_LENGTH
from tests.support.bundles import MODEL_NAME, tiny_manifest


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40))
def test_every_accepted_name_stays_inside_the_target_directory(name: str) -> None:
    root = Path("/srv/slot")
    if member_name_problem(name) is None:
        resolved = (root / name).resolve()
        assert resolved.is_relative_to(root) and resolved != root
        assert "\\" not in name and not name.startswith("/") and ".." not in name.split("/")


@pytest.mark.parametrize(
    "name", ["model.onnx", "model.onnx.data", "openvino/model.xml", "w/part-1+a_b.bin", "_x", "9.bin"]
)
def test_plain_relative_names_are_safe(name: str) -> None:
    assert member_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("../x", "climbs out"),
        ("a/../../x", "climbs out"),
        ("/etc/passwd", "absolute"),
        ("C:/x", "absolute"),
        ("c:x", "absolute"),
        ("a\\..\\x", "backslash"),
        ("./x", "normalised"),
        ("a//b", "normalised"),
        ("a/", "normalised"),
        ("-rf", "characters"),
        ("mödel.onnx", "characters"),
        ("a b", "characters"),
        ("x\n", "characters"),
        ("a/" * 9 + "x", "deeper"),
        ("x" * (MAX_MEMBER_NAME_LENGTH + 1), "longer"),
    ],
)
def test_unsafe_names_say_why(name: str, reason: str) -> None:
    problem = member_name_problem(name)
    assert problem is not None and reason in problem


def _files(tmp_path: Path, *names: str) -> dict[str, Any]:
    blob = tmp_path / "blob"
    blob.write_bytes(b"x")
    return {name: file_entry(blob) for name in (MODEL_NAME, *names)}


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("../x",), "climbs out"),
        (("manifest.json",), "reserved"),
        (("MODEL.onnx",), "differ only in case"),
        (("dir", "dir/file"), "both a file and a directory"),
    ],
)
def test_the_schema_refuses_file_lists_that_cannot_be_extracted(
    tmp_path: Path, names: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        tiny_manifest(_files(tmp_path, *names))


def test_parse_manifest_round_trips_canonical_bytes(tmp_path: Path) -> None:
    manifest = tiny_manifest(_files(tmp_path))
    assert parse_manifest(manifest.canonical_bytes()) == manifest
    pretty = json.dumps(json.loads(manifest.canonical_bytes()), indent=2).encode()
    assert parse_manifest(pretty).canonical_bytes() == manifest.canonical_bytes()


def _manifest_dict(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(tiny_manifest(_files(tmp_path)).canonical_bytes())
    return data


def test_schema_errors_name_the_field(tmp_path: Path) -> None:
    data = _manifest_dict(tmp_path)
    data["outputs"][0]["shape"] = [0, 3]
    data["precision"] = "int4"
    with pytest.raises(MalformedManifest) as caught:
        parse_manifest(json.dumps(data).encode())
    assert {"outputs.0.shape", "precision"} <= set(caught.value.fields)
    assert "'precision'" in caught.value.message and "'outputs.0.shape'" in caught.value.message


def test_unknown_fields_are_schema_errors(tmp_path: Path) -> None:
    data = _manifest_dict(tmp_path)
    data["surprise"] = 1
    with pytest.raises(MalformedManifest, match="surprise"):
        parse_manifest(json.dumps(data).encode())


def test_duplicate_keys_are_refused_because_readers_could_disagree(tmp_path: Path) -> None:
    text = json.dumps(_manifest_dict(tmp_path))
    doubled = text[:-1] + ', "version": "9.9.9"}'
    with pytest.raises(MalformedManifest, match="repeats the key 'version'") as caught:
        parse_manifest(doubled.encode())
    assert caught.value.fields == ("version",)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b'{"name": NaN}', "NaN"),
        (b"{", "not valid JSON"),
    ],
)
def test_non_manifest_json_is_malformed(data: bytes, message: str) -> None:
    with pytest.raises(MalformedManifest, match=message):
        parse_manifest(data)


def test_a_newer_schema_version_asks_for_an_upgrade(tmp_path: Path) -> None:
    data = _manifest_dict(tmp_path)
    data["schema_version"] = 2
    with pytest.raises(MalformedManifest, match="schema version 2") as caught:
        parse_manifest(json.dumps(data).encode())
    assert "upgrade edgefleet" in caught.value.hint
