"""The fallback chain for real: a too-strict tolerance walks int8 calibrations, the other formats'
int8, then fp16."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import ConversionFailed, convert
from hw_profiles import load_profile
from hw_profiles.schema import Precision, Tolerance
from models.bundle import generate_keypair, load_public_key, verify_bundle
from models.zoo import get_reference

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOURCE = "models.zoo.digits_cnn:trained_model"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("fallback")
    calib, evaluation = get_reference("digits-cnn").write_data(root / "data")
    key, public = generate_keypair(root / "keys", "test")
    return {"root": root, "calib": calib, "eval": evaluation, "key": key, "public": load_public_key(public)}


def test_a_too_strict_tolerance_walks_the_chain_and_reports_every_attempt(workspace: dict[str, Any]) -> None:
    # int8 gets a cosine near 0.9999; only a float model gets within 1e-6 of fp32.
    strict = load_profile("raspberry-pi-5").model_copy(
        update={"tolerance": Tolerance(max_accuracy_drop=0.0, min_top1_agreement=1.0, min_cosine=0.999999)}
    )
    report = convert(
        SOURCE,
        [strict],
        workspace["calib"],
        workspace["eval"],
        workspace["root"] / "strict",
        workspace["key"],
        output_names=["logits"],
        benchmark_iterations=2,
    )
    result = report.profile("raspberry-pi-5")
    labels = [(a.format.value, a.label, a.decision) for a in result.attempts]
    assert labels[:2] == [("tflite", "int8/minmax", "rejected"), ("tflite", "int8/histogram", "rejected")]
    # Before any float: the int8 of the Pi's other format, ONNX Runtime, every calibration of it.
    int8_elsewhere = [label for fmt, label, _ in labels[2:] if fmt == "onnx"]
    assert int8_elsewhere[:3] == ["int8/minmax", "int8/entropy", "int8/percentile"]
    assert all(label.startswith("int8") for label in int8_elsewhere), labels
    floats = [i for i, (_, label, _) in enumerate(labels) if not label.startswith("int8")]
    assert floats and min(floats) > max(i for i, (fmt, _, _) in enumerate(labels) if fmt == "onnx")
    assert labels[-1][0] == "tflite" and labels[-1][2] == "packaged" and labels[-1][1] in ("fp16", "fp32")
    assert result.format is not None and result.format.value == "tflite"
    assert all(any("cosine" in r for r in a.reasons) for a in result.attempts[:2])
    assert result.bundle is not None
    manifest = verify_bundle(Path(result.bundle.path), [workspace["public"]]).manifest
    assert manifest.precision in (Precision.FP16, Precision.FP32)
    markdown = (workspace["root"] / "strict" / "report.md").read_text()
    assert "int8/minmax" in markdown and "int8/histogram" in markdown and "rejected" in markdown


def test_nothing_passing_is_an_error_unless_degraded_is_allowed(workspace: dict[str, Any]) -> None:
    # A 1 kB size limit: no artifact of digits-cnn fits, whatever its precision.
    tiny = load_profile("jetson-orin-nano").model_copy(update={"max_model_mb": 0.001})
    args = (SOURCE, [tiny], workspace["calib"], workspace["eval"])
    with pytest.raises(ConversionFailed) as caught:
        convert(*args, workspace["root"] / "strict-fail", workspace["key"], output_names=["logits"])
    error = caught.value
    assert error.step == "validate" and error.profile == "jetson-orin-nano"
    assert "--allow-degraded" in error.hint
    assert [a.decision for a in error.report.profile("jetson-orin-nano").attempts] == ["rejected", "rejected"]
    assert not list((workspace["root"] / "strict-fail").glob("*.efb"))
    assert (workspace["root"] / "strict-fail" / "report.json").is_file()

    report = convert(
        *args,
        workspace["root"] / "degraded",
        workspace["key"],
        output_names=["logits"],
        allow_degraded=True,
        benchmark_iterations=2,
    )
    result = report.profile("jetson-orin-nano")
    assert result.status == "degraded"
    assert result.bundle is not None
    manifest = verify_bundle(Path(result.bundle.path), [workspace["public"]]).manifest
    assert manifest.validation["degraded"] is True and manifest.validation["passed"] is False
