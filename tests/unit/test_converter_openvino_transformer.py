"""NNCF's transformer patterns are picked for graphs with attention (MiniLM failed without them)."""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from converter.exporters.openvino_export import is_transformer


def _model(attention: bool, softmax: bool = True) -> ov.Model:
    x = ops.parameter([1, 4, 8], np.float32, name="x")
    weight = ops.constant(np.ones((8, 8), np.float32))
    hidden = ops.matmul(x, weight, False, False)  # a layer: activations × weights
    if attention:
        hidden = ops.matmul(hidden, hidden, False, True)  # Q·Kᵀ: activations × activations
    out = ops.softmax(hidden, -1) if softmax else ops.relu(hidden)
    return ov.Model([out], [x], "m")


def test_attention_makes_a_transformer() -> None:
    assert is_transformer(_model(attention=True))


def test_weights_only_matmuls_or_no_softmax_do_not() -> None:
    assert not is_transformer(_model(attention=False))
    assert not is_transformer(_model(attention=True, softmax=False))


def test_fp16_compressed_weights_still_count_as_weights() -> None:
    x = ops.parameter([1, 8], np.float32, name="x")
    weight = ops.convert(ops.constant(np.ones((8, 8), np.float16)), np.float32)
    model = ov.Model([ops.softmax(ops.matmul(x, weight, False, False), -1)], [x], "m")
    assert not is_transformer(model)
