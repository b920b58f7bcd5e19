"""Validation metrics, the verdict, golden I/O choices and latency summaries: pure numpy."""

from __future__ import annotations

import numpy as np
import pytest

from converter.benchmark import cpu_features_from_flags, latency_summary
from converter.metrics import compute_metrics, judge
from converter.packaging import golden_indices, golden_tolerance
from hw_profiles.schema import Precision, Tolerance

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(200, 10)).astype(np.float32)
LABELS = np.argmax(LOGITS, axis=1)


def test_identical_outputs_agree_perfectly() -> None:
    metrics = compute_metrics({"logits": LOGITS}, {"logits": LOGITS.copy()}, LABELS)
    assert metrics.top1_agreement == 1.0
    assert metrics.accuracy == metrics.reference_accuracy == 1.0
    assert metrics.accuracy_drop == 0.0
    assert metrics.cosine == pytest.approx(1.0)
    assert metrics.max_abs_error == 0.0
    assert judge(metrics, Tolerance()).passed


def test_flipped_predictions_lower_agreement_and_accuracy_by_their_share() -> None:
    candidate = LOGITS.copy()
    flipped = np.arange(10)  # 10 of 200 samples: 5%
    candidate[flipped] = -candidate[flipped]
    metrics = compute_metrics({"logits": LOGITS}, {"logits": candidate}, LABELS)
    assert metrics.top1_agreement == pytest.approx(0.95)
    assert metrics.accuracy == pytest.approx(0.95)
    assert metrics.accuracy_drop == pytest.approx(5.0)
    verdict = judge(metrics, Tolerance(max_accuracy_drop=1.0, min_top1_agreement=0.98, min_cosine=0.5))
    assert not verdict.passed
    failed = {c.name for c in verdict.checks if not c.passed}
    assert failed == {"top1_agreement", "accuracy_drop"}
    assert any("MISSED" in line for line in verdict.failures)


def test_small_noise_keeps_cosine_high_and_errors_small() -> None:
    noise = RNG.normal(scale=1e-3, size=LOGITS.shape).astype(np.float32)
    metrics = compute_metrics({"logits": LOGITS}, {"logits": LOGITS + noise})
    assert metrics.cosine > 0.9999
    assert 0 < metrics.mean_abs_error < metrics.max_abs_error < 1e-2
    assert metrics.accuracy is None and metrics.accuracy_drop is None


def test_non_classifier_outputs_have_no_top1_and_are_judged_on_cosine() -> None:
    reference = {"embedding": RNG.normal(size=(50, 1)).astype(np.float32)}
    metrics = compute_metrics(reference, {"embedding": -reference["embedding"]})
    assert metrics.top1_agreement is None
    assert metrics.cosine == pytest.approx(-1.0)
    verdict = judge(metrics, Tolerance())
    assert [c.name for c in verdict.checks] == ["cosine"]
    assert not verdict.passed


def test_zero_vectors_agree_with_zero_vectors_only() -> None:
    zeros = np.zeros((4, 3), np.float32)
    assert compute_metrics({"y": zeros}, {"y": zeros}).cosine == 1.0
    assert compute_metrics({"y": zeros}, {"y": np.ones((4, 3), np.float32)}).cosine == 0.0


def test_several_outputs_are_compared_together() -> None:
    reference = {"logits": LOGITS, "score": LOGITS[:, :1]}
    candidate = {"logits": LOGITS, "score": LOGITS[:, :1] + 1.0}
    metrics = compute_metrics(reference, candidate)
    assert metrics.top1_agreement == 1.0
    assert metrics.max_abs_error == pytest.approx(1.0)


def test_missing_or_misshapen_outputs_are_refused() -> None:
    with pytest.raises(ValueError, match="lacks outputs"):
        compute_metrics({"logits": LOGITS}, {"other": LOGITS})
    with pytest.raises(ValueError, match="shapes differ"):
        compute_metrics({"logits": LOGITS}, {"logits": LOGITS[:, :5]})


def test_a_model_over_the_size_limit_fails_the_verdict() -> None:
    metrics = compute_metrics({"logits": LOGITS}, {"logits": LOGITS})
    verdict = judge(metrics, Tolerance(), size_bytes=3_000_000, max_model_mb=2.0)
    assert not verdict.passed
    assert [c.name for c in verdict.checks if not c.passed] == ["size_mb"]


def test_golden_samples_are_the_ones_with_the_widest_margin() -> None:
    logits = np.zeros((6, 3), np.float32)
    logits[:, 0] = [0.1, 5.0, 0.2, 9.0, 0.3, 7.0]  # margins over the zero columns
    picks = golden_indices({"logits": logits}, 3)
    assert picks.tolist() == [1, 3, 5]
    assert golden_indices({"logits": logits}, 99).tolist() == list(range(6))


def test_golden_samples_of_a_regressor_are_the_first_ones() -> None:
    assert golden_indices({"y": np.arange(10, dtype=np.float32)[:, None]}, 4).tolist() == [0, 1, 2, 3]


def test_golden_tolerance_scales_with_outputs_and_loosens_with_precision() -> None:
    small = {"y": np.array([[1.0, -2.0]], np.float32)}
    large = {"y": np.array([[100.0, -200.0]], np.float32)}
    fp32 = golden_tolerance(Precision.FP32, small)
    int8 = golden_tolerance(Precision.INT8, small)
    assert fp32[0] < golden_tolerance(Precision.FP16, small)[0] < int8[0]
    assert golden_tolerance(Precision.INT8, large)[0] > int8[0]
    assert fp32[1] <= int8[1]


def test_latency_summary_reports_milliseconds() -> None:
    p50, p95, mean = latency_summary([0.001] * 90 + [0.010] * 10)
    assert p50 == pytest.approx(1.0)
    assert p95 == pytest.approx(10.0)
    assert mean == pytest.approx(1.9)
    with pytest.raises(ValueError):
        latency_summary([])


def test_cpu_flags_map_to_profile_feature_names() -> None:
    assert cpu_features_from_flags(["fpu", "avx2", "avx512_vnni", "sse4_2"]) == [
        "avx2",
        "avx512_vnni",
        "sse4_2",
    ]
    assert cpu_features_from_flags(["fp", "asimd", "asimddp", "asimdhp"]) == ["dotprod", "fp16", "neon"]
