"""Validation metrics and the pass/fail verdict: pure functions over arrays and a tolerance.

The candidate's outputs are compared with the fp32 original's on the same evaluation inputs:

- top-1 agreement: the share of samples whose arg-max class matches the original's;
- top-1 accuracy of both against ``labels``, and the drop in points (percent);
- cosine similarity of each sample's output vector with the original's (the mean over samples);
- the maximum and mean absolute error.

Top-1 figures only make sense for a classifier-shaped first output (``[N, classes]``); for other
models they are None, and the verdict rests on cosine similarity alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict

from hw_profiles.schema import Tolerance


class ValidationMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)

    samples: int
    top1_agreement: float | None
    accuracy: float | None
    reference_accuracy: float | None
    accuracy_drop: float | None  # points: 100 * (reference - candidate)
    cosine: float
    min_cosine: float
    max_abs_error: float
    mean_abs_error: float


class Check(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    value: float
    limit: float
    passed: bool
    rule: str  # "min" or "max"

    def describe(self) -> str:
        op = ">=" if self.rule == "min" else "<="
        verdict = "ok" if self.passed else "MISSED"
        return f"{self.name} {self.value:.4g} (needs {op} {self.limit:.4g}): {verdict}"


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool
    checks: list[Check]

    @property
    def failures(self) -> list[str]:
        return [check.describe() for check in self.checks if not check.passed]


def is_classifier(output: np.ndarray) -> bool:
    return output.ndim == 2 and output.shape[1] > 1


def compute_metrics(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    labels: np.ndarray | None = None,
) -> ValidationMetrics:
    """Compare ``candidate`` with ``reference`` (same output names, same samples, in order)."""
    names = list(reference)
    missing = [name for name in names if name not in candidate]
    if missing:
        raise ValueError(f"candidate lacks outputs {missing}")
    samples = len(reference[names[0]])
    ref = np.concatenate([_per_sample(reference[n], samples) for n in names], axis=1)
    got = np.concatenate([_per_sample(candidate[n], samples) for n in names], axis=1)
    if ref.shape != got.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {got.shape}")
    cosines = _cosines(ref, got)
    errors = np.abs(ref - got)
    first_ref, first_got = reference[names[0]], candidate[names[0]]
    agreement = accuracy = reference_accuracy = drop = None
    if is_classifier(first_ref):
        ref_top1 = np.argmax(first_ref, axis=1)
        got_top1 = np.argmax(first_got, axis=1)
        agreement = float(np.mean(ref_top1 == got_top1))
        if labels is not None:
            reference_accuracy = float(np.mean(ref_top1 == labels))
            accuracy = float(np.mean(got_top1 == labels))
            drop = 100.0 * (reference_accuracy - accuracy)
    return ValidationMetrics(
        samples=samples,
        top1_agreement=agreement,
        accuracy=accuracy,
        reference_accuracy=reference_accuracy,
        accuracy_drop=drop,
        cosine=float(np.mean(cosines)),
        min_cosine=float(np.min(cosines)),
        max_abs_error=float(np.max(errors)) if errors.size else 0.0,
        mean_abs_error=float(np.mean(errors)) if errors.size else 0.0,
    )


def judge(
    metrics: ValidationMetrics,
    tolerance: Tolerance,
    *,
    size_bytes: int | None = None,
    max_model_mb: float | None = None,
    integer_io: bool | None = None,
) -> Verdict:
    """Every check the tolerance (and the profile's size and I/O demands) implies, and whether all pass.

    ``integer_io``: whether every model input and output is an integer tensor, for profiles that
    need full-integer models (None when the profile does not care).
    """
    checks = [Check.model_validate(c) for c in _checks(metrics, tolerance, size_bytes, max_model_mb)]
    if integer_io is not None:
        checks.append(
            Check(name="integer_io", value=float(integer_io), limit=1.0, passed=integer_io, rule="min")
        )
    return Verdict(passed=all(c.passed for c in checks), checks=checks)


def _checks(
    metrics: ValidationMetrics, tolerance: Tolerance, size_bytes: int | None, max_model_mb: float | None
) -> list[dict[str, object]]:
    checks: list[dict[str, object]] = [
        _check("cosine", metrics.cosine, tolerance.min_cosine, "min"),
    ]
    if metrics.top1_agreement is not None:
        checks.append(_check("top1_agreement", metrics.top1_agreement, tolerance.min_top1_agreement, "min"))
    if metrics.accuracy_drop is not None:
        checks.append(_check("accuracy_drop", metrics.accuracy_drop, tolerance.max_accuracy_drop, "max"))
    if size_bytes is not None and max_model_mb is not None:
        checks.append(_check("size_mb", size_bytes / 1e6, max_model_mb, "max"))
    return checks


def _check(name: str, value: float, limit: float, rule: str) -> dict[str, object]:
    # A tiny epsilon so that a value printed as equal to the limit is not refused by rounding.
    passed = value >= limit - 1e-9 if rule == "min" else value <= limit + 1e-9
    return {"name": name, "value": value, "limit": limit, "passed": passed, "rule": rule}


def _per_sample(values: np.ndarray, samples: int) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(samples, -1)


def _cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    dots = np.sum(ref * got, axis=1)
    # Two all-zero vectors agree perfectly; one zero vector against a non-zero one does not.
    both_zero = (np.linalg.norm(ref, axis=1) == 0) & (np.linalg.norm(got, axis=1) == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosines = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(both_zero, 1.0, cosines)
