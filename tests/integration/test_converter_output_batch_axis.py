"""An output whose batch axis is 1 and whose declared shape is wrong, converted and served (issue 12).

A hand-built ONNX recognizer shaped like ddddocr's CTC model: ``x`` ``[N, 6, 10]`` in, per-step
class scores ``[T=10, N, 5]`` out (Transpose, MatMul, Relu, MatMul), with the output declared
``[1, seqlen]`` as ddddocr's is. Converted by the real converter for an ONNX profile and, as int8
with NNCF's accuracy control, for an OpenVINO one: the manifest must carry the output's real
batch axis, the golden file keep every sample's steps, the agent's session (which loops the
static batch of 1) join samples on axis 1 and pass the bundle's own golden check, and accuracy
control must score the candidate rather than die on mis-sliced outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter import ConversionReport, convert
from edge_agent.ota.health import load_golden, run_golden
from edge_agent.runtimes import open_bundle_session
from models.bundle import extract_bundle, generate_keypair, load_public_key, verify_bundle
from models.bundle.manifest import Manifest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ONNX_PROFILE, OPENVINO_PROFILE = "generic-x86", "intel-x86-openvino"
FEATURES, STEPS, HIDDEN, CLASSES = 6, 10, 16, 5


def _weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    first = rng.standard_normal((FEATURES, HIDDEN)).astype(np.float32)
    second = rng.standard_normal((HIDDEN, CLASSES)).astype(np.float32)
    return first, second


def _reference(x: np.ndarray) -> np.ndarray:
    """What the ONNX model computes, in numpy: ``[T, N, C]``."""
    first, second = _weights(0)
    steps = np.transpose(x, (2, 0, 1))
    return np.maximum(steps @ first, 0.0) @ second


def _recognizer(path: Path) -> Path:
    first, second = _weights(0)
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["x"], ["steps"], perm=[2, 0, 1]),
            helper.make_node("MatMul", ["steps", "w1"], ["hidden"]),
            helper.make_node("Relu", ["hidden"], ["active"]),
            helper.make_node("MatMul", ["active", "w2"], ["logits"]),
        ],
        "ctc-like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES, STEPS])],
        # Declared wrongly, as ddddocr's 387: [1, seqlen] for a real [T, N, C].
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "seqlen"])],
        [numpy_helper.from_array(first, "w1"), numpy_helper.from_array(second, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@dataclass(frozen=True)
class Converted:
    reports: dict[str, ConversionReport]
    bundles: dict[str, Path]
    public_key: Path

    def manifest(self, profile: str) -> Manifest:
        return verify_bundle(self.bundles[profile], [load_public_key(self.public_key)]).manifest


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    workdir = tmp_path_factory.mktemp("output-axis")
    source = _recognizer(workdir / "ctc.onnx")
    rng = np.random.default_rng(1)
    np.savez(workdir / "calib.npz", x=rng.standard_normal((32, FEATURES, STEPS)).astype(np.float32))
    np.savez(workdir / "eval.npz", x=rng.standard_normal((12, FEATURES, STEPS)).astype(np.float32))
    private_key, public_key = generate_keypair(workdir / "keys", "output-axis")
    options = {
        ONNX_PROFILE: {"precisions": ["fp32"]},
        # Only int8 with accuracy control, packaged even if it misses, so that it must run.
        OPENVINO_PROFILE: {
            "precisions": ["int8"],
            "calibrations": ["accuracy-control"],
            "allow_degraded": True,
        },
    }
    reports, bundles = {}, {}
    for profile, extra in options.items():
        report = convert(
            source,
            [profile],
            workdir / "calib.npz",
            workdir / "eval.npz",
            workdir / profile,
            private_key,
            name="ctc-like",
            benchmark_iterations=3,
            **extra,  # type: ignore[arg-type]
        )
        (result,) = report.profiles
        assert result.bundle is not None, result.error
        reports[profile], bundles[profile] = report, Path(result.bundle.path)
    return Converted(reports, bundles, public_key)


def test_the_manifest_carries_the_outputs_real_batch_axis_and_rank(converted: Converted) -> None:
    for profile in converted.bundles:
        (output,) = converted.manifest(profile).outputs
        # Built for one sample (the batch is not on axis 0 everywhere) and looped by the agent.
        assert (output.name, output.batch_axis, output.shape[1], len(output.shape)) == ("logits", 1, 1, 3)
        assert output.layout == "ANY", profile  # not guessed from the declared [1, seqlen]
        notes = converted.reports[profile].profiles[0].plan_notes
        assert any("'logits' is declared [1, ?] but returns [10, 1, 5]" in note for note in notes), notes


def test_accuracy_control_scores_the_candidate(converted: Converted) -> None:
    (result,) = converted.reports[OPENVINO_PROFILE].profiles
    (attempt,) = result.attempts
    assert attempt.calibration is not None and attempt.calibration.value == "accuracy-control"
    assert attempt.decision in ("packaged", "degraded"), attempt.reasons
    assert attempt.decided_by is not None and attempt.decided_by.name == "sequence_agreement"


def test_the_bundle_keeps_every_samples_steps_and_passes_its_golden_check(
    converted: Converted, tmp_path: Path
) -> None:
    x = np.random.default_rng(3).standard_normal((3, FEATURES, STEPS)).astype(np.float32)
    for profile, bundle in converted.bundles.items():
        manifest = converted.manifest(profile)
        extracted = extract_bundle(bundle, tmp_path / profile, [load_public_key(converted.public_key)])
        assert extracted.directory is not None
        golden = load_golden(extracted.directory, manifest)
        assert golden is not None
        samples = golden.inputs["x"].shape[0]
        assert samples >= 2 and golden.expected["logits"].shape == (STEPS, samples, CLASSES), profile
        with open_bundle_session(extracted.directory, manifest) as session:
            report = run_golden(session.infer, golden)
            assert report.passed, (profile, report.reason)
            served = session.infer({"x": x})["logits"]
        assert served.shape == (STEPS, 3, CLASSES), profile
        if manifest.precision.value == "fp32":
            np.testing.assert_allclose(served, _reference(x), atol=1e-4, rtol=1e-4, err_msg=profile)
        else:  # int8: the per-step classes mostly agree
            agreement = np.mean(np.argmax(served, axis=-1) == np.argmax(_reference(x), axis=-1))
            assert agreement >= 0.8, (profile, agreement)
