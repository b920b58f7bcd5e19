"""Mixed-precision int8 for ONNX Runtime, against the real runtime.

The model is built here from seeded weights (onnx.helper): eight Gemm layers, one of which writes
an activation with a huge outlier channel (x1000) that the next layer scales back down. Per-tensor
int8 of that activation wipes out the other channels, so plain int8 misses the tolerance; keeping
the two Gemms around it in float recovers it. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter import convert
from edge_agent.ota.health import load_golden, run_golden
from edge_agent.runtimes import open_session
from hw_profiles.schema import ModelFormat, Precision, Tolerance
from models.bundle import extract_bundle, generate_keypair, load_public_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROFILE = "generic-x86"  # ONNX first, int8 allowed
LAYERS = 8
OUTLIER_LAYER = 4  # fc4 writes the outlier channel, fc5 reads it
TOLERANCE = Tolerance(max_accuracy_drop=100.0, min_top1_agreement=0.9, min_cosine=0.99)


def outlier_mlp(path: Path, seed: int = 0) -> Path:
    """x[N,16] → fc1 … fc8 (Gemm, tanh between) → logits[N,10]; fc4's channel 0 is x1000."""
    rng = np.random.default_rng(seed)
    widths = [16] + [32] * (LAYERS - 1) + [10]
    nodes, inits = [], []
    current = "x"
    for layer in range(1, LAYERS + 1):
        fan_in, fan_out = widths[layer - 1], widths[layer]
        weight = rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in) * 1.5
        if layer == OUTLIER_LAYER:
            weight[0] *= 1000.0
        if layer == OUTLIER_LAYER + 1:
            weight[:, 0] /= 1000.0
        bias = rng.standard_normal(fan_out) * 0.1
        name = f"fc{layer}"
        inits += [
            numpy_helper.from_array(weight.astype(np.float32), f"{name}.weight"),
            numpy_helper.from_array(bias.astype(np.float32), f"{name}.bias"),
        ]
        out = "logits" if layer == LAYERS else f"{name}_out"
        nodes.append(
            helper.make_node("Gemm", [current, f"{name}.weight", f"{name}.bias"], [out], name=name, transB=1)
        )
        current = out
        if layer not in (LAYERS, OUTLIER_LAYER):  # the outlier goes straight into the next Gemm
            nodes.append(helper.make_node("Tanh", [out], [f"{name}_act"], name=f"tanh{layer}"))
            current = f"{name}_act"
    graph = helper.make_graph(
        nodes,
        "outlier-mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(1)
    np.savez(root / "calib.npz", x=rng.standard_normal((64, 16)).astype(np.float32))
    np.savez(root / "eval.npz", x=rng.standard_normal((128, 16)).astype(np.float32))
    key, public = generate_keypair(root / "keys", "test")
    return {
        "root": root,
        "onnx": outlier_mlp(root / "outlier.onnx"),
        "calib": root / "calib.npz",
        "eval": root / "eval.npz",
        "key": key,
        "public": load_public_key(public),
    }


def run(ws: dict[str, Any], out: str, **kwargs: Any) -> Any:
    return convert(
        str(ws["onnx"]),
        [PROFILE],
        ws["calib"],
        ws["eval"],
        ws["root"] / out,
        ws["key"],
        formats=["onnx"],
        precisions=["int8", "fp32"],
        calibrations=["minmax"],
        mixed_precision=True,
        tolerance=TOLERANCE,
        benchmark_iterations=2,
        **kwargs,
    )


def test_mixed_precision_recovers_int8_by_keeping_the_outlier_layers_in_float(ws: dict[str, Any]) -> None:
    report = run(ws, "recovered")
    result = report.profile(PROFILE)
    labels = [(a.label, a.decision) for a in result.attempts]
    assert labels == [("int8/minmax", "rejected"), ("int8/mixed", "packaged")]
    plain, mixed = result.attempts
    assert plain.metrics is not None and plain.metrics.cosine < 0.5  # plain int8 is far off
    assert plain.float_nodes == []
    # Few nodes in float, fewer than all: the two Gemms on either side of the outlier activation.
    assert 0 < len(mixed.float_nodes) < LAYERS
    assert set(mixed.float_nodes) == {f"fc{OUTLIER_LAYER}", f"fc{OUTLIER_LAYER + 1}"}
    assert mixed.precision is Precision.INT8 and mixed.metrics is not None
    assert mixed.metrics.cosine >= TOLERANCE.min_cosine
    assert any("int8 mixed precision passed" in n for n in mixed.runtime_notes)
    # The report says which nodes stayed in float, in JSON and in Markdown (a count in the table).
    out = ws["root"] / "recovered"
    saved = json.loads((out / "report.json").read_text())
    assert saved["profiles"][0]["attempts"][1]["float_nodes"] == mixed.float_nodes
    markdown = (out / "report.md").read_text()
    assert "int8/mixed (2 float)" in markdown and "`fc4`" in markdown
    # The bundle is that int8 model, it loads in the agent's ONNX Runtime session and passes its golden check.
    assert result.bundle is not None
    bundle = extract_bundle(Path(result.bundle.path), out / "extracted", [ws["public"]])
    manifest = bundle.manifest
    assert manifest.precision is Precision.INT8 and manifest.labels["calibration"] == "minmax"
    assert manifest.labels["mixed_precision"] == ",".join(mixed.float_nodes)
    assert bundle.directory is not None
    model = onnx.load(str(bundle.directory / manifest.model_file))
    # A quantized Gemm reads its weight through a DequantizeLinear; a float one reads the fp32 initializer.
    float_weights = {
        n.name for n in model.graph.node if n.op_type == "Gemm" and n.input[1] == f"{n.name}.weight"
    }
    assert float_weights == {"fc4", "fc5"}
    session = open_session(bundle.directory / manifest.model_file, ModelFormat.ONNX)
    try:
        golden = load_golden(bundle.directory, manifest)
        assert golden is not None
        check = run_golden(session.infer, golden)
    finally:
        session.close()
    assert check.passed, check


def test_when_no_mix_passes_within_the_budget_the_attempt_is_rejected_and_fp32_packaged(
    ws: dict[str, Any],
) -> None:
    report = run(ws, "budget", tolerances={"cosine": 0.999999})  # beyond int8 with 2 of 8 float
    result = report.profile(PROFILE)
    attempts = {a.label: a for a in result.attempts}
    mixed = attempts["int8/mixed"]
    assert mixed.decision == "rejected"
    assert any("cosine[logits]" in reason and "MISSED" in reason for reason in mixed.reasons)
    # Its best figures are kept, within the budget: at most a quarter of the eight nodes in float.
    assert mixed.metrics is not None and 0 < len(mixed.float_nodes) <= LAYERS // 4
    [note] = [n for n in mixed.runtime_notes if n.startswith("int8 mixed precision")]
    assert "no mix passed" in note and "budget" in note
    chosen = result.chosen
    assert chosen is not None and (chosen.label, chosen.decision) == ("fp32", "packaged")
    assert [a.label for a in result.attempts][:2] == ["int8/minmax", "int8/mixed"]
    assert "int8/mixed (2 float) | " in (ws["root"] / "budget" / "report.md").read_text()


def test_the_default_onnx_chain_tries_mixed_precision_after_every_plain_calibration(
    ws: dict[str, Any],
) -> None:
    report = convert(
        str(ws["onnx"]),
        [PROFILE],
        ws["calib"],
        ws["eval"],
        ws["root"] / "default",
        ws["key"],
        formats=["onnx"],
        precisions=["int8", "fp32"],
        tolerance=TOLERANCE,
        benchmark_iterations=2,
    )
    attempts = report.profile(PROFILE).attempts
    assert [(a.label, a.decision) for a in attempts] == [
        ("int8/minmax", "rejected"),
        ("int8/entropy", "rejected"),
        ("int8/percentile", "rejected"),
        ("int8/mixed", "packaged"),
    ]
    assert set(attempts[-1].float_nodes) == {"fc4", "fc5"}
