"""Mixed-precision int8 for a Keras source on the Pi: TFLiteConverter's int8, then int8/mixed.

A Keras model's static int8 comes from TFLiteConverter's own calibration (``int8/converter``),
which has no per-op control. When it misses, ``int8/mixed`` quantizes the fp32 ``.tflite`` with
ai-edge-quantizer instead, the ops that hurt the metric most kept in float (the route the fer
corpus model takes). The model is the PyTorch mixed-precision test's, in Keras: eight Dense
layers, the fourth writing an activation with a x1000 outlier channel that the fifth scales back;
per-tensor int8 of that activation wipes out the other channels. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converter import convert
from converter.exporters.tflite_scan import scan_tflite
from hw_profiles.schema import ModelFormat, Precision, Tolerance
from models.bundle import extract_bundle, generate_keypair, load_public_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PI = "raspberry-pi-5"
LAYERS = 8
OUTLIER_LAYER = 4  # dense 4 writes the outlier channel, dense 5 reads it
TOLERANCE = Tolerance(max_accuracy_drop=100.0, min_top1_agreement=0.9, min_cosine=0.99)


def outlier_mlp(seed: int = 0) -> Any:
    """x[N,16] → dense 1 … 8 (tanh between, none after dense 4) → logits[N,10]; dense 4's unit 0 is x1000."""
    import keras

    rng = np.random.default_rng(seed)
    widths = [16] + [32] * (LAYERS - 1) + [10]
    x = inputs = keras.Input((16,), name="x")
    layers = []
    for layer in range(1, LAYERS + 1):
        activation = None if layer in (LAYERS, OUTLIER_LAYER) else "tanh"
        dense = keras.layers.Dense(widths[layer], activation=activation, name=f"dense{layer}")
        x = dense(x)
        layers.append(dense)
    model = keras.Model(inputs, x, name="outlier_mlp")
    for layer, dense in enumerate(layers, start=1):
        fan_in, fan_out = widths[layer - 1], widths[layer]
        kernel = rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in) * 1.5
        if layer == OUTLIER_LAYER:
            kernel[:, 0] *= 1000.0
        if layer == OUTLIER_LAYER + 1:
            kernel[0, :] /= 1000.0
        bias = rng.standard_normal(fan_out) * 0.1
        dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return model


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("keras-mixed")
    rng = np.random.default_rng(1)
    np.savez(root / "calib.npz", x=rng.standard_normal((64, 16)).astype(np.float32))
    np.savez(root / "eval.npz", x=rng.standard_normal((128, 16)).astype(np.float32))
    key, public = generate_keypair(root / "keys", "test")
    report = convert(
        outlier_mlp(),
        [PI],
        root / "calib.npz",
        root / "eval.npz",
        root / "out",
        key,
        output_names=["logits"],
        formats=["tflite"],
        tolerance=TOLERANCE,
        benchmark_iterations=2,
    )
    return {"root": root, "report": report, "public": load_public_key(public)}


def test_a_keras_model_recovers_int8_on_the_pi_with_mixed_precision(ws: dict[str, Any]) -> None:
    result = ws["report"].profile(PI)
    labels = [(a.label, a.decision) for a in result.attempts]
    assert labels[:2] == [("int8/converter", "rejected"), ("int8/mixed", "packaged")], labels
    plain, mixed = result.attempts[:2]
    assert plain.metrics is not None and plain.metrics.cosine < TOLERANCE.min_cosine
    # A few FULLY_CONNECTED ops in float, fewer than all eight, the outlier's among them.
    assert mixed.float_nodes and len(mixed.float_nodes) < LAYERS, mixed.float_nodes
    assert all(n.startswith("FULLY_CONNECTED_") for n in mixed.float_nodes), mixed.float_nodes
    assert mixed.precision is Precision.INT8 and mixed.metrics is not None
    assert mixed.metrics.cosine >= TOLERANCE.min_cosine
    assert any("int8 mixed precision passed" in n for n in mixed.runtime_notes), mixed.runtime_notes
    assert result.bundle is not None
    bundle = extract_bundle(Path(result.bundle.path), ws["root"] / "extracted", [ws["public"]])
    manifest = bundle.manifest
    assert manifest.precision is Precision.INT8 and manifest.format is ModelFormat.TFLITE
    assert manifest.labels["mixed_precision"] == ",".join(mixed.float_nodes)
    assert bundle.directory is not None
    scan = scan_tflite(bundle.directory / manifest.model_file, float_io=True)
    assert sorted(scan.float_ops) == ["FULLY_CONNECTED"] * len(mixed.float_nodes)
