"""Every kind of source converts: .pt2, TorchScript, ONNX with external data, and Keras."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import ConversionReport, SourceKind, convert, load_source
from hw_profiles.schema import ModelFormat, Precision
from models.bundle import generate_keypair, load_public_key, verify_bundle
from models.zoo import get_reference

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import onnx
    import torch

    root = tmp_path_factory.mktemp("sources")
    reference = get_reference("digits-cnn")
    model = reference.load()
    calib, evaluation = reference.write_data(root / "data")
    key, public = generate_keypair(root / "keys", "test")
    pt2 = reference.save_source(root / "src", model)
    script = root / "src" / "digits.pt"
    torch.jit.trace(model, torch.zeros(2, 1, 8, 8)).save(str(script))
    plain = root / "src" / "plain.onnx"
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(2, 1, 8, 8),),
            str(plain),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    external = root / "src" / "external.onnx"
    onnx.save_model(
        onnx.load(str(plain)),
        str(external),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="external.onnx.data",
        size_threshold=0,
    )
    return {
        "root": root,
        "calib": calib,
        "eval": evaluation,
        "key": key,
        "public": load_public_key(public),
        "pt2": pt2,
        "script": script,
        "external": external,
    }


def run(ws: dict[str, Any], source: Path, profiles: list[str], out: str, **kwargs: Any) -> ConversionReport:
    return convert(
        str(source),
        profiles,
        ws["calib"],
        ws["eval"],
        ws["root"] / out,
        ws["key"],
        benchmark_iterations=2,
        **kwargs,
    )


def test_an_exported_program_converts_to_tflite_int8(workspace: dict[str, Any]) -> None:
    source = load_source(str(workspace["pt2"]))
    assert source.kind is SourceKind.TORCH
    assert [(s.name, s.shape) for s in source.inputs] == [("input", [-1, 1, 8, 8])]
    report = run(workspace, workspace["pt2"], ["raspberry-pi-5"], "pt2", output_names=["logits"])
    chosen = report.profile("raspberry-pi-5").chosen
    assert chosen is not None
    assert (chosen.format, chosen.precision) == (ModelFormat.TFLITE, Precision.INT8)
    assert chosen.metrics is not None and chosen.metrics.accuracy_drop is not None
    assert chosen.metrics.accuracy_drop <= 1.0
    assert report.name == "digits-cnn"


def test_torchscript_converts_to_openvino_through_the_legacy_exporter(workspace: dict[str, Any]) -> None:
    report = run(
        workspace,
        workspace["script"],
        ["intel-x86-openvino", "raspberry-pi-5"],
        "script",
        inputs=["input:Nx1x8x8:float32:NCHW"],
        output_names=["logits"],
    )
    intel, pi = report.profile("intel-x86-openvino"), report.profile("raspberry-pi-5")
    assert intel.format is ModelFormat.OPENVINO and intel.status == "packaged"
    # TFLite needs torch.export, which TorchScript cannot give: the Pi's plan moves to ONNX.
    assert pi.format is ModelFormat.ONNX and pi.status == "packaged"
    assert any("tflite skipped" in note for note in pi.plan_notes)


def test_onnx_with_external_data_keeps_its_dynamic_batch(workspace: dict[str, Any]) -> None:
    source = load_source(str(workspace["external"]))
    assert source.kind is SourceKind.ONNX and source.inputs[0].shape == [-1, 1, 8, 8]
    report = run(workspace, workspace["external"], ["jetson-orin-nano"], "external")
    result = report.profile("jetson-orin-nano")
    assert result.bundle is not None
    manifest = verify_bundle(Path(result.bundle.path), [workspace["public"]]).manifest
    assert (manifest.format, manifest.precision) == (ModelFormat.ONNX, Precision.FP16)
    assert manifest.inputs[0].shape[0] == -1
    assert manifest.name == "external"
    chosen = result.chosen
    assert chosen is not None and chosen.metrics is not None and chosen.metrics.top1_agreement is not None
    assert chosen.metrics.top1_agreement >= 0.995


def test_a_keras_model_converts_to_tflite_openvino_and_a_full_integer_edge_tpu_model(
    workspace: dict[str, Any],
) -> None:
    reference = get_reference("digits-keras")
    calib, evaluation = reference.write_data(workspace["root"] / "keras-data")
    report = convert(
        reference.source,
        ["raspberry-pi-5", "intel-x86-openvino", "coral-edgetpu"],
        calib,
        evaluation,
        workspace["root"] / "keras",
        workspace["key"],
        benchmark_iterations=2,
    )
    assert report.name == "digits-keras"
    for profile, fmt in [
        ("raspberry-pi-5", ModelFormat.TFLITE),
        ("intel-x86-openvino", ModelFormat.OPENVINO),
        ("coral-edgetpu", ModelFormat.TFLITE),
    ]:
        result = report.profile(profile)
        assert result.bundle is not None, result.error
        manifest = verify_bundle(Path(result.bundle.path), [workspace["public"]]).manifest
        assert (manifest.format, manifest.precision) == (fmt, Precision.INT8)
        assert [t.name for t in manifest.outputs] == ["logits"]
        assert manifest.inputs[0].layout == "NHWC"
        chosen = result.chosen
        assert chosen is not None and chosen.metrics is not None and chosen.metrics.accuracy_drop is not None
        assert chosen.metrics.accuracy_drop <= 1.0
    coral = verify_bundle(Path(report.profile("coral-edgetpu").bundle.path), [workspace["public"]]).manifest  # type: ignore[union-attr]
    assert coral.inputs[0].dtype == "int8" and coral.inputs[0].quantization is not None
    assert coral.outputs[0].dtype == "int8" and coral.outputs[0].quantization is not None
    assert "integer_io" in {c["name"] for c in coral.validation["checks"]}
    assert any("edgetpu_compiler" in note for note in report.profile("coral-edgetpu").plan_notes)
    # The Pi keeps float I/O: only the Edge TPU needs integer tensors at the edges.
    pi = verify_bundle(Path(report.profile("raspberry-pi-5").bundle.path), [workspace["public"]]).manifest  # type: ignore[union-attr]
    assert pi.inputs[0].dtype == "float32"


def test_a_saved_model_directory_gets_a_clear_not_supported_yet(tmp_path: Path) -> None:
    from converter import ConversionError

    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ConversionError) as caught:
        load_source(str(saved))
    assert caught.value.step == "load"
    assert "not convert yet" in caught.value.message
    assert ".keras" in caught.value.hint
