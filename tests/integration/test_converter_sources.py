"""Every kind of source converts: .pt2, TorchScript, ONNX with external data, and SavedModels
(to TFLite, OpenVINO and, through tf2onnx, ONNX).

(Keras ``.keras`` models and ONNX → TFLite are covered by ``test_converter_matrix``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
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


@pytest.fixture(scope="module")
def saved_models(workspace: dict[str, Any]) -> dict[str, Path]:
    """digits-keras exported as a SavedModel (Keras model.export), and a plain tf.Module one."""
    import tensorflow as tf

    root = workspace["root"] / "saved"
    keras_dir = root / "digits-keras"
    get_reference("digits-keras").load().export(str(keras_dir))

    class Scores(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = tf.Variable(tf.random.stateless_normal((64, 10), seed=(1, 2)))

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="pixels")])
        def __call__(self, pixels: Any) -> dict[str, Any]:
            return {"scores": tf.matmul(pixels, self.weights)}

    module = Scores()
    plain_dir = root / "plain"
    tf.saved_model.save(module, str(plain_dir), signatures={"serving_default": module.__call__})
    return {"keras": keras_dir, "plain": plain_dir}


def test_a_saved_model_is_read_from_its_serving_signature(saved_models: dict[str, Path]) -> None:
    keras = load_source(str(saved_models["keras"]))
    assert keras.kind is SourceKind.SAVED_MODEL and keras.has_conv
    assert [(s.name, s.shape, s.layout) for s in keras.inputs] == [("input", [-1, 8, 8, 1], "NHWC")]
    assert [s.name for s in keras.outputs] == ["output_0"]
    plain = load_source(str(saved_models["plain"]), output_names=["logits"])
    assert not plain.has_conv
    assert [(s.name, s.shape) for s in plain.inputs] == [("pixels", [-1, 64])]
    assert [s.name for s in plain.outputs] == ["logits"] and plain.output_keys == ["scores"]
    pixels = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    assert plain.run({"pixels": pixels})["logits"].shape == (3, 10)


def test_a_keras_saved_model_converts_to_tflite_openvino_and_the_edge_tpu(
    workspace: dict[str, Any], saved_models: dict[str, Path]
) -> None:
    calib, evaluation = get_reference("digits-keras").write_data(workspace["root"] / "saved-data")
    report = convert(
        str(saved_models["keras"]),
        ["raspberry-pi-5", "intel-x86-openvino", "coral-edgetpu"],
        calib,
        evaluation,
        workspace["root"] / "saved-out",
        workspace["key"],
        output_names=["logits"],
        benchmark_iterations=2,
    )
    assert report.name == "digits-keras"
    expected = {
        # TFLiteConverter.from_saved_model calibrates int8 itself; OpenVINO converts the directory.
        "raspberry-pi-5": (ModelFormat.TFLITE, "int8/converter"),
        "intel-x86-openvino": (ModelFormat.OPENVINO, "int8/minmax"),
        "coral-edgetpu": (ModelFormat.TFLITE, "int8/converter"),
    }
    for profile, (fmt, label) in expected.items():
        result = report.profile(profile)
        assert result.bundle is not None, result.error
        chosen = result.chosen
        assert chosen is not None and (chosen.format, chosen.label) == (fmt, label)
        assert chosen.metrics is not None and chosen.metrics.accuracy_drop is not None
        assert chosen.metrics.accuracy_drop <= 1.0
        manifest = verify_bundle(Path(result.bundle.path), [workspace["public"]]).manifest
        assert [t.name for t in manifest.inputs] == ["input"] and [t.name for t in manifest.outputs] == [
            "logits"
        ]
        # The planned batch of 1 is in the model itself: static shapes, as the Edge TPU and the NPU need.
        assert manifest.inputs[0].shape == [1, 8, 8, 1]
    coral = verify_bundle(Path(report.profile("coral-edgetpu").bundle.path), [workspace["public"]]).manifest  # type: ignore[union-attr]
    assert coral.inputs[0].dtype == "int8" and coral.outputs[0].dtype == "int8"


@pytest.mark.parametrize("kind", ["keras", "plain"])
def test_a_saved_model_becomes_onnx_through_tf2onnx(
    workspace: dict[str, Any], saved_models: dict[str, Path], kind: str
) -> None:
    """Jetson runs only ONNX: a SavedModel (a Keras export, or a plain tf.Module with renamed outputs)
    converts, keeps its input name and the promised output name, and answers like TensorFlow."""
    from edge_agent.runtimes import open_bundle_session
    from models.bundle import extract_bundle

    reference = get_reference("digits-keras")
    if kind == "keras":
        calib, evaluation = reference.write_data(workspace["root"] / "saved-data-onnx")
        name = "input"
    else:
        rng = np.random.default_rng(3)
        calib = workspace["root"] / "plain-calib.npz"
        evaluation = workspace["root"] / "plain-eval.npz"
        np.savez(calib, pixels=rng.random((16, 64), dtype=np.float32))
        np.savez(evaluation, pixels=rng.random((32, 64), dtype=np.float32))
        name = "pixels"
    report = convert(
        str(saved_models[kind]),
        ["jetson-orin-nano"],
        calib,
        evaluation,
        workspace["root"] / f"saved-onnx-{kind}",
        workspace["key"],
        output_names=["logits"],
        benchmark_iterations=2,
    )
    result = report.profile("jetson-orin-nano")
    assert result.bundle is not None, result.error
    assert result.chosen is not None and result.chosen.format is ModelFormat.ONNX
    bundle = verify_bundle(Path(result.bundle.path), [workspace["public"]])
    assert [t.name for t in bundle.manifest.inputs] == [name]
    assert [t.name for t in bundle.manifest.outputs] == ["logits"]
    source = load_source(str(saved_models[kind]), output_names=["logits"])
    samples = dict(np.load(evaluation))
    first = {name: samples[name][:4]}
    extracted = extract_bundle(
        Path(result.bundle.path), workspace["root"] / f"x-{kind}", [workspace["public"]]
    )
    with open_bundle_session(extracted.directory, extracted.manifest) as session:
        served = session.infer(first)["logits"]
    expected = source.run(first)["logits"]
    # fp16 on Jetson: compare the scores' ranking and size, not bits.
    assert served.shape == expected.shape
    np.testing.assert_allclose(served, expected, rtol=0.05, atol=0.05 * float(np.abs(expected).max()))


def test_a_broken_saved_model_directory_is_a_load_error(tmp_path: Path) -> None:
    from converter import ConversionError

    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(ConversionError) as caught:
        load_source(str(saved))
    assert caught.value.step == "load"
    assert "not a loadable SavedModel" in caught.value.message
    assert "model.export" in caught.value.hint
