"""Static int8 TFLite through ai-edge-quantizer, on models PT2E cannot make full-integer.

A MobileNetV3-style block (hardswish, ``x * sigmoid(x)``, squeeze-and-excite) converts to int8 for
the Pi (float I/O) and to a full-integer model with int8 I/O for the Edge TPU, which the agent's
engine loads from the bundle and serves within the profile's tolerance of fp32. A LeakyReLU
network, whose ``LEAKY_RELU`` ai-edge-quantizer leaves in float, fails the Edge TPU naming the op
and packages for the Pi with a warning in the report. Real runtimes, no mocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from converter import ConversionFailed, ConversionReport, convert
from converter.exporters.tflite_scan import scan_tflite
from converter.metrics import compute_metrics, judge
from edge_agent.serving import InferenceEngine, InferRequest, InputTensor
from hw_profiles import load_profile
from hw_profiles.schema import ModelFormat, Precision
from models.bundle import extract_bundle, generate_keypair, load_public_key, verify_bundle
from tests.support.int8_models import hardswish_block, leaky_relu_net, write_digits_data

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PI, CORAL = "raspberry-pi-5", "coral-edgetpu"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tflite-int8")
    calib, evaluation = write_digits_data(root / "data")
    key, public = generate_keypair(root / "keys", "test")
    return {
        "root": root,
        "calib": calib,
        "eval": evaluation,
        "key": key,
        "public_path": public,
        "public": load_public_key(public),
    }


@pytest.fixture(scope="module")
def hardswish(workspace: dict[str, Any]) -> dict[str, Any]:
    model = hardswish_block()
    report = convert(
        model,
        [PI, CORAL],
        workspace["calib"],
        workspace["eval"],
        workspace["root"] / "hardswish",
        workspace["key"],
        output_names=["logits"],
        benchmark_iterations=2,
    )
    return {"model": model, "report": report}


def _bundle(
    workspace: dict[str, Any], report: ConversionReport, profile: str, into: Path
) -> tuple[Any, Path]:
    result = report.profile(profile)
    assert result.bundle is not None, result.error
    bundle = Path(result.bundle.path)
    manifest = verify_bundle(bundle, [workspace["public"]]).manifest
    extract_bundle(bundle, into, [workspace["public"]])
    return manifest, into / manifest.model_file


def test_the_hardswish_block_is_int8_for_the_pi_and_full_integer_for_the_edge_tpu(
    workspace: dict[str, Any], hardswish: dict[str, Any], tmp_path: Path
) -> None:
    report: ConversionReport = hardswish["report"]
    for profile in (PI, CORAL):
        result = report.profile(profile)
        assert result.status == "packaged", result.error
        assert result.chosen is not None and result.chosen.label == "int8/minmax"  # ai-edge-quantizer
        assert not any("full-integer" in note for note in result.chosen.runtime_notes)
    pi, pi_model = _bundle(workspace, report, PI, tmp_path / "pi")
    coral, coral_model = _bundle(workspace, report, CORAL, tmp_path / "coral")
    assert (pi.format, pi.precision) == (ModelFormat.TFLITE, Precision.INT8)
    assert (coral.format, coral.precision) == (ModelFormat.TFLITE, Precision.INT8)
    # The Pi keeps float I/O (QUANTIZE in, DEQUANTIZE out); inside, everything is integer.
    assert [t.dtype for t in [*pi.inputs, *pi.outputs]] == ["float32", "float32"]
    pi_scan = scan_tflite(pi_model, float_io=True)
    assert pi_scan.full_integer and pi_scan.edges == 2, pi_scan.describe()
    # The Edge TPU's model: int8 at both ends with the scale and zero point the agent quantizes with.
    for tensor in [*coral.inputs, *coral.outputs]:
        assert tensor.dtype == "int8" and tensor.quantization is not None
        assert tensor.quantization.scale > 0
    coral_scan = scan_tflite(coral_model, float_io=False)
    assert coral_scan.full_integer and coral_scan.edges == 0, coral_scan.describe()


@pytest.mark.parametrize("profile", [PI, CORAL])
def test_the_agent_serves_the_int8_bundle_within_the_profiles_tolerance(
    workspace: dict[str, Any], hardswish: dict[str, Any], profile: str, tmp_path: Path
) -> None:
    hw = load_profile(profile)
    result = hardswish["report"].profile(profile)
    assert result.bundle is not None
    engine = InferenceEngine.create(
        data_dir=tmp_path / "agent", trusted_keys=[workspace["public"]], profile=hw
    )
    installed = engine.install(Path(result.bundle.path))
    with np.load(workspace["eval"]) as data:
        images, labels = data["input"], data["labels"]
    served = np.concatenate(
        [
            engine.infer(
                InferRequest(installed.name, [InputTensor.from_array("input", images[i : i + 1])])
            ).as_dict()["logits"]
            for i in range(len(images))
        ]
    )
    with torch.no_grad():
        reference = hardswish["model"](torch.from_numpy(images)).numpy()
    assert served.dtype == np.float32 and served.shape == reference.shape  # the agent dequantizes
    metrics = compute_metrics({"logits": reference}, {"logits": served}, labels)
    verdict = judge(metrics, hw.tolerance, size_bytes=1, max_model_mb=hw.max_model_mb)
    assert verdict.passed, verdict.failures


def test_unit_clamps_are_exported_as_a_fused_relu6_with_the_same_outputs(tmp_path: Path) -> None:
    from converter.exporters.tflite_export import export_tflite
    from converter.exporters.tflite_scan import read_graph
    from converter.sources import load_source

    model = hardswish_block()
    with np.load(write_digits_data(tmp_path / "data")[1]) as data:
        images = data["input"][:16]
    source = load_source(model, output_names=["logits"], sample_arrays={"input": images})
    fp32 = export_tflite(source, tmp_path / "base", batch=1)
    names = [op.name for op in read_graph(fp32).ops]
    assert "RELU_0_TO_1" not in names, names
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(str(fp32)).get_signature_runner()
    got = np.concatenate([runner(input=images[i : i + 1])["logits"] for i in range(len(images))])
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_pt2e_leaves_the_hardswish_block_in_float_which_the_edge_tpu_refuses(
    workspace: dict[str, Any], hardswish: dict[str, Any]
) -> None:
    with pytest.raises(ConversionFailed) as caught:
        convert(
            hardswish["model"],
            [CORAL],
            workspace["calib"],
            workspace["eval"],
            workspace["root"] / "hardswish-pt2e",
            workspace["key"],
            output_names=["logits"],
            calibrations=["histogram"],
        )
    [attempt] = caught.value.report.profile(CORAL).attempts
    assert attempt.label == "int8/histogram" and attempt.decision == "failed"
    assert attempt.error is not None and attempt.error["step"] == "quantize"
    assert "not full-integer" in attempt.error["message"]


def test_an_op_left_in_float_fails_the_edge_tpu_by_name_and_warns_for_the_pi(
    workspace: dict[str, Any],
) -> None:
    out = workspace["root"] / "leaky"
    with pytest.raises(ConversionFailed) as caught:
        convert(
            leaky_relu_net(),
            [PI, CORAL],
            workspace["calib"],
            workspace["eval"],
            out,
            workspace["key"],
            output_names=["logits"],
            calibrations=["minmax"],  # ai-edge-quantizer alone (PT2E, next in the chain, quantizes LeakyReLU)
            benchmark_iterations=2,
        )
    report = caught.value.report
    coral = report.profile(CORAL)
    assert coral.status == "failed" and coral.bundle is None
    [first] = coral.attempts
    assert first.label == "int8/minmax" and first.decision == "failed"
    assert first.error is not None and first.error["step"] == "quantize"
    assert "not full-integer" in first.error["message"] and "LEAKY_RELU" in first.error["message"]
    assert coral.error is not None and "LEAKY_RELU" in coral.error["message"]

    pi = report.profile(PI)
    assert pi.status == "packaged" and pi.chosen is not None
    assert (pi.chosen.label, pi.chosen.precision) == ("int8/minmax", Precision.INT8)
    warnings = [n for n in pi.chosen.runtime_notes if n.startswith("warning:")]
    assert len(warnings) == 1 and "LEAKY_RELU" in warnings[0] and "not full-integer" in warnings[0]
    assert "LEAKY_RELU" in (out / "report.md").read_text()


class _TwoHeads(torch.nn.Module):
    """Logits and the top class id: one quantized output, one integer output (as token models have)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.inner(x)
        return logits, logits.argmax(1)


def test_float_io_with_several_outputs_keeps_the_signature_names(tmp_path: Path) -> None:
    """ai-edge-quantizer left a signature output on the int8 tensor behind its new DEQUANTIZE."""
    from converter.data import Dataset
    from converter.exporters.tflite_export import export_tflite
    from converter.exporters.tflite_quantize import quantize_static_int8
    from converter.sources import load_source
    from edge_agent.runtimes import open_session

    with np.load(write_digits_data(tmp_path / "data")[0]) as data:
        images = data["input"][:32]
    source = load_source(
        _TwoHeads(leaky_relu_net()), output_names=["logits", "top"], sample_arrays={"input": images}
    )
    fp32 = export_tflite(source, tmp_path / "base", batch=1)
    out = tmp_path / "int8.tflite"
    quantize_static_int8(
        fp32, out, Dataset("calibration", {"input": images}), load_profile(PI).quantization, batch=1
    )
    with open_session(out, ModelFormat.TFLITE) as session:
        assert [t.name for t in session.inputs] == ["input"]
        assert [(t.name, t.dtype) for t in session.outputs] == [("logits", "float32"), ("top", "int32")]
        answer = session.infer({"input": images[:1]})
    assert answer["logits"].shape == (1, 10) and int(answer["top"][0]) == int(answer["logits"].argmax())
