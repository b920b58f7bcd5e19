"""The conversion `edgefleet demo` starts with, then everything its three bundles promise, checked for real.

The conversion runs once per module (digits-cnn for raspberry-pi-5, jetson-orin-nano and
intel-x86-openvino, with the demo's profiles and key name); the tests then verify each bundle, run
its golden I/O through the agent's own runtime session, check the accuracy figures against the fp32
original, and convert again to show the model files come out byte-identical. The whole demo
(fleet, rollouts, drift) is tested in test_demo.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converter import ConversionReport, convert
from edge_agent.runtimes import open_bundle_session
from edgefleet.cli.demo import DEMO_KEY_NAME, DEMO_PROFILES
from hw_profiles.schema import ModelFormat, Precision
from models.bundle import extract_bundle, generate_keypair, load_public_key, verify_bundle
from models.bundle.manifest import GOLDEN_NAME, REFERENCE_STATS_NAME
from models.stats import ReferenceStats
from models.zoo import get_reference

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPECTED = {
    "raspberry-pi-5": (ModelFormat.TFLITE, Precision.INT8),
    "jetson-orin-nano": (ModelFormat.ONNX, Precision.FP16),
    "intel-x86-openvino": (ModelFormat.OPENVINO, Precision.INT8),
}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("demo") / "edgefleet-demo"
    reference = get_reference("digits-cnn")
    calib, evaluation = reference.write_data(out / "data")
    key, _ = generate_keypair(out / "keys", DEMO_KEY_NAME)
    convert(
        reference.source,
        list(DEMO_PROFILES),
        calib,
        evaluation,
        out,
        key,
        output_names=[reference.output_name],
        name=reference.name,
        benchmark_iterations=20,
    )
    yield out


@pytest.fixture(scope="module")
def report(demo_dir: Path) -> ConversionReport:
    return ConversionReport.model_validate(json.loads((demo_dir / "report.json").read_text()))


@pytest.fixture(scope="module")
def public_key(demo_dir: Path) -> Any:
    return load_public_key(demo_dir / "keys" / f"{DEMO_KEY_NAME}.pub.pem")


def test_the_demo_leaves_bundles_reports_data_and_keys(demo_dir: Path, report: ConversionReport) -> None:
    assert (demo_dir / "report.md").read_text().startswith("# Conversion report: digits-cnn 1.0.0")
    assert (demo_dir / "data" / "calib.npz").is_file() and (demo_dir / "data" / "eval.npz").is_file()
    assert [p.profile for p in report.profiles] == list(DEMO_PROFILES)
    for result in report.profiles:
        assert result.status == "packaged"
        assert result.bundle is not None
        assert Path(result.bundle.path) == demo_dir / f"digits-cnn-1.0.0-{result.profile}.efb"


@pytest.mark.parametrize("profile", DEMO_PROFILES)
def test_each_bundle_verifies_and_holds_what_the_profile_asked_for(
    demo_dir: Path, public_key: Any, profile: str
) -> None:
    verified = verify_bundle(demo_dir / f"digits-cnn-1.0.0-{profile}.efb", [public_key])
    manifest = verified.manifest
    assert (manifest.format, manifest.precision) == EXPECTED[profile]
    assert manifest.profile == profile
    assert {GOLDEN_NAME, REFERENCE_STATS_NAME, manifest.model_file} <= set(manifest.files)
    assert [t.name for t in manifest.inputs] == ["input"]
    assert [t.name for t in manifest.outputs] == ["logits"]
    assert manifest.inputs[0].layout == "NCHW"
    assert manifest.validation["passed"] is True
    assert manifest.benchmark["host_figures"] is True
    if manifest.format is ModelFormat.OPENVINO:
        assert {f for f, e in manifest.files.items() if e.role == "weights"} == {"model.bin"}
    if manifest.format is ModelFormat.TFLITE:
        # ai-edge-quantizer int8 keeps float I/O off the Edge TPU: QUANTIZE in, DEQUANTIZE out.
        assert [t.dtype for t in [*manifest.inputs, *manifest.outputs]] == ["float32", "float32"]
        assert manifest.inputs[0].quantization is None and manifest.outputs[0].quantization is None


@pytest.mark.parametrize("profile", ["raspberry-pi-5", "intel-x86-openvino"])
def test_int8_loses_at_most_one_accuracy_point(report: ConversionReport, profile: str) -> None:
    chosen = report.profile(profile).chosen
    assert chosen is not None and chosen.precision is Precision.INT8
    assert chosen.metrics is not None and chosen.metrics.accuracy_drop is not None
    assert chosen.metrics.accuracy_drop <= 1.0
    assert report.reference_accuracy is not None and report.reference_accuracy >= 0.95


def test_fp16_agrees_with_fp32_on_at_least_99_5_percent(report: ConversionReport) -> None:
    chosen = report.profile("jetson-orin-nano").chosen
    assert chosen is not None and chosen.precision is Precision.FP16
    assert chosen.metrics is not None and chosen.metrics.top1_agreement is not None
    assert chosen.metrics.top1_agreement >= 0.995


def test_every_packaged_attempt_was_benchmarked_on_the_host(report: ConversionReport) -> None:
    for result in report.profiles:
        chosen = result.chosen
        assert chosen is not None and chosen.benchmark is not None
        bench = chosen.benchmark
        assert 0 < bench.p50_ms <= bench.p95_ms
        assert bench.throughput_per_s > 0
        assert bench.size_bytes == chosen.size_bytes
        assert bench.host.cores >= 1
        assert (
            bench.threads
            == {"raspberry-pi-5": 4, "jetson-orin-nano": 6, "intel-x86-openvino": 6}[result.profile]
        )


@pytest.mark.parametrize("profile", DEMO_PROFILES)
def test_golden_io_reproduces_in_the_agents_runtime(
    demo_dir: Path, public_key: Any, tmp_path: Path, profile: str
) -> None:
    dest = tmp_path / "extracted"
    manifest = extract_bundle(demo_dir / f"digits-cnn-1.0.0-{profile}.efb", dest, [public_key]).manifest
    assert manifest.golden is not None
    golden = np.load(dest / GOLDEN_NAME)
    with open_bundle_session(dest, manifest) as session:
        got = session.infer({"input": golden["input"]})["logits"]
    expected = golden["logits"]
    assert len(expected) == 8
    np.testing.assert_allclose(got, expected, atol=manifest.golden.atol, rtol=manifest.golden.rtol)
    assert np.array_equal(np.argmax(got, axis=1), np.argmax(expected, axis=1))


def test_reference_stats_load_and_cover_input_and_output(
    demo_dir: Path, public_key: Any, tmp_path: Path
) -> None:
    dest = tmp_path / "pi"
    extract_bundle(demo_dir / "digits-cnn-1.0.0-raspberry-pi-5.efb", dest, [public_key])
    stats = ReferenceStats.from_dict(json.loads((dest / REFERENCE_STATS_NAME).read_text()))
    assert {t.name for t in stats.tensors} == {"input", "logits"}
    # Frozen from the held-out evaluation set, all of it.
    with np.load(demo_dir / "data" / "eval.npz") as evaluation:
        assert stats.samples == len(evaluation["input"])


def test_the_same_inputs_give_byte_identical_model_files(
    demo_dir: Path, report: ConversionReport, tmp_path: Path
) -> None:
    again = convert(
        "models.zoo.digits_cnn:trained_model",
        list(DEMO_PROFILES),
        demo_dir / "data" / "calib.npz",
        demo_dir / "data" / "eval.npz",
        tmp_path / "again",
        demo_dir / "keys" / f"{DEMO_KEY_NAME}.key",
        name="digits-cnn",
        output_names=["logits"],
        benchmark_iterations=2,
    )
    for profile in DEMO_PROFILES:
        first, second = report.profile(profile).chosen, again.profile(profile).chosen
        assert first is not None and second is not None
        assert first.sha256 and first.sha256 == second.sha256
