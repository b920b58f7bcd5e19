"""Any input and output signature (issue 12, part 2): scalars, a batch off axis 0, recurrent state.

A streaming voice-activity model shaped like Silero-VAD: a chunk of audio ``input`` [N, 64], a
recurrent ``state`` [2, N, H] (batch on axis 1) and a scalar sample rate ``sr`` (int64, shape []),
returning a probability [N, 1] and the next state ``stateN`` [2, N, H]. Converted by the real
converter for an ONNX, an OpenVINO and a TFLite profile (whose model holds ``sr`` as int32); each
bundle is opened as the agent opens it and must answer like torch, pass its own golden check,
and be served over gRPC to tritonclient, which sends a scalar INT64 and carries the state from
one call to the next. ``--state stateN=state``
pairs the state output with its input: the manifest records it, and the converter runs the
evaluation set as a stream (the evaluation set gives only the initial state).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton

from converter import ConversionFailed, ConversionReport, convert
from edge_agent.ota.health import load_golden, run_golden
from edge_agent.runtimes import RuntimeSession, open_bundle_session
from models.bundle import extract_bundle, generate_keypair, load_public_key, verify_bundle
from models.bundle.manifest import Manifest
from models.stats import ReferenceStats, count_window
from tests.support.agent_process import running_agent
from tests.support.tiny_vad import CHUNK, HIDDEN, INPUTS, NAME, TinyVad
from tests.support.tiny_vad import chunks as _chunks

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ONNX_PROFILE, INTEL, PI = "generic-x86", "intel-x86-openvino", "raspberry-pi-5"
PROFILES = (ONNX_PROFILE, INTEL, PI)


@dataclass(frozen=True)
class Converted:
    model: TinyVad
    report: ConversionReport
    bundles: dict[str, Path]
    public_key: Path
    workdir: Path

    def manifest(self, profile: str) -> Manifest:
        return verify_bundle(self.bundles[profile], [load_public_key(self.public_key)]).manifest

    def expected(self, chunk: np.ndarray, state: np.ndarray, sr: int) -> dict[str, np.ndarray]:
        with torch.no_grad():
            prob, new = self.model(
                torch.from_numpy(chunk), torch.from_numpy(state), torch.tensor(sr, dtype=torch.int64)
            )
        return {"prob": prob.numpy(), "stateN": new.numpy()}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    workdir = tmp_path_factory.mktemp("signatures")
    torch.manual_seed(0)
    model = TinyVad().eval()
    chunk, state = _chunks(48, seed=1)
    np.savez(workdir / "calib.npz", input=chunk, state=state, sr=np.array(16000, np.int64))  # shared
    chunk, _ = _chunks(48, seed=2)
    rates = np.where(np.arange(48) < 32, 16000, 8000).astype(np.int64)  # one sample rate per sample
    initial = np.zeros((2, 1, HIDDEN), np.float32)  # a stream: only the first state is given
    np.savez(workdir / "eval.npz", input=chunk, state=initial, sr=rates)
    private_key, public_key = generate_keypair(workdir / "keys", "signature-test")
    report = convert(
        model,
        list(PROFILES),
        workdir / "calib.npz",
        workdir / "eval.npz",
        workdir / "out",
        private_key,
        inputs=INPUTS,
        output_names=["prob", "stateN"],
        states=["stateN=state"],
        precisions=["fp32"],
        name=NAME,
        benchmark_iterations=3,
    )
    bundles = {}
    for result in report.profiles:
        assert result.bundle is not None, result.error
        bundles[result.profile] = Path(result.bundle.path)
    return Converted(model, report, bundles, public_key, workdir)


@pytest.fixture(scope="module")
def staged(converted: Converted, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("staged")
    result = {}
    for profile, bundle in converted.bundles.items():
        extracted = extract_bundle(bundle, directory / profile, [load_public_key(converted.public_key)])
        assert extracted.directory is not None
        result[profile] = extracted.directory
    return result


@pytest.fixture
def sessions(converted: Converted, staged: dict[str, Path]) -> Iterator[dict[str, RuntimeSession]]:
    opened: dict[str, RuntimeSession] = {}
    try:
        for profile, directory in staged.items():
            opened[profile] = open_bundle_session(directory, converted.manifest(profile))
        yield opened
    finally:
        for session in opened.values():
            session.close()


def test_the_manifest_carries_each_tensors_batch_axis(converted: Converted) -> None:
    for profile in PROFILES:
        manifest = converted.manifest(profile)
        # Built for one sample (the exporters make only axis 0 dynamic) and looped over by the agent.
        assert [(s.name, s.dtype, s.shape, s.batch_axis) for s in manifest.inputs] == [
            ("input", "float32", [1, CHUNK], 0),
            ("state", "float32", [2, 1, HIDDEN], 1),
            ("sr", "int64", [], None),
        ], profile
        assert [(s.name, s.shape, s.batch_axis, s.state_for) for s in manifest.outputs] == [
            ("prob", [1, 1], 0, None),
            ("stateN", [2, 1, HIDDEN], 1, "state"),
        ], profile


def test_validation_ran_the_evaluation_set_as_a_stream(converted: Converted, staged: dict[str, Path]) -> None:
    """The golden inputs hold the states the original carried from one step to the next."""
    eval_chunks = np.load(converted.workdir / "eval.npz")["input"]
    for profile, directory in staged.items():
        with np.load(directory / "golden.npz") as archive:
            golden = {name: archive[name] for name in archive.files}
        steps = golden["input"].shape[0]
        assert steps >= 2 and golden["state"].shape == (2, steps, HIDDEN), profile
        np.testing.assert_array_equal(golden["input"], eval_chunks[:steps])
        state = np.zeros((2, 1, HIDDEN), np.float32)
        for step in range(steps):
            np.testing.assert_allclose(golden["state"][:, step : step + 1], state, atol=1e-6, err_msg=profile)
            expected = converted.expected(eval_chunks[step : step + 1], state, 16000)
            np.testing.assert_allclose(golden["stateN"][:, step : step + 1], expected["stateN"], atol=1e-5)
            state = expected["stateN"]


def test_sessions_loop_along_each_tensors_batch_axis_and_answer_like_torch(
    converted: Converted, sessions: dict[str, RuntimeSession]
) -> None:
    chunk, state = _chunks(5, seed=3)
    for sr in (16000, 8000):
        expected = converted.expected(chunk, state, sr)
        for profile, session in sessions.items():
            out = session.infer({"input": chunk, "state": state, "sr": np.array(sr, np.int64)})
            assert out["stateN"].shape == (2, 5, HIDDEN), profile
            np.testing.assert_allclose(out["prob"], expected["prob"], atol=1e-5, err_msg=profile)
            np.testing.assert_allclose(out["stateN"], expected["stateN"], atol=1e-5, err_msg=profile)


def test_the_golden_check_passes_on_the_agents_session(
    converted: Converted, staged: dict[str, Path], sessions: dict[str, RuntimeSession]
) -> None:
    for profile, directory in staged.items():
        golden = load_golden(directory, converted.manifest(profile))
        assert golden is not None
        assert golden.inputs["sr"].shape == ()  # one rate for the golden samples, fed as served
        assert golden.inputs["state"].shape[0] == 2 and golden.inputs["state"].shape[1] >= 1
        report = run_golden(sessions[profile].infer, golden)
        assert report.passed, (profile, report.reason)


def test_drift_reference_reads_the_state_by_its_batch_axis(
    converted: Converted, staged: dict[str, Path]
) -> None:
    import json

    for profile, directory in staged.items():
        reference = ReferenceStats.from_dict(json.loads((directory / "reference_stats.json").read_text()))
        by_name = {t.name: t for t in reference.tensors}
        assert by_name["state"].batch_axis == 1 and by_name["sr"].batch_axis is None, profile
        chunk, state = _chunks(4, seed=5)
        window = count_window(
            reference, {"input": chunk, "state": state, "sr": np.array(16000, np.int64)}, None
        )
        assert window.samples == 4, profile


def test_tritonclient_sends_a_scalar_and_carries_the_state(converted: Converted, tmp_path: Path) -> None:
    """The client carries the state: stateN of one call is the state of the next."""
    chunks, _ = _chunks(3, seed=4)
    for profile in PROFILES:
        with (
            running_agent([converted.bundles[profile]], converted.public_key, tmp_path / profile) as agent,
            triton.InferenceServerClient(agent.url) as client,
        ):
            metadata = client.get_model_metadata(NAME, as_json=True)
            shapes = {
                t["name"]: (t["datatype"], [int(d) for d in t.get("shape", [])]) for t in metadata["inputs"]
            }
            assert shapes["sr"] == ("INT64", []), profile
            assert shapes["state"] == ("FP32", [2, 1, HIDDEN]), profile
            state = np.zeros((2, 1, HIDDEN), np.float32)
            want_state = state.copy()
            for step in range(len(chunks)):
                chunk = chunks[step : step + 1]
                tensors = [
                    triton.InferInput("input", list(chunk.shape), "FP32"),
                    triton.InferInput("state", list(state.shape), "FP32"),
                    triton.InferInput("sr", [], "INT64"),
                ]
                tensors[0].set_data_from_numpy(chunk)
                tensors[1].set_data_from_numpy(state)
                tensors[2].set_data_from_numpy(np.array(16000, np.int64))
                result = client.infer(NAME, tensors)
                expected = converted.expected(chunk, want_state, 16000)
                prob, new_state = result.as_numpy("prob"), result.as_numpy("stateN")
                assert prob is not None and new_state is not None
                np.testing.assert_allclose(prob, expected["prob"], atol=1e-5, err_msg=profile)
                np.testing.assert_allclose(new_state, expected["stateN"], atol=1e-5, err_msg=profile)
                state, want_state = new_state, expected["stateN"]
        assert "Traceback" not in agent.log()


def test_cli_inputs_and_states_reach_the_converter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tests.integration.test_converter_errors import cli, cli_args, fake_conversion

    calls = fake_conversion(monkeypatch, tmp_path)
    extra = [arg for spec in INPUTS for arg in ("--input", spec)] + ["--state", "stateN=state"]
    result = CliRunner().invoke(cli(), cli_args(tmp_path, *extra))
    assert result.exit_code == 0, result.output
    assert calls[0]["inputs"] == INPUTS and calls[0]["states"] == ["stateN=state"]
    help_text = CliRunner().invoke(cli(), ["convert", "--help"]).output
    assert "--state" in help_text and "sr::int64" in help_text


def _onnx_recurrence(path: Path) -> dict[str, np.ndarray]:
    """The same signature as an ONNX graph (onnx.helper): dynamic dimensions named ``batch``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weights = {
        "W": (0.3 * rng.standard_normal((CHUNK, HIDDEN))).astype(np.float32),
        "U": (0.3 * rng.standard_normal((HIDDEN, 1))).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["x"]),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["srf", "rate"], ["scale"]),
        helper.make_node("Mul", ["x", "scale"], ["xs"]),
        helper.make_node("Add", ["state", "xs"], ["pre"]),  # [2, batch, H] + [batch, H] broadcasts
        helper.make_node("Tanh", ["pre"], ["stateN"]),
        helper.make_node("Gather", ["stateN", "one"], ["last"], axis=0),
        helper.make_node("MatMul", ["last", "U"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    initializers = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    initializers += [
        numpy_helper.from_array(np.array(16000, np.float32), "rate"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
    ]
    graph = helper.make_graph(
        nodes,
        "recurrence",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", CHUNK]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", HIDDEN]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", HIDDEN]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return weights


def test_an_onnx_source_with_the_same_signature(tmp_path: Path) -> None:
    """An ONNX model names its batch dimension: outputs find their batch axis by that name."""
    weights = _onnx_recurrence(tmp_path / "vad.onnx")
    chunk, _ = _chunks(24, seed=8)
    np.savez(
        tmp_path / "data.npz", input=chunk, state=np.zeros((2, 1, HIDDEN), np.float32), sr=np.array(8000)
    )
    private_key, public_key = generate_keypair(tmp_path / "keys", "onnx-signature")
    report = convert(
        tmp_path / "vad.onnx",
        [ONNX_PROFILE, INTEL],
        tmp_path / "data.npz",
        tmp_path / "data.npz",
        tmp_path / "out",
        private_key,
        inputs=["state:2xNx8:float32"],  # the graph cannot say which axis of the state is the batch
        states={"stateN": "state"},
        precisions=["fp32"],
        name="onnx-vad",
        benchmark_iterations=2,
    )

    def step(x: np.ndarray, state: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        new = np.tanh(state + (x @ weights["W"]) * np.float32(sr / 16000))
        return 1 / (1 + np.exp(-(new[1] @ weights["U"]))), new

    x, state = _chunks(3, seed=9)
    want_prob, want_state = step(x, state, 8000)
    for result in report.profiles:
        assert result.bundle is not None, result.error
        manifest = verify_bundle(Path(result.bundle.path), [load_public_key(public_key)]).manifest
        assert [(s.name, s.batch_axis) for s in manifest.inputs] == [("input", 0), ("state", 1), ("sr", None)]
        assert [(s.name, s.batch_axis, s.state_for) for s in manifest.outputs] == [
            ("prob", 0, None),
            ("stateN", 1, "state"),
        ]
        directory = extract_bundle(
            Path(result.bundle.path), tmp_path / result.profile, [load_public_key(public_key)]
        )
        assert directory.directory is not None
        with open_bundle_session(directory.directory, manifest) as session:
            out = session.infer({"input": x, "state": state, "sr": np.array(8000, np.int64)})
            golden = load_golden(directory.directory, manifest)
            assert golden is not None and run_golden(session.infer, golden).passed
        np.testing.assert_allclose(out["stateN"], want_state, atol=1e-5, err_msg=result.profile)
        np.testing.assert_allclose(out["prob"], want_prob, atol=1e-5, err_msg=result.profile)


def test_static_int8_tflite_calibrates_a_stateful_model_and_the_edge_tpu_names_what_blocks_it(
    tmp_path: Path,
) -> None:
    """Calibration feeds whole batches along each input's own axis (a scalar, a state on axis 1);
    what stops the Edge TPU is then the model itself: the sample rate's cast to float."""
    torch.manual_seed(0)
    chunk, state = _chunks(48, seed=1)
    np.savez(tmp_path / "calib.npz", input=chunk, state=state, sr=np.array(16000, np.int64))
    chunk, _ = _chunks(48, seed=2)
    np.savez(
        tmp_path / "eval.npz",
        input=chunk,
        state=np.zeros((2, 1, HIDDEN), np.float32),
        sr=np.full(48, 16000, np.int64),
    )
    private_key, _ = generate_keypair(tmp_path / "keys", "signature-test")
    with pytest.raises(ConversionFailed) as failed:
        convert(
            TinyVad().eval(),
            ["coral-edgetpu"],
            tmp_path / "calib.npz",
            tmp_path / "eval.npz",
            tmp_path / "out",
            private_key,
            inputs=INPUTS,
            output_names=["prob", "stateN"],
            states=["stateN=state"],
            name=NAME,
            benchmark_iterations=1,
        )
    (result,) = failed.value.report.profiles
    reasons = [reason for attempt in result.attempts for reason in attempt.reasons]
    assert reasons and all("is not full-integer" in reason for reason in reasons), reasons
    assert any("CAST" in reason for reason in reasons), reasons
