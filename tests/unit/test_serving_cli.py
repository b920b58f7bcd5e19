"""``edgefleet agent serve``: options and the errors it reports before it serves anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cli import agent
from models.bundle import KeyFileError
from tests.support.bundles import build_test_bundle
from tests.support.digits_bundles import write_public_key

runner = CliRunner()


@pytest.fixture
def bundle_and_key(tmp_path: Path) -> tuple[Path, Path]:
    built = build_test_bundle(tmp_path / "bundle")
    return built.path, write_public_key(built.private_key, tmp_path / "trusted.pub")


def serve(*args: str) -> tuple[int, str]:
    result = runner.invoke(agent.app, ["serve", *args])
    return result.exit_code, result.output


def test_serve_documents_every_option() -> None:
    code, output = serve("--help")
    assert code == 0
    for option in (
        "--bundle",
        "--trusted-key",
        "--grpc",
        "--uds",
        "--profile",
        "--max-message-mb",
        "--max-batch",
        "--batch-delay-ms",
        "--data-dir",
    ):
        assert option in output


def test_an_address_without_a_port_is_refused(bundle_and_key: tuple[Path, Path]) -> None:
    bundle, key = bundle_and_key
    code, output = serve("--bundle", str(bundle), "--trusted-key", str(key), "--grpc", "localhost")
    assert code == 1 and "not HOST:PORT" in output and "Traceback" not in output


def test_nothing_to_listen_on_is_refused(bundle_and_key: tuple[Path, Path]) -> None:
    bundle, key = bundle_and_key
    code, output = serve("--bundle", str(bundle), "--trusted-key", str(key), "--grpc", "none")
    assert code == 1 and "nothing to listen on" in output and "--uds" in output


def test_a_missing_key_file_exits_with_the_key_error_code(
    bundle_and_key: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle, _ = bundle_and_key
    missing = tmp_path / "nobody.pub.pem"
    code, output = serve(
        "--bundle", str(bundle), "--trusted-key", str(missing), "--data-dir", str(tmp_path / "d")
    )
    assert code == KeyFileError.exit_code and "nobody.pub.pem" in output


def test_an_unknown_profile_points_at_the_profile_list(
    bundle_and_key: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle, key = bundle_and_key
    code, output = serve(
        "--bundle",
        str(bundle),
        "--trusted-key",
        str(key),
        "--profile",
        "toaster-9000",
        "--data-dir",
        str(tmp_path),
    )
    assert code == 1 and "toaster-9000" in output and "Traceback" not in output


def test_importing_the_command_loads_no_serving_stack() -> None:
    code = (
        "import sys, edgefleet.cli.agent; "
        "print(sorted(m for m in ('grpc', 'numpy', 'onnxruntime', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
