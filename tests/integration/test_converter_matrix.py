"""Every format and precision, from every kind of digits source, for four real profiles.

Sources: ``digits-cnn`` (PyTorch), ``digits-keras`` (Keras) and an ONNX export of ``digits-cnn``
(the exporter's default opset, dynamic batch), plus a small digits MLP for dynamic int8 ONNX.
Profiles: raspberry-pi-5, jetson-orin-nano, intel-x86-openvino and coral-edgetpu.

Each conversion in ``CONVERSIONS`` runs once per module, on first use, and covers several
profiles (their base exports are shared); ``CASES`` says which (format, precision, calibration)
each profile of each conversion must end up with. Every case's bundle is verified, and the
accuracy figures are read from the report: int8 loses at most one point against fp32 in every
format, and fp16 agrees with fp32 on at least 99.5% of the top-1 predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from converter import CalibrationMethod, ConversionError, ConversionReport, convert
from converter.benchmark import host_info
from hw_profiles.schema import ModelFormat, Precision
from models.bundle import generate_keypair, load_public_key, verify_bundle
from models.bundle.manifest import Manifest
from models.zoo import get_reference
from models.zoo.data import digits_reference_data

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PI, JETSON, INTEL, CORAL = "raspberry-pi-5", "jetson-orin-nano", "intel-x86-openvino", "coral-edgetpu"
TFLITE, ONNX, OPENVINO = ModelFormat.TFLITE, ModelFormat.ONNX, ModelFormat.OPENVINO
FP32, FP16, INT8, DYNAMIC = Precision.FP32, Precision.FP16, Precision.INT8, Precision.INT8_DYNAMIC
HISTOGRAM, MINMAX = CalibrationMethod.HISTOGRAM, CalibrationMethod.MINMAX
ENTROPY, PERCENTILE = CalibrationMethod.ENTROPY, CalibrationMethod.PERCENTILE
CONVERTER = CalibrationMethod.CONVERTER
MAX_INT8_DROP_POINTS = 1.0
MIN_FP16_AGREEMENT = 0.995


@dataclass(frozen=True)
class Conversion:
    """One ``convert`` call: a source (a key of the workspace), profiles and overrides."""

    source: str
    profiles: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict)


CONVERSIONS = {
    # The profiles' own choices.
    "torch": Conversion("torch", (PI, JETSON, INTEL, CORAL)),
    "keras": Conversion("keras", (PI, INTEL, CORAL)),
    "onnx": Conversion("onnx", (PI, JETSON, INTEL, CORAL)),
    # --precision overrides, one precision for every profile of the call.
    "torch-fp32": Conversion("torch", (PI, JETSON, INTEL), {"precisions": ["fp32"]}),
    "torch-fp16": Conversion("torch", (PI, INTEL), {"precisions": ["fp16"]}),
    "torch-int8-dynamic": Conversion("torch", (PI, INTEL), {"precisions": ["int8-dynamic"]}),
    "keras-fp16": Conversion("keras", (PI, INTEL), {"precisions": ["fp16"]}),
    # TFLite static int8 through PT2E (litert-torch's quantizer), second to ai-edge-quantizer.
    "torch-pt2e": Conversion("torch", (PI, CORAL), {"precisions": ["int8"], "calibrations": ["histogram"]}),
    # Static int8 ONNX with each of ONNX Runtime's calibration methods.
    "onnx-minmax": Conversion("onnx", (JETSON,), {"precisions": ["int8"], "calibrations": ["minmax"]}),
    "onnx-entropy": Conversion(
        "onnx", (PI,), {"formats": ["onnx"], "precisions": ["int8"], "calibrations": ["entropy"]}
    ),
    "onnx-percentile": Conversion(
        "onnx", (INTEL,), {"formats": ["onnx"], "precisions": ["int8"], "calibrations": ["percentile"]}
    ),
    # Dynamic int8 ONNX is for models without convolutions.
    "mlp-int8-dynamic": Conversion("mlp", (PI,), {"formats": ["onnx"], "precisions": ["int8-dynamic"]}),
}


@dataclass(frozen=True)
class Case:
    conversion: str
    profile: str
    format: ModelFormat
    precision: Precision
    calibration: CalibrationMethod | None = None

    @property
    def id(self) -> str:
        label = (
            f"{self.precision.value}-{self.calibration.value}" if self.calibration else self.precision.value
        )
        return f"{self.conversion}:{self.profile}:{self.format.value}-{label}"


CASES = [
    Case("torch", PI, TFLITE, INT8, MINMAX),
    Case("torch", JETSON, ONNX, FP16),
    Case("torch", INTEL, OPENVINO, INT8, MINMAX),
    Case("torch", CORAL, TFLITE, INT8, MINMAX),
    Case("keras", PI, TFLITE, INT8, CONVERTER),
    Case("keras", INTEL, OPENVINO, INT8, MINMAX),
    Case("keras", CORAL, TFLITE, INT8, CONVERTER),
    Case("onnx", PI, TFLITE, INT8, MINMAX),
    Case("onnx", JETSON, ONNX, FP16),
    Case("onnx", INTEL, OPENVINO, INT8, MINMAX),
    Case("onnx", CORAL, TFLITE, INT8, MINMAX),
    Case("torch-fp32", PI, TFLITE, FP32),
    Case("torch-fp32", JETSON, ONNX, FP32),
    Case("torch-fp32", INTEL, OPENVINO, FP32),
    Case("torch-fp16", PI, TFLITE, FP16),
    Case("torch-fp16", INTEL, OPENVINO, FP16),
    Case("torch-int8-dynamic", PI, TFLITE, DYNAMIC),
    Case("torch-int8-dynamic", INTEL, OPENVINO, DYNAMIC),
    Case("keras-fp16", PI, TFLITE, FP16),
    Case("keras-fp16", INTEL, OPENVINO, FP16),
    Case("torch-pt2e", PI, TFLITE, INT8, HISTOGRAM),
    Case("torch-pt2e", CORAL, TFLITE, INT8, HISTOGRAM),
    Case("onnx-minmax", JETSON, ONNX, INT8, MINMAX),
    Case("onnx-entropy", PI, ONNX, INT8, ENTROPY),
    Case("onnx-percentile", INTEL, ONNX, INT8, PERCENTILE),
    Case("mlp-int8-dynamic", PI, ONNX, DYNAMIC),
]
INT8_CASES = [c for c in CASES if c.precision in (INT8, DYNAMIC)]
FP16_CASES = [c for c in CASES if c.precision is FP16]


# --- the digits MLP -----------------------------------------------------------------------------


class DigitsMLP(nn.Module):
    """64 pixels → 64 → 10: no convolution, so dynamic int8 ONNX suits it."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.layers(pixels)
        return logits


def trained_mlp() -> nn.Module:
    """Trained in a second, full batch, from a fixed seed (so its accuracy is the same every run)."""
    data = digits_reference_data("NCHW")
    assert data.train is not None and data.train_labels is not None
    inputs = torch.from_numpy(data.train.reshape(len(data.train), 64))
    labels = torch.from_numpy(data.train_labels.astype(np.int64))
    generator = torch.Generator().manual_seed(0)
    model = DigitsMLP()
    for parameter in model.parameters():
        with torch.no_grad():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimiser.step()
    return model.eval()


def write_mlp_data(out_dir: Path) -> tuple[Path, Path]:
    data = digits_reference_data("NCHW")
    assert data.eval_labels is not None
    out_dir.mkdir(parents=True)
    calib, evaluation = out_dir / "calib.npz", out_dir / "eval.npz"
    np.savez(calib, pixels=data.calib.reshape(len(data.calib), 64))
    np.savez(
        evaluation,
        pixels=data.eval_inputs.reshape(len(data.eval_inputs), 64),
        labels=data.eval_labels.astype(np.int64),
    )
    return calib, evaluation


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("matrix")
    key, public = generate_keypair(root / "keys", "test")
    cnn, keras = get_reference("digits-cnn"), get_reference("digits-keras")
    onnx_file = root / "src" / "digits-cnn.onnx"
    onnx_file.parent.mkdir()
    with torch.no_grad():
        torch.onnx.export(
            cnn.load(),
            (torch.zeros(2, 1, 8, 8),),
            str(onnx_file),
            dynamo=True,
            external_data=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        )
    data = {
        "torch": cnn.write_data(root / "cnn-data"),
        "keras": keras.write_data(root / "keras-data"),
        "mlp": write_mlp_data(root / "mlp-data"),
    }
    data["onnx"] = data["torch"]
    return {
        "root": root,
        "key": key,
        "public": load_public_key(public),
        "sources": {
            "torch": cnn.source,
            "keras": str(keras.save_source(root / "src")),  # a .keras file
            "onnx": str(onnx_file),
            "mlp": trained_mlp(),
        },
        "data": data,
        "names": {
            "torch": "digits-cnn",
            "keras": "digits-keras",
            "onnx": "digits-cnn-onnx",
            "mlp": "digits-mlp",
        },
        "reports": {},
    }


def report_of(workspace: dict[str, Any], conversion: str) -> ConversionReport:
    """The report of ``CONVERSIONS[conversion]``, converting on first use."""
    reports: dict[str, ConversionReport] = workspace["reports"]
    if conversion not in reports:
        spec = CONVERSIONS[conversion]
        calib, evaluation = workspace["data"][spec.source]
        reports[conversion] = convert(
            workspace["sources"][spec.source],
            list(spec.profiles),
            calib,
            evaluation,
            workspace["root"] / conversion,
            workspace["key"],
            name=workspace["names"][spec.source],
            output_names=None if spec.source in ("keras", "onnx") else ["logits"],
            benchmark_iterations=2,
            **spec.overrides,
        )
    return reports[conversion]


def manifest_of(workspace: dict[str, Any], conversion: str, profile: str) -> Manifest:
    """The verified manifest of the bundle ``conversion`` made for ``profile``."""
    result = report_of(workspace, conversion).profile(profile)
    assert result.bundle is not None, result.error
    return verify_bundle(Path(result.bundle.path), [workspace["public"]]).manifest


# --- the matrix ---------------------------------------------------------------------------------


def test_the_cases_cover_every_format_precision_source_and_profile() -> None:
    covered = {(c.format, c.precision, c.calibration) for c in CASES}
    wanted = {
        (TFLITE, FP32, None),
        (TFLITE, FP16, None),
        (TFLITE, DYNAMIC, None),
        (TFLITE, INT8, MINMAX),
        (TFLITE, INT8, HISTOGRAM),
        (ONNX, FP32, None),
        (ONNX, FP16, None),
        (ONNX, INT8, MINMAX),
        (ONNX, INT8, ENTROPY),
        (ONNX, INT8, PERCENTILE),
        (ONNX, DYNAMIC, None),
        (OPENVINO, FP32, None),
        (OPENVINO, FP16, None),
        (OPENVINO, INT8, MINMAX),
    }
    assert wanted <= covered
    # Full-integer TFLite (int8 I/O) for the Edge TPU from each digits source.
    assert {CONVERSIONS[c.conversion].source for c in CASES if c.profile == CORAL} == {
        "torch",
        "keras",
        "onnx",
    }
    assert {CONVERSIONS[c.conversion].source for c in CASES} == {"torch", "keras", "onnx", "mlp"}
    assert {c.profile for c in CASES} == {PI, JETSON, INTEL, CORAL}
    for case in CASES:
        assert case.profile in CONVERSIONS[case.conversion].profiles


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_each_case_is_packaged_in_its_format_and_precision_and_verifies(
    workspace: dict[str, Any], case: Case
) -> None:
    result = report_of(workspace, case.conversion).profile(case.profile)
    assert result.status == "packaged", result.error
    chosen = result.chosen
    assert chosen is not None
    assert (chosen.format, chosen.precision, chosen.calibration) == (
        case.format,
        case.precision,
        case.calibration,
    )
    manifest = manifest_of(workspace, case.conversion, case.profile)
    assert (manifest.profile, manifest.format, manifest.precision) == (
        case.profile,
        case.format,
        case.precision,
    )
    assert manifest.validation["passed"] is True
    assert manifest.files[manifest.model_file].sha256 == chosen.sha256[manifest.model_file]
    if case.profile == CORAL:
        # Full integer: int8 tensors at both ends, with the scale and zero point a client needs.
        for tensor in [*manifest.inputs, *manifest.outputs]:
            assert tensor.dtype == "int8" and tensor.quantization is not None
        assert {"name": "integer_io", "passed": True}.items() <= next(
            c for c in manifest.validation["checks"] if c["name"] == "integer_io"
        ).items()
        assert any("edgetpu_compiler" in note for note in result.plan_notes)
    elif case.format is not ModelFormat.TFLITE or case.precision is not INT8:
        assert all(t.dtype == "float32" for t in manifest.inputs)


@pytest.mark.parametrize("case", INT8_CASES, ids=lambda c: c.id)
def test_int8_loses_at_most_one_point_against_fp32(workspace: dict[str, Any], case: Case) -> None:
    chosen = report_of(workspace, case.conversion).profile(case.profile).chosen
    assert chosen is not None and chosen.metrics is not None
    assert chosen.metrics.accuracy_drop is not None
    assert chosen.metrics.accuracy_drop <= MAX_INT8_DROP_POINTS
    # The same against the fp32 artifact of the format, where the matrix builds one from this source.
    fp32 = next(
        (c for c in CASES if c.precision is FP32 and c.format is case.format and _source(c) == _source(case)),
        None,
    )
    if fp32 is not None:
        reference = report_of(workspace, fp32.conversion).profile(fp32.profile).chosen
        assert (
            reference is not None and reference.metrics is not None and reference.metrics.accuracy is not None
        )
        assert chosen.metrics.accuracy is not None
        assert 100 * (reference.metrics.accuracy - chosen.metrics.accuracy) <= MAX_INT8_DROP_POINTS


@pytest.mark.parametrize("case", FP16_CASES, ids=lambda c: c.id)
def test_fp16_agrees_with_fp32_on_top1(workspace: dict[str, Any], case: Case) -> None:
    chosen = report_of(workspace, case.conversion).profile(case.profile).chosen
    assert chosen is not None and chosen.metrics is not None
    assert chosen.metrics.top1_agreement is not None
    assert chosen.metrics.top1_agreement >= MIN_FP16_AGREEMENT


def _source(case: Case) -> str:
    return CONVERSIONS[case.conversion].source


# --- what the bundles say besides the model -----------------------------------------------------


def test_benchmark_figures_are_complete_and_marked_as_host_figures(workspace: dict[str, Any]) -> None:
    manifest = manifest_of(workspace, "torch", PI)
    bench = manifest.benchmark
    assert bench["host_figures"] is True
    assert bench["host"]["features"] == host_info().features and bench["host"]["cpu"] == host_info().cpu
    assert bench["threads"] == 4 and bench["runtime"] == "litert"
    assert 0 < bench["p50_ms"] <= bench["p95_ms"]
    assert bench["throughput_per_s"] > 0 and bench["peak_rss_delta_mb"] >= 0
    model_bytes = sum(e.size for e in manifest.files.values() if e.role in ("model", "weights"))
    assert bench["size_bytes"] == model_bytes


def test_the_keras_bundles_keep_channels_last_and_float_io_off_the_edge_tpu(
    workspace: dict[str, Any],
) -> None:
    for profile in (PI, INTEL, CORAL):
        manifest = manifest_of(workspace, "keras", profile)
        assert manifest.inputs[0].layout == "NHWC"
        assert [t.name for t in manifest.outputs] == ["logits"]
    pi = manifest_of(workspace, "keras", PI)
    assert pi.inputs[0].dtype == "float32" and pi.outputs[0].dtype == "float32"


def test_the_onnx_source_reaches_tflite_through_onnx2torch_without_a_global_torchvision(
    workspace: dict[str, Any],
) -> None:
    import sys

    report = report_of(workspace, "onnx")
    assert report.profile(PI).format is TFLITE and report.profile(CORAL).format is TFLITE
    # The torchvision stand-in exists only while onnx2torch is imported.
    assert "torchvision" not in sys.modules
    manifest = manifest_of(workspace, "onnx", PI)
    assert [t.name for t in manifest.inputs] == ["input"] and [t.name for t in manifest.outputs] == ["logits"]


def test_dynamic_int8_onnx_of_the_cnn_is_refused_before_anything_is_built(workspace: dict[str, Any]) -> None:
    calib, evaluation = workspace["data"]["torch"]
    out = workspace["root"] / "refused"
    with pytest.raises(ConversionError) as caught:
        convert(
            workspace["sources"]["torch"],
            [PI],
            calib,
            evaluation,
            out,
            workspace["key"],
            formats=["onnx"],
            precisions=["int8-dynamic"],
        )
    error = caught.value
    assert (error.step, error.format, error.profile) == ("plan", "onnx", PI)
    assert "ConvInteger" in error.message and "without convolutions" in error.message
    assert "--precision int8" in error.hint
    assert not list(out.glob("*.efb"))
