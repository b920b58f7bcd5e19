"""The test helper's tiny model is a valid ONNX model that computes what its golden file says."""

from __future__ import annotations

import io

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from tests.support.bundles import (
    IN_FEATURES,
    INPUT_NAME,
    OUT_FEATURES,
    OUTPUT_NAME,
    golden_arrays,
    npz_bytes,
    tiny_forward,
    tiny_onnx_model,
)


def test_hand_encoded_model_passes_the_onnx_checker_with_the_declared_signature() -> None:
    model = onnx.load_from_string(tiny_onnx_model())
    onnx.checker.check_model(model, full_check=True)
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert (graph_input.name, graph_output.name) == (INPUT_NAME, OUTPUT_NAME)
    in_dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in graph_output.type.tensor_type.shape.dim]
    assert in_dims == ["batch", IN_FEATURES] and out_dims == ["batch", OUT_FEATURES]


def test_model_computes_the_golden_outputs() -> None:
    golden = golden_arrays(samples=7, seed=3)
    (result,) = ReferenceEvaluator(tiny_onnx_model()).run(None, {INPUT_NAME: golden[INPUT_NAME]})
    outputs = np.asarray(result, dtype=np.float32)
    np.testing.assert_allclose(outputs, golden[OUTPUT_NAME], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(outputs, tiny_forward(golden[INPUT_NAME]), rtol=1e-6, atol=1e-6)


def test_npz_bytes_are_deterministic_and_loadable() -> None:
    arrays = golden_arrays()
    assert npz_bytes(arrays) == npz_bytes(golden_arrays())
    loaded = np.load(io.BytesIO(npz_bytes(arrays)))
    assert sorted(loaded.files) == sorted(arrays)
    for name, array in arrays.items():
        np.testing.assert_array_equal(loaded[name], array)
