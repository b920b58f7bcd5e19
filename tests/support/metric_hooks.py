"""Users' scoring functions for ``--metric module:function`` tests (higher is better)."""

from __future__ import annotations

import numpy as np

CALLS: list[tuple[tuple[int, ...], bool]] = []  # (reference shape, labels given) per call


def mean_abs_closeness(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None
) -> float:
    """1 - mean absolute error: 1.0 for identical outputs."""
    CALLS.append((tuple(np.shape(reference)), labels is not None))
    return 1.0 - float(np.mean(np.abs(np.asarray(reference, np.float64) - np.asarray(candidate, np.float64))))


def always_low(reference: np.ndarray, candidate: np.ndarray) -> float:
    """A two-argument hook that refuses everything: no labels parameter."""
    return 0.0


def not_a_number(reference: np.ndarray, candidate: np.ndarray) -> str:
    return "high"


NOT_CALLABLE = 3
