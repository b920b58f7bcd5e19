"""Mixed-precision int8 for TFLite (ai-edge-quantizer per-op recipe), against real LiteRT.

The model is built here in PyTorch from seeded weights, with the ONNX mixed-precision test's
sensitive layer: eight Linear layers, the fourth of which writes an activation with a huge outlier
channel (x1000) that the fifth scales back down. Per-tensor int8 of that activation wipes out the
other channels, so plain AEQ int8 misses the tolerance on the Pi; keeping the two FULLY_CONNECTED
ops around it in float recovers it. The Edge TPU needs full-integer models: no mixed attempt
there (``tests/unit/test_converter_tflite_mixed.py``). Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from converter import convert
from converter.exporters.tflite_scan import scan_tflite
from edge_agent.ota.health import load_golden, run_golden
from edge_agent.runtimes import open_session
from hw_profiles.schema import ModelFormat, Precision, Tolerance
from models.bundle import extract_bundle, generate_keypair, load_public_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PI = "raspberry-pi-5"
LAYERS = 8
OUTLIER_LAYER = 4  # fc4 writes the outlier channel, fc5 reads it
TOLERANCE = Tolerance(max_accuracy_drop=100.0, min_top1_agreement=0.9, min_cosine=0.99)


class OutlierMlp(nn.Module):
    """x[N,16] → fc1 … fc8 (tanh between, none after fc4) → logits[N,10]; fc4's channel 0 is x1000."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        widths = [16] + [32] * (LAYERS - 1) + [10]
        self.fcs = nn.ModuleList()
        for layer in range(1, LAYERS + 1):
            fan_in, fan_out = widths[layer - 1], widths[layer]
            weight = rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in) * 1.5
            if layer == OUTLIER_LAYER:
                weight[0] *= 1000.0
            if layer == OUTLIER_LAYER + 1:
                weight[:, 0] /= 1000.0
            fc = nn.Linear(fan_in, fan_out)
            with torch.no_grad():
                fc.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
                fc.bias.copy_(torch.from_numpy((rng.standard_normal(fan_out) * 0.1).astype(np.float32)))
            self.fcs.append(fc)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, fc in enumerate(self.fcs, start=1):
            x = fc(x)
            if layer not in (LAYERS, OUTLIER_LAYER):  # the outlier goes straight into the next layer
                x = torch.tanh(x)
        return x


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tflite-mixed")
    rng = np.random.default_rng(1)
    np.savez(root / "calib.npz", x=rng.standard_normal((64, 16)).astype(np.float32))
    np.savez(root / "eval.npz", x=rng.standard_normal((128, 16)).astype(np.float32))
    key, public = generate_keypair(root / "keys", "test")
    report = convert(
        OutlierMlp(),
        [PI],
        root / "calib.npz",
        root / "eval.npz",
        root / "out",
        key,
        output_names=["logits"],
        formats=["tflite"],
        calibrations=["minmax"],
        mixed_precision=True,
        tolerance=TOLERANCE,
        benchmark_iterations=2,
    )
    return {"root": root, "report": report, "public": load_public_key(public)}


def test_mixed_precision_recovers_int8_on_the_pi_by_keeping_the_outlier_layers_in_float(
    ws: dict[str, Any],
) -> None:
    result = ws["report"].profile(PI)
    labels = [(a.label, a.decision) for a in result.attempts]
    assert labels[:2] == [("int8/minmax", "rejected"), ("int8/mixed", "packaged")], labels
    plain, mixed = result.attempts[:2]
    assert plain.metrics is not None and plain.metrics.cosine < TOLERANCE.min_cosine
    assert plain.float_nodes == []
    # A few FULLY_CONNECTED ops in float, fewer than all: the two on either side of the outlier.
    # Ops are named by type and index in the fp32 graph: fc1 … fc3 with their TANHs are ops 0-5,
    # so fc4 (no TANH after it) is op 6 and fc5 op 7.
    assert set(mixed.float_nodes) == {"FULLY_CONNECTED_6", "FULLY_CONNECTED_7"}, mixed.float_nodes
    assert mixed.precision is Precision.INT8 and mixed.metrics is not None
    assert mixed.metrics.cosine >= TOLERANCE.min_cosine
    assert any("int8 mixed precision passed" in n for n in mixed.runtime_notes)
    # The scan's note says the float ops are kept on purpose, and warns about nothing.
    assert any("kept in float on purpose" in n for n in mixed.runtime_notes), mixed.runtime_notes
    assert not any(n.startswith("warning:") for n in mixed.runtime_notes), mixed.runtime_notes
    out = ws["root"] / "out"
    saved = json.loads((out / "report.json").read_text())
    [pi] = [p for p in saved["profiles"] if p["profile"] == PI]
    assert pi["attempts"][1]["float_nodes"] == mixed.float_nodes
    markdown = (out / "report.md").read_text()
    assert f"int8/mixed ({len(mixed.float_nodes)} float)" in markdown
    assert f"`{mixed.float_nodes[0]}`" in markdown
    # The bundle: that int8 model, FULLY_CONNECTED in float exactly where the report says.
    assert result.bundle is not None
    bundle = extract_bundle(Path(result.bundle.path), out / "extracted", [ws["public"]])
    manifest = bundle.manifest
    assert manifest.precision is Precision.INT8 and manifest.format is ModelFormat.TFLITE
    assert manifest.labels["mixed_precision"] == ",".join(mixed.float_nodes)
    assert bundle.directory is not None
    model = bundle.directory / manifest.model_file
    scan = scan_tflite(model, float_io=True)
    assert sorted(scan.float_ops) == ["FULLY_CONNECTED"] * len(mixed.float_nodes)
    # It serves in the agent's LiteRT session and passes its golden check.
    session = open_session(model, ModelFormat.TFLITE)
    try:
        golden = load_golden(bundle.directory, manifest)
        assert golden is not None
        check = run_golden(session.infer, golden)
    finally:
        session.close()
    assert check.passed, check
