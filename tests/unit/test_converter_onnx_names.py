"""A value defined twice (torch.onnx names a graph output after an internal value) gets one producer again."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from converter.exporters.onnx_export import rename_redefinitions


def _twice_defined() -> onnx.ModelProto:
    """x → Relu → "embedding" → Exp → "n"; then Add("n", "embedding") → "embedding", the output:
    as the dynamo exporter writes MiniLM when its output is called ``embedding`` (the Gather of
    ``aten.embedding`` is called that too)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["embedding"]),
        helper.make_node("Exp", ["embedding"], ["n"]),
        helper.make_node("Add", ["n", "embedding"], ["sum"]),
        helper.make_node("Mul", ["sum", "embedding"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "twice",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [2])],
        value_info=[helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_earlier_definitions_are_renamed_and_their_readers_follow() -> None:
    model = _twice_defined()
    renamed = rename_redefinitions(model.graph)
    assert renamed == ["embedding_defined_0"]
    outputs = [name for node in model.graph.node for name in node.output]
    assert len(outputs) == len(set(outputs)) and outputs[-1] == "embedding"
    assert [list(n.input) for n in model.graph.node[1:]] == [
        ["embedding_defined_0"],
        ["n", "embedding_defined_0"],
        ["sum", "embedding_defined_0"],
    ]
    onnx.checker.check_model(model, full_check=True)
    x = np.array([-1.0, 3.0], np.float32)
    (got,) = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    relu = np.maximum(x, 0)
    np.testing.assert_allclose(got, (np.exp(relu) + relu) * relu, rtol=1e-6)


def test_a_graph_without_repeats_is_left_alone() -> None:
    model = _twice_defined()
    model.graph.node[-1].output[0] = "out"
    before = model.SerializeToString()
    assert rename_redefinitions(model.graph) == []
    assert model.SerializeToString() == before
