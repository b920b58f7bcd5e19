"""The golden I/O check: the comparison rules, reading golden.npz, warm-up inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.ota import GoldenError, compare_golden, load_golden, run_golden, warm_up
from edge_agent.ota.health import synthetic_inputs
from models.bundle import GoldenSpec, Manifest, build_manifest_files
from tests.support.bundles import golden_arrays, npz_bytes, tiny_forward, tiny_manifest

SPEC = GoldenSpec(atol=1e-3, rtol=1e-3, min_top1_agreement=1.0)


def _scores() -> np.ndarray:
    return np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.5, 0.0, 4.0]], dtype=np.float32)


def test_identical_outputs_pass() -> None:
    report = compare_golden({"y": _scores()}, {"y": _scores().copy()}, SPEC)
    assert report.passed
    assert report.figures()["outputs"]["y"]["top1_agreement"] == 1.0


def test_values_within_tolerance_pass_and_beyond_fail() -> None:
    near = _scores() + np.float32(5e-4)
    assert compare_golden({"y": _scores()}, {"y": near}, SPEC).passed
    far = _scores().copy()
    far[1, 0] += 0.5  # one value off, the top-1 class unchanged
    report = compare_golden({"y": _scores()}, {"y": far}, SPEC)
    assert not report.passed
    assert "1 of 9 value(s) outside" in report.reason
    assert report.outputs[0].top1_agreement == 1.0


def test_top1_disagreement_fails_even_within_a_loose_tolerance() -> None:
    loose = GoldenSpec(atol=10.0, rtol=0.0, min_top1_agreement=1.0)
    swapped = _scores()[:, ::-1].copy()
    report = compare_golden({"y": _scores()}, {"y": swapped}, loose)
    assert not report.passed
    assert "top-1 agreement" in report.reason


def test_top1_agreement_threshold_is_inclusive() -> None:
    loose = GoldenSpec(atol=10.0, rtol=0.0, min_top1_agreement=2 / 3)
    one_wrong = _scores().copy()
    one_wrong[0] = [0.0, 0.0, 9.0]
    assert compare_golden({"y": _scores()}, {"y": one_wrong}, loose).passed


@pytest.mark.parametrize(
    ("actual", "problem"),
    [
        ({"y": np.full((3, 3), np.nan, dtype=np.float32)}, "NaN or infinite"),
        ({"y": np.zeros((3, 2), dtype=np.float32)}, "shape [3, 2], expected [3, 3]"),
        ({}, "not produced"),
    ],
)
def test_unusable_outputs_fail_with_what_was_wrong(actual: dict[str, np.ndarray], problem: str) -> None:
    report = compare_golden({"y": _scores()}, actual, SPEC)
    assert not report.passed
    assert problem in report.reason


def test_non_classifier_outputs_have_no_top1() -> None:
    values = np.arange(5, dtype=np.float32)
    report = compare_golden({"v": values}, {"v": values}, SPEC)
    assert report.passed and report.outputs[0].top1_agreement is None


def _manifest_with_golden(tmp_path: Path, arrays: dict[str, np.ndarray]) -> Manifest:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"model")
    golden = tmp_path / "golden.npz"
    golden.write_bytes(npz_bytes(arrays))
    return tiny_manifest(
        build_manifest_files({"model.onnx": (model, "model"), "golden.npz": (golden, "golden")})
    )


def test_load_golden_reads_inputs_and_outputs_by_tensor_name(tmp_path: Path) -> None:
    manifest = _manifest_with_golden(tmp_path, golden_arrays())
    golden = load_golden(tmp_path, manifest)
    assert golden is not None
    assert set(golden.inputs) == {"x"} and set(golden.expected) == {"y"}
    assert golden.samples == 4
    assert run_golden(lambda feeds: {"y": tiny_forward(feeds["x"])}, golden).passed
    assert not run_golden(lambda feeds: {"y": tiny_forward(feeds["x"]) + 1}, golden).passed


def test_a_golden_file_without_a_declared_tensor_is_refused(tmp_path: Path) -> None:
    manifest = _manifest_with_golden(tmp_path, {"x": golden_arrays()["x"]})
    with pytest.raises(GoldenError, match="lacks the tensor"):
        load_golden(tmp_path, manifest)


def test_a_bundle_without_golden_io_has_none(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"model")
    manifest = tiny_manifest(build_manifest_files({"model.onnx": (model, "model")}))
    assert load_golden(tmp_path, manifest) is None
    feeds = synthetic_inputs(manifest)
    assert feeds["x"].shape == (1, 4) and feeds["x"].dtype == np.float32


def test_warm_up_runs_the_model_the_asked_number_of_times() -> None:
    calls: list[int] = []

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(1)
        return {}

    seconds = warm_up(run, {"x": np.zeros((1, 4), np.float32)}, 3)
    assert len(calls) == 3 and len(seconds) == 3 and all(s >= 0 for s in seconds)
