"""The agent as a process: what it imports, how it starts, refuses and stops.

The import check is honest about the real process: with ``EDGEFLEET_AGENT_MODULES_DUMP`` set the
agent writes its ``sys.modules`` when it is ready and again after it has drained on SIGTERM, so
the list covers everything it loaded while serving all three runtimes.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

from edge_agent.serving import MODULES_DUMP_ENV, heavy_modules
from models.bundle import HashMismatch, KeyFileError, UntrustedKey
from tests.support.agent_process import run_agent, running_agent
from tests.support.bundles import flip_byte, write_members
from tests.support.digits_bundles import FORMATS, INPUT_NAME, OUTPUT_NAME, BundleSet, shared_bundles

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> BundleSet:
    return shared_bundles(tmp_path_factory)


def test_the_agent_never_imports_a_training_framework(digits: BundleSet, tmp_path: Path) -> None:
    dump = tmp_path / "modules.json"
    bundles = [digits.path(fmt) for fmt in FORMATS]
    with running_agent(bundles, digits.public_key_path, tmp_path, env={MODULES_DUMP_ENV: str(dump)}) as agent:
        with triton.InferenceServerClient(agent.url) as client:
            for fmt in FORMATS:
                tensor = triton.InferInput(INPUT_NAME, list(digits.golden_inputs.shape), "FP32")
                tensor.set_data_from_numpy(digits.golden_inputs)
                assert client.infer(digits.name(fmt), [tensor]).as_numpy(OUTPUT_NAME).shape == (16, 10)
        assert agent.stop() == 0
    report = json.loads(dump.read_text())
    assert report["stage"] == "stopped" and report["pid"] == agent.pid
    modules = report["modules"]
    # The runtimes did load (so the check is not vacuous) ...
    assert {"onnxruntime", "openvino", "ai_edge_litert", "grpc"} <= set(modules)
    # ... and no training or conversion framework came with them.
    assert heavy_modules(modules) == []
    assert "agent ready" in agent.log() and "stopped" in agent.log()


def test_sigterm_drains_and_exits_cleanly(digits: BundleSet, tmp_path: Path) -> None:
    with running_agent([digits.path("onnx")], digits.public_key_path, tmp_path) as agent:
        uds = agent.uds
        with triton.InferenceServerClient(agent.uds_url) as client:
            assert client.is_model_ready(digits.name("onnx"))
        assert agent.stop() == 0
    log = agent.log()
    assert "received SIGTERM" in log and "unloaded digits-cnn-onnx 1.0.0" in log
    assert "Traceback" not in log
    assert uds is not None and not uds.exists()


def test_a_tampered_bundle_is_refused_with_the_verifier_exit_code(digits: BundleSet, tmp_path: Path) -> None:
    tampered = flip_byte(digits.path("onnx"), tmp_path / "tampered.efb", "model.onnx", 1000)
    result = run_agent([tampered], digits.public_key_path, tmp_path)
    assert result.returncode == HashMismatch.exit_code
    assert "refused" in result.stderr and "model.onnx" in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_bundle_signed_by_another_key_is_refused(digits: BundleSet, tmp_path: Path) -> None:
    from tests.support.bundles import fixed_private_key
    from tests.support.digits_bundles import write_public_key

    other_key = write_public_key(fixed_private_key(seed=5), tmp_path / "other.pub")
    result = run_agent([digits.path("onnx")], other_key, tmp_path)
    assert result.returncode == UntrustedKey.exit_code
    assert "not trusted" in result.stderr and "Traceback" not in result.stderr


def test_a_missing_trusted_key_file_is_a_clear_error(digits: BundleSet, tmp_path: Path) -> None:
    result = run_agent([digits.path("onnx")], tmp_path / "missing.pub.pem", tmp_path)
    assert result.returncode == KeyFileError.exit_code
    assert "missing.pub.pem" in result.stderr and "Traceback" not in result.stderr


def test_a_truncated_file_is_refused_before_anything_loads(digits: BundleSet, tmp_path: Path) -> None:
    broken = write_members(tmp_path / "empty.efb", [])
    result = run_agent([digits.path("onnx"), broken], digits.public_key_path, tmp_path)
    assert result.returncode != 0
    assert "empty.efb" in result.stderr and "Traceback" not in result.stderr
    assert "agent ready" not in result.stderr


def test_a_taken_port_is_a_clear_error_naming_the_option(digits: BundleSet, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_agent(
            [digits.path("onnx")],
            digits.public_key_path,
            tmp_path,
            extra=["--grpc", f"127.0.0.1:{port}"],
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "--grpc" in result.stderr
    assert "Traceback" not in result.stderr


def test_unix_socket_only(digits: BundleSet, tmp_path: Path) -> None:
    with running_agent(
        [digits.path("openvino")], digits.public_key_path, tmp_path, extra=["--grpc", "none"]
    ) as agent:
        assert agent.tcp is None
        with triton.InferenceServerClient(agent.uds_url) as client:
            tensor = triton.InferInput(INPUT_NAME, [1, 1, 8, 8], "FP32")
            tensor.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.float32))
            assert client.infer(digits.name("openvino"), [tensor]).as_numpy(OUTPUT_NAME).shape == (1, 10)
