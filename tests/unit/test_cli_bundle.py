"""`edgefleet keys` and `edgefleet bundle`: outputs, JSON, and one exit code per refusal."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner, Result

from edgefleet.cli import app
from models.bundle import (
    DestinationNotEmpty,
    KeyFileError,
    OversizedMember,
    QuantParams,
    TensorSpec,
    UntrustedKey,
    key_id,
    load_public_key,
)
from tests.support.bundles import (
    IN_FEATURES,
    INPUT_NAME,
    MODEL_NAME,
    TAMPER_CASES,
    BuiltBundle,
    TamperCase,
    build_test_bundle,
)

runner = CliRunner()


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Rich wraps long lines; compare text with all whitespace runs collapsed."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> BuiltBundle:
    return build_test_bundle(tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def trusted(bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trusted") / "signer.pub.pem"
    path.write_bytes(
        bundle.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


# --- keys ---------------------------------------------------------------------------------------


def test_keys_generate_prints_paths_and_key_id(tmp_path: Path) -> None:
    result = invoke("keys", "generate", "--out", tmp_path / "keys", "--name", "release")
    assert result.exit_code == 0, result.output
    private, public = tmp_path / "keys" / "release.key", tmp_path / "keys" / "release.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    kid = key_id(load_public_key(public))
    out = flat(result.stdout)
    assert kid in out and str(private) in out and str(public) in out


def test_keys_generate_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = invoke("keys", "generate", "--out", tmp_path, "--json")
    assert first.exit_code == 0
    original = json.loads(first.stdout)
    again = invoke("keys", "generate", "--out", tmp_path)
    assert again.exit_code == KeyFileError.exit_code
    assert "--force" in flat(again.stderr) and "Traceback" not in again.output
    forced = invoke("keys", "generate", "--out", tmp_path, "--force", "--json")
    assert forced.exit_code == 0
    replaced = json.loads(forced.stdout)
    assert replaced["public_key"] == original["public_key"] and replaced["key_id"] != original["key_id"]


def test_keys_show_gives_the_same_id_for_both_halves(tmp_path: Path) -> None:
    created = json.loads(invoke("keys", "generate", "--out", tmp_path, "--json").stdout)
    for path, kind in ((created["public_key"], "public"), (created["private_key"], "private")):
        shown = invoke("keys", "show", path, "--json")
        assert shown.exit_code == 0
        assert json.loads(shown.stdout) == {"path": path, "kind": kind, "key_id": created["key_id"]}
    missing = invoke("keys", "show", tmp_path / "absent.pub.pem")
    assert missing.exit_code == KeyFileError.exit_code and "does not exist" in flat(missing.stderr)


# --- inspect ------------------------------------------------------------------------------------


def test_inspect_shows_model_signature_files_and_figures(bundle: BuiltBundle) -> None:
    result = invoke("bundle", "inspect", bundle.path)
    assert result.exit_code == 0, result.output
    out = flat(result.stdout)
    manifest = bundle.manifest
    for expected in (
        manifest.name,
        manifest.version,
        manifest.profile,
        "onnxruntime",
        "fp32",
        *manifest.files,
        *(spec.name for spec in manifest.inputs + manifest.outputs),
        *manifest.validation,
        *manifest.benchmark,
        bundle.key_id,
        "not verified",
    ):
        assert str(expected) in out, expected
    for entry in manifest.files.values():
        assert entry.sha256[:12] in out


def test_inspect_json_is_the_manifest_and_the_claimed_signer(bundle: BuiltBundle) -> None:
    result = invoke("bundle", "inspect", bundle.path, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["manifest"] == bundle.manifest.model_dump(mode="json")
    assert data["signer_key_id"] == bundle.key_id
    assert data["signature_verified"] is False and data["signed"] is True


def test_inspect_shows_quantization_parameters(tmp_path: Path) -> None:
    quantized = TensorSpec(
        name=INPUT_NAME,
        dtype="int8",
        shape=[1, IN_FEATURES],
        layout="NC",
        quantization=QuantParams(scale=0.0125, zero_point=-3, dtype="int8"),
    )
    built = build_test_bundle(tmp_path, inputs=[quantized], precision="int8")
    out = flat(invoke("bundle", "inspect", built.path).stdout)
    assert "scale=0.0125" in out and "zero_point=-3" in out and "float32" in out


# --- verify -------------------------------------------------------------------------------------


def test_verify_prints_a_green_line_with_the_key_id(bundle: BuiltBundle, trusted: Path) -> None:
    result = invoke("bundle", "verify", bundle.path, "--trusted-key", trusted)
    assert result.exit_code == 0, result.output
    out = flat(result.stdout)
    assert "verified" in out and bundle.key_id in out


def test_verify_json_and_key_directories(bundle: BuiltBundle, trusted: Path) -> None:
    result = invoke("bundle", "verify", bundle.path, "-k", trusted.parent, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["key_id"] == bundle.key_id
    assert data["version"] == bundle.manifest.version and data["files"] == len(bundle.manifest.files)


@pytest.mark.parametrize("case", TAMPER_CASES, ids=lambda case: case.id)
def test_each_refusal_has_its_own_exit_code_and_message(
    case: TamperCase, bundle: BuiltBundle, trusted: Path, tmp_path: Path
) -> None:
    spoiled = tmp_path / f"{case.id}.efb"
    token = case.make(bundle, spoiled)
    result = invoke("bundle", "verify", spoiled, "--trusted-key", trusted)
    assert result.exit_code == case.error.exit_code
    message = flat(result.stderr)
    assert message.startswith("error:") and token in message and "hint:" in message
    assert "Traceback" not in result.output
    as_json = invoke("bundle", "verify", spoiled, "--trusted-key", trusted, "--json")
    assert as_json.exit_code == case.error.exit_code
    error = json.loads(as_json.stdout)["error"]
    assert error["code"] == case.error.code and token in error["message"]


def test_trusted_keys_can_come_from_the_environment(
    bundle: BuiltBundle, trusted: Path, tmp_path: Path
) -> None:
    other = json.loads(invoke("keys", "generate", "--out", tmp_path, "--json").stdout)["public_key"]
    keys = f"{other}{os.pathsep}{trusted}"
    result = runner.invoke(app, ["bundle", "verify", str(bundle.path)], env={"EDGEFLEET_TRUSTED_KEYS": keys})
    assert result.exit_code == 0, result.output
    assert bundle.key_id in flat(result.stdout)


def test_verify_with_another_key_names_both_ids(bundle: BuiltBundle, tmp_path: Path) -> None:
    other = json.loads(invoke("keys", "generate", "--out", tmp_path, "--json").stdout)
    result = invoke("bundle", "verify", bundle.path, "-k", other["public_key"])
    assert result.exit_code == UntrustedKey.exit_code
    assert bundle.key_id in flat(result.stderr) and other["key_id"] in flat(result.stderr)


def test_verify_member_limit_option(bundle: BuiltBundle, trusted: Path) -> None:
    result = invoke("bundle", "verify", bundle.path, "-k", trusted, "--max-member-bytes", "100")
    assert result.exit_code == OversizedMember.exit_code
    assert "--max-member-bytes" in flat(result.stderr)


def test_verify_with_an_unreadable_trusted_key(bundle: BuiltBundle, tmp_path: Path) -> None:
    result = invoke("bundle", "verify", bundle.path, "-k", tmp_path / "nope.pub.pem")
    assert result.exit_code == KeyFileError.exit_code
    assert "does not exist" in flat(result.stderr)


# --- extract ------------------------------------------------------------------------------------


def test_extract_command_writes_files_then_refuses_a_full_directory(
    bundle: BuiltBundle, trusted: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "slot"
    result = invoke("bundle", "extract", bundle.path, "--dest", dest, "-k", trusted, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["directory"] == str(dest.resolve())
    assert (dest / MODEL_NAME).read_bytes() == bundle.sources[MODEL_NAME].read_bytes()
    again = invoke("bundle", "extract", bundle.path, "--dest", dest, "-k", trusted)
    assert again.exit_code == DestinationNotEmpty.exit_code
    assert "not empty" in flat(again.stderr)
