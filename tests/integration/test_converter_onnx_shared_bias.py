"""Static int8 ONNX of a model whose Convs share a bias initializer (the basic-pitch corpus bug).

ONNX Runtime's QDQ quantizer gives each Conv its own copy of a shared bias, naming the copy
``{bias}{n}`` after the initializers alone. tf2onnx shares biases and names tensors so that the
copy's name can be another tensor's: basic-pitch's int8 model then fed a bias to a Neg and ONNX
Runtime refused to load it (``Invalid attribute perm``). The tiny model here is built to collide
the same way: two Convs share the bias ``b``, and the first one's output is named ``b0``, the name
ONNX Runtime gives the first copy. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.data import Dataset
from converter.exporters.onnx_export import build_onnx_variant, unshare_biases
from converter.planning import Attempt, CalibrationMethod
from hw_profiles import load_profile
from hw_profiles.schema import ModelFormat, Precision

pytestmark = [pytest.mark.integration]


def _shared_bias_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((4, c, 3, 3)).astype(np.float32) * 0.3 for c in (2, 4)]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1", "b"], ["b0"], pads=[1, 1, 1, 1], name="conv1"),
            helper.make_node("Neg", ["b0"], ["r"], name="neg"),
            helper.make_node("Conv", ["r", "w2", "b"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
        ],
        "shared_bias",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        initializer=[
            numpy_helper.from_array(weights[0], "w1"),
            numpy_helper.from_array(weights[1], "w2"),
            numpy_helper.from_array(np.linspace(-0.5, 0.5, 4).astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_each_conv_gets_its_own_bias_under_a_name_no_tensor_has() -> None:
    model = _shared_bias_model()
    assert unshare_biases(model) == 1
    first, _, second = model.graph.node
    assert first.input[2] == "b"
    assert second.input[2] not in {"b", "b0", "r", "x", "y", "w1", "w2"}
    copies = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    np.testing.assert_array_equal(copies[second.input[2]], copies["b"])
    onnx.checker.check_model(model)
    assert unshare_biases(model) == 0  # nothing left to share


def test_static_int8_of_shared_biases_loads_and_matches_fp32(tmp_path: Path) -> None:
    base = tmp_path / "base" / "model.onnx"
    base.parent.mkdir()
    onnx.save(_shared_bias_model(), base)
    x = np.random.default_rng(1).standard_normal((16, 2, 8, 8)).astype(np.float32)
    attempt = Attempt(format=ModelFormat.ONNX, precision=Precision.INT8, calibration=CalibrationMethod.MINMAX)
    constraints = load_profile("raspberry-pi-5").quantization
    artifact = build_onnx_variant(
        base, attempt, tmp_path / "int8", Dataset("calibration", {"x": x}), constraints
    )
    int8 = ort.InferenceSession(str(artifact.model_path), providers=["CPUExecutionProvider"])
    fp32 = ort.InferenceSession(str(base), providers=["CPUExecutionProvider"])
    (got,), (want,) = int8.run(None, {"x": x}), fp32.run(None, {"x": x})
    cosine = float(np.dot(got.ravel(), want.ravel()) / np.linalg.norm(got) / np.linalg.norm(want))
    assert cosine > 0.99, cosine
