"""The ONNX front end against real runtimes: opset-11 models to int8, and artifacts that do not load.

Models are built here (torch.onnx's TorchScript exporter at opset 11, as PaddlePaddle and older
exporters write them, or onnx.helper); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from converter import convert
from converter.context import ConversionContext
from converter.exporters.onnx_export import QDQ_PER_CHANNEL_OPSET, onnx_opset, qdq_opset
from converter.passes import (
    ExportConfig,
    ExportPass,
    LoadConfig,
    LoadPass,
    PlanConfig,
    PlanPass,
    QuantizeConfig,
    QuantizePass,
    ValidateConfig,
    ValidatePass,
)
from converter.planning import CalibrationMethod
from converter.workflow import Workflow
from hw_profiles.schema import ModelFormat, Precision, Tolerance
from models.bundle import extract_bundle, generate_keypair, load_public_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROFILE = "generic-x86"  # ONNX first, int8 allowed
LOOSE = Tolerance(max_accuracy_drop=100.0, min_top1_agreement=0.8, min_cosine=0.98)


class SmallCnn(torch.nn.Module):
    """conv + batch norm + relu + max pool + a fully connected layer (Gemm at opset 11)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))


def export_opset11(module: torch.nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    torch.onnx.export(
        module.eval(),
        (torch.zeros(shape),),
        str(path),
        dynamo=False,
        opset_version=11,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
    )
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("onnx-frontend")
    torch.manual_seed(0)
    model = SmallCnn()
    with torch.no_grad():  # non-trivial statistics, so that the folded batch norm matters
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    onnx_path = export_opset11(model, root / "cnn11.onnx", (1, 3, 8, 8))
    rng = np.random.default_rng(0)
    np.savez(root / "calib.npz", x=rng.standard_normal((32, 3, 8, 8), dtype=np.float32))
    np.savez(root / "eval.npz", x=rng.standard_normal((64, 3, 8, 8), dtype=np.float32))
    key, public = generate_keypair(root / "keys", "test")
    return {
        "root": root,
        "onnx": onnx_path,
        "calib": root / "calib.npz",
        "eval": root / "eval.npz",
        "key": key,
        "public": load_public_key(public),
    }


def test_the_fixture_is_an_opset_11_model(workspace: dict[str, Any]) -> None:
    model = onnx.load(str(workspace["onnx"]))
    assert onnx_opset(model) == 11
    assert {"Conv", "Gemm", "MaxPool", "Relu"} <= {n.op_type for n in model.graph.node}


@pytest.mark.parametrize("calibration", ["minmax", "entropy", "percentile"])
def test_an_opset_11_cnn_becomes_per_channel_int8_onnx_that_loads_and_validates(
    workspace: dict[str, Any], calibration: str
) -> None:
    out = workspace["root"] / f"int8-{calibration}"
    report = convert(
        str(workspace["onnx"]),
        [PROFILE],
        workspace["calib"],
        workspace["eval"],
        out,
        workspace["key"],
        formats=["onnx"],
        precisions=["int8"],
        calibrations=[calibration],
        tolerance=LOOSE,
        benchmark_iterations=2,
    )
    result = report.profile(PROFILE)
    # The int8 attempt loads and passes (before: "Unrecognized attribute: axis for operator
    # DequantizeLinear" for every calibration method, and fp32 was packaged).
    first = result.attempts[0]
    assert (first.label, first.decision) == (f"int8/{calibration}", "packaged")
    chosen = result.chosen
    assert chosen is not None and chosen.precision is Precision.INT8
    assert chosen.metrics is not None and chosen.metrics.cosine > 0.98
    assert any("upgraded from opset 11 to opset 13" in note for note in chosen.runtime_notes)
    assert "upgraded from opset 11 to opset 13" in (out / "report.md").read_text()
    assert not list(out.rglob("upgraded.onnx*")), "the upgraded copy is scratch"
    assert result.bundle is not None
    bundle = extract_bundle(Path(result.bundle.path), out / "extracted", [workspace["public"]])
    assert bundle.directory is not None
    model_path = bundle.directory / "model.onnx"
    quantized = onnx.load(str(model_path))
    assert onnx_opset(quantized) == QDQ_PER_CHANNEL_OPSET
    per_channel = [
        n
        for n in quantized.graph.node
        if n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute)
    ]
    assert per_channel, "the weights are quantized per channel"
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.zeros((2, 3, 8, 8), np.float32)})[0].shape == (2, 10)


def test_an_opset_13_model_goes_to_qdq_as_it_is(tmp_path: Path) -> None:
    path = _relu_model(tmp_path / "relu13.onnx", opset=13)
    qdq = qdq_opset(path, tmp_path / "upgraded.onnx", per_channel=True)
    assert (qdq.opset, qdq.upgraded, qdq.per_channel, qdq.notes) == (13, False, True, [])
    assert not (tmp_path / "upgraded.onnx").exists()


def test_per_tensor_needs_no_upgrade(tmp_path: Path) -> None:
    path = _relu_model(tmp_path / "relu11.onnx", opset=11)
    qdq = qdq_opset(path, tmp_path / "upgraded.onnx", per_channel=False)
    assert (qdq.upgraded, qdq.per_channel, qdq.notes) == (False, False, [])


def test_an_opset_11_model_is_upgraded_to_13(tmp_path: Path) -> None:
    path = _relu_model(tmp_path / "relu11.onnx", opset=11)
    qdq = qdq_opset(path, tmp_path / "upgraded.onnx", per_channel=True)
    assert (qdq.opset, qdq.upgraded, qdq.per_channel) == (11, True, True)
    assert onnx_opset(onnx.load(str(tmp_path / "upgraded.onnx"))) == 13
    assert "upgraded from opset 11 to opset 13" in qdq.notes[0]


def test_when_the_upgrade_fails_the_model_is_quantized_per_tensor(tmp_path: Path) -> None:
    # ImageScaler (removed from ONNX in opset 10, still in old Caffe2/CoreML exports) has no schema
    # the version converter can convert: the real converter fails on it.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    node = helper.make_node("ImageScaler", ["x"], ["y"], scale=2.0, bias=[1.0, 2.0, 3.0])
    model = helper.make_model(
        helper.make_graph([node], "old", [x], [y]), opset_imports=[helper.make_opsetid("", 11)]
    )
    path = tmp_path / "old.onnx"
    onnx.save(model, str(path))
    qdq = qdq_opset(path, tmp_path / "upgraded.onnx", per_channel=True)
    assert (qdq.opset, qdq.upgraded, qdq.per_channel) == (11, False, False)
    assert "quantized per tensor" in qdq.notes[0] and "ImageScaler" in qdq.notes[0]
    assert not list(tmp_path.glob("upgraded.onnx*"))


class TruncatingQuantizePass(QuantizePass):
    """The real quantize pass, then the int8 model cut in half: an artifact its runtime cannot load."""

    def run(self, ctx: ConversionContext) -> None:
        super().run(ctx)
        artifact = ctx.require_target().current.artifact
        assert artifact is not None
        if artifact.attempt.precision is Precision.INT8:
            data = artifact.model_path.read_bytes()
            artifact.model_path.write_bytes(data[: len(data) // 2])


def test_an_artifact_that_fails_to_load_is_a_failed_attempt_and_the_chain_moves_on(
    workspace: dict[str, Any],
) -> None:
    root = workspace["root"] / "truncated"
    ctx = ConversionContext(out_dir=root, work_dir=root / "artifacts")
    workflow = Workflow(
        prepare=[
            LoadPass(
                LoadConfig(
                    source=str(workspace["onnx"]),
                    calibration=workspace["calib"],
                    evaluation=workspace["eval"],
                )
            ),
            PlanPass(
                PlanConfig(
                    profiles=[PROFILE],
                    formats=[ModelFormat.ONNX],
                    precisions=[Precision.INT8],
                    calibrations=[CalibrationMethod.MINMAX],
                )
            ),
        ],
        build=[
            ExportPass(ExportConfig()),
            TruncatingQuantizePass(QuantizeConfig()),
            ValidatePass(ValidateConfig(tolerance=LOOSE)),
        ],
        finish=[],
        formats=[ModelFormat.ONNX],  # as convert() passes --format: no other format's int8 is tried
    )
    [result] = workflow.run(ctx)
    assert not workflow.errors
    broken, fallback = result.attempts
    assert (broken.label, broken.decision) == ("int8/minmax", "failed")
    assert broken.reasons and broken.reasons[0].startswith(
        "the onnx runtime cannot load the int8/minmax model"
    )
    assert broken.error is not None and broken.error["step"] == "validate"
    assert broken.metrics is None  # never a candidate, not even for --allow-degraded
    # What the build did is reported even though the model never loaded.
    assert any("upgraded from opset 11" in note for note in broken.runtime_notes)
    assert fallback.precision is Precision.FP32 and fallback.metrics is not None
    target = ctx.targets[0]
    assert target.chosen is target.attempts[1]


def _relu_model(path: Path, *, opset: int) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y]),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    onnx.save(model, str(path))
    return path


# --- onnx2torch's gaps, rewritten -----------------------------------------------------------------


def _onnx_model(
    path: Path,
    nodes: list[Any],
    constants: dict[str, np.ndarray],
    *,
    opset: int,
    input_shape: list[Any],
    output_shape: list[Any],
) -> Path:
    from onnx import numpy_helper

    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        initializer=[numpy_helper.from_array(np.asarray(v), name=k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7  # what ONNX Runtime and old exporters agree on
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def same_padding_model(path: Path, *, opset: int = 11, height: Any = 15) -> Path:
    """Every auto_pad SAME form onnx2torch refuses, PaddlePaddle-style, with odd sizes and stride 2.

    Conv SAME_UPPER (even kernel, stride 2: asymmetric pads), MaxPool SAME_LOWER (stride 2),
    Conv SAME_LOWER, AveragePool SAME_UPPER (asymmetric, padded cells not counted), a constant Pad,
    and a ConvTranspose SAME_UPPER (stride 2, odd kernel: asymmetric), then a nearest Resize (before
    opset 11: the attribute Pad and Upsample).
    """
    rng = np.random.default_rng(3)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node(
            "MaxPool", ["r1"], ["p1"], auto_pad="SAME_LOWER", kernel_shape=[3, 3], strides=[2, 2]
        ),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], auto_pad="SAME_LOWER"),
        helper.make_node("AveragePool", ["c2"], ["a1"], auto_pad="SAME_UPPER", kernel_shape=[2, 2]),
        helper.make_node("Pad", ["a1", "pads"], ["q1"], mode="constant")
        if opset >= 11
        else helper.make_node("Pad", ["a1"], ["q1"], pads=[0, 0, 1, 0, 0, 0, 0, 1]),
        helper.make_node("ConvTranspose", ["q1", "wt"], ["t1"], auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("Resize", ["t1", "roi", "scales"], ["y"], mode="nearest")
        if opset >= 11
        else helper.make_node("Upsample", ["t1", "scales"], ["y"], mode="nearest"),
    ]
    constants = {
        "w1": weights(8, 3, 4, 4),
        "b1": rng.standard_normal(8).astype(np.float32),
        "w2": weights(8, 8, 3, 3),
        "pads": np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64),
        "wt": weights(8, 4, 3, 3),
        "roi": np.zeros(0, np.float32),
        "scales": np.array([1, 1, 2, 2], np.float32),
    }
    if opset < 11:
        del constants["pads"], constants["roi"]
    return _onnx_model(
        path,
        nodes,
        constants,
        opset=opset,
        input_shape=["N", 3, height, 15],
        output_shape=["N", 4, None, None],
    )


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def _torch(path: Path, x: np.ndarray) -> np.ndarray:
    from converter.exporters.onnx_to_torch import torch_module_from_onnx

    module = torch_module_from_onnx(path, x.shape[0])
    torch.export.export(module, (torch.from_numpy(x),))  # what litert-torch needs first
    with torch.no_grad():
        return np.asarray(module(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("opset", [9, 11, 13, 17])
def test_auto_pad_same_translates_and_matches_onnx_runtime(tmp_path: Path, opset: int) -> None:
    path = same_padding_model(tmp_path / f"same{opset}.onnx", opset=opset)
    x = np.random.default_rng(0).standard_normal((1, 3, 15, 15)).astype(np.float32)
    expected = _ort(path, x)
    got = _torch(path, x)
    assert got.shape == expected.shape == (1, 4, 20, 20)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_auto_pad_with_an_unknown_spatial_shape_fails_with_the_reason(tmp_path: Path) -> None:
    from converter import ConversionError
    from converter.exporters.onnx_to_torch import torch_module_from_onnx

    path = same_padding_model(tmp_path / "dynamic.onnx", height="H")
    with pytest.raises(ConversionError) as caught:
        torch_module_from_onnx(path, 1)
    assert caught.value.step == "export" and caught.value.format == "tflite"
    assert "auto_pad=SAME_UPPER" in caught.value.message
    assert "not static" in caught.value.message and "'x'" in caught.value.message


@pytest.mark.parametrize(
    ("name", "nodes", "constants", "opset", "output_shape"),
    [
        (
            "conv-transpose-output-shape",
            [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], output_shape=[10, 9])],
            {"w": np.random.default_rng(2).standard_normal((4, 3, 3, 3)).astype(np.float32)},
            11,
            [1, 3, 10, 9],
        ),
        (
            "upsample-opset9",
            [helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")],
            {"scales": np.array([1, 1, 2, 3], np.float32)},
            9,
            [1, 4, 10, 15],
        ),
        (
            "dropout-mask",
            [helper.make_node("Dropout", ["x"], ["y", "mask"], ratio=0.3)],
            {},
            11,
            [1, 4, 5, 5],
        ),
        (
            "dropout-seed",
            [helper.make_node("Dropout", ["x", "ratio"], ["y"], seed=3)],
            {"ratio": np.float32(0.2)},
            13,
            [1, 4, 5, 5],
        ),
        (
            "pad-constant-value",
            [helper.make_node("Pad", ["x", "pads", "value"], ["y"])],
            {"pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "value": np.float32(0.5)},
            11,
            [1, 4, 8, 8],
        ),
        (
            "resize-linear-sizes",
            [helper.make_node("Resize", ["x", "roi", "", "sizes"], ["y"], mode="linear")],
            {"roi": np.zeros(0, np.float32), "sizes": np.array([1, 4, 9, 7], np.int64)},
            13,
            [1, 4, 9, 7],
        ),
    ],
)
def test_what_onnx2torch_refuses_or_cannot_export_is_rewritten(
    tmp_path: Path,
    name: str,
    nodes: list[Any],
    constants: dict[str, np.ndarray],
    opset: int,
    output_shape: list[int],
) -> None:
    path = _onnx_model(
        tmp_path / f"{name}.onnx",
        nodes,
        constants,
        opset=opset,
        input_shape=[1, 4, 5, 5],
        output_shape=output_shape,
    )
    x = np.random.default_rng(1).standard_normal((1, 4, 5, 5)).astype(np.float32)
    expected = _ort(path, x)
    got = _torch(path, x)
    assert got.shape == expected.shape == tuple(output_shape)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_same_padded_model_reaches_tflite_and_matches_onnx_runtime(
    workspace: dict[str, Any],
) -> None:
    from edge_agent.runtimes import open_session

    root = workspace["root"] / "same"
    path = same_padding_model(workspace["root"] / "same.onnx")
    rng = np.random.default_rng(5)
    np.savez(root.with_name("same-calib.npz"), x=rng.standard_normal((8, 3, 15, 15), dtype=np.float32))
    samples = rng.standard_normal((16, 3, 15, 15), dtype=np.float32)
    np.savez(root.with_name("same-eval.npz"), x=samples)
    report = convert(
        str(path),
        ["raspberry-pi-5"],
        root.with_name("same-calib.npz"),
        root.with_name("same-eval.npz"),
        root,
        workspace["key"],
        formats=["tflite"],
        precisions=["fp32"],
        benchmark_iterations=2,
    )
    result = report.profile("raspberry-pi-5")
    chosen = result.chosen
    assert result.format is ModelFormat.TFLITE and chosen is not None
    assert (chosen.precision, chosen.decision) == (Precision.FP32, "packaged")
    assert chosen.metrics is not None and chosen.metrics.cosine > 0.99999
    assert result.bundle is not None
    bundle = extract_bundle(Path(result.bundle.path), root / "extracted", [workspace["public"]])
    assert bundle.directory is not None
    with open_session(bundle.directory / "model.tflite", ModelFormat.TFLITE) as session:
        for sample in samples[:4]:
            x = sample[np.newaxis]
            got = session.infer({"x": x})["y"]
            np.testing.assert_allclose(got, _ort(path, x), rtol=1e-4, atol=1e-4)


class Opset11Mix(torch.nn.Module):
    """What torch.onnx's TorchScript exporter writes at opset 11 for common layers, as old exports have.

    hardswish (HardSigmoid and Mul), relu6 (Clip with constant inputs), a squeeze-excite gate,
    nearest and bilinear upsampling (Resize with scales, and with sizes computed from shapes), a
    ConvTranspose, an asymmetric functional.pad (whose pads come out of a ConstantOfShape → Concat → Reshape →
    Slice → Transpose chain) and a softmax.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.up = torch.nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.nn import functional

        y = functional.hardswish(self.bn(self.conv(x)))
        y = functional.relu6(self.depthwise(y)) * torch.sigmoid(functional.adaptive_avg_pool2d(y, 1))
        near = functional.interpolate(y, scale_factor=2.0, mode="nearest")
        linear = functional.interpolate(
            y, size=(near.shape[2], near.shape[3]), mode="bilinear", align_corners=False
        )
        u = functional.pad(self.up(near + linear), (1, 0, 0, 1))
        return torch.softmax(self.fc(u.mean((2, 3))), 1)


def test_an_opset_11_torch_export_with_common_layers_translates_and_matches(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = export_opset11(Opset11Mix(), tmp_path / "mix11.onnx", (1, 3, 16, 16))
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"ConstantOfShape", "Pad", "Resize", "HardSigmoid", "Clip"} <= ops
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(_torch(path, x), _ort(path, x), rtol=1e-5, atol=1e-6)


def test_constant_chains_fold_and_big_constants_stay_computed() -> None:
    from onnx import numpy_helper

    from converter.exporters.onnx_rewrite import FOLD_MAX_ELEMENTS, fold_constants

    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("ConstantOfShape", ["small"], ["ones"], value=one),
        helper.make_node("Mul", ["ones", "two"], ["twos"]),
        helper.make_node("Add", ["x", "twos"], ["y"]),
        helper.make_node("ConstantOfShape", ["big"], ["huge"], value=one),
        helper.make_node("ReduceSum", ["huge"], ["z"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "fold",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, []),
        ],
        initializer=[
            numpy_helper.from_array(np.array([4], np.int64), "small"),
            numpy_helper.from_array(np.array([FOLD_MAX_ELEMENTS + 1], np.int64), "big"),
            numpy_helper.from_array(np.float32(2.0), "two"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    assert fold_constants(model) == 2
    assert [n.op_type for n in model.graph.node] == ["Add", "ConstantOfShape", "ReduceSum"]
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert initializers["twos"].tolist() == [2.0, 2.0, 2.0, 2.0]
    assert "small" not in initializers and "two" not in initializers  # nothing reads them any more
    onnx.checker.check_model(model)
