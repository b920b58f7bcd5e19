"""Frozen bin edges and vectorised counting into them.

Edges are a strictly increasing float64 array whose first element is ``-inf`` and last ``+inf``,
so every value falls in some bin. Bin ``i`` is the half-open interval ``[edges[i], edges[i+1])``.
"""

from __future__ import annotations

import numpy as np


def freeze_bin_edges(values: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Edges at the ``1/n_bins ... (n_bins-1)/n_bins`` quantiles of the finite ``values``.

    Quantiles use numpy's default (linear) method. Repeated quantiles (a value that fills more
    than one bin) are merged, so a constant feature gets two bins and a feature with few
    distinct values gets fewer than ``n_bins``. ``-inf``/``+inf`` close the ends.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    flat = np.asarray(values, dtype=np.float64).ravel()
    finite = flat[np.isfinite(flat)]
    if finite.size == 0:
        raise ValueError("cannot freeze bin edges: no finite values")
    interior = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    return np.concatenate([[-np.inf], interior, [np.inf]])


def value_bin_edges(values: np.ndarray, n_bins: int = 10) -> np.ndarray | None:
    """A value histogram for integer values: one bin per distinct value, and one for every gap.

    Edges sit half-way to the next integer (``v - 0.5``, ``v + 0.5``), so each value seen in the
    reference has a bin of its own and an unseen value (a sample rate of 8000 or 48000 where the
    reference only saw 16000) lands in a bin beside it, never in the same one: quantile edges
    would put 16000 and 48000 together in ``[16000, inf)``. ``None`` when the finite values are
    not all integers or take more than ``n_bins`` distinct values (quantile bins suit them better).
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    finite = flat[np.isfinite(flat)]
    if finite.size == 0 or not np.array_equal(finite, np.round(finite)):
        return None
    if np.abs(finite).max() >= 2.0**52:  # beyond that, v ± 0.5 is not a float64 of its own
        return None
    distinct = np.unique(finite)
    if distinct.size > n_bins:
        return None
    interior = np.unique(np.concatenate([distinct - 0.5, distinct + 0.5]))  # neighbours share an edge
    return np.concatenate([[-np.inf], interior, [np.inf]])


def categorical_edges(n_categories: int) -> np.ndarray:
    """Edges for integer categories ``0 .. n-1``: one bin per category, at the half-integers."""
    if n_categories < 1:
        raise ValueError(f"n_categories must be at least 1, got {n_categories}")
    return np.concatenate([[-np.inf], np.arange(n_categories - 1, dtype=np.float64) + 0.5, [np.inf]])


def check_edges(edges: np.ndarray) -> np.ndarray:
    """``edges`` as float64 after checking the invariants (``ValueError`` otherwise)."""
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2:
        raise ValueError(f"bin edges need at least two values, got shape {edges.shape}")
    if edges[0] != -np.inf or edges[-1] != np.inf:
        raise ValueError("bin edges must start at -inf and end at +inf")
    interior = edges[1:-1]
    if not np.all(np.isfinite(interior)) or np.any(np.diff(edges) <= 0):
        raise ValueError("interior bin edges must be finite and strictly increasing")
    return edges


def count_in_bins(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """How many of ``values`` fall in each bin (int64, ``len(edges) - 1`` long).

    One ``searchsorted`` over the interior edges and one ``bincount``; the caller drops NaN first
    (a NaN would land in the last bin).
    """
    index = np.searchsorted(edges[1:-1], np.asarray(values, dtype=np.float64).ravel(), side="right")
    return np.bincount(index, minlength=len(edges) - 1).astype(np.int64, copy=False)
