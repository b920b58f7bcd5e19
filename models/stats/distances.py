"""Distances between a reference histogram and a current one, over the same frozen bins.

All three take raw counts (any non-negative numbers, e.g. ``FeatureReference.counts`` and
``WindowCounts.counts``), normalise them to probabilities, and raise ``ValueError`` when either
histogram is empty or the lengths differ: guard with a minimum sample count before calling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.stats.reference import FeatureReference
from models.stats.window import WindowCounts

PSI_EPS = 1e-4


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float = PSI_EPS) -> float:
    """Population stability index, natural log, with additive smoothing.

    With ``k`` bins, ``p_i = (r_i / Σr + eps) / (1 + k·eps)`` and ``q_i = (c_i / Σc + eps) / (1 + k·eps)``
    (every bin gets ``eps`` of mass, then each histogram is renormalised to sum to 1), and
    ``PSI = Σ_i (q_i − p_i) · ln(q_i / p_i)``. It is 0 for identical histograms, always finite,
    and grows as the current histogram moves away. Usual reading: < 0.1 stable, 0.1–0.25 a
    moderate shift, > 0.25 a major one.
    """
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    p, q = _probabilities(ref_counts, cur_counts)
    k = p.size
    p = (p + eps) / (1.0 + k * eps)
    q = (q + eps) / (1.0 + k * eps)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Jensen-Shannon *distance*, base 2, in [0, 1]: ``sqrt(JSD)``.

    ``p``, ``q`` are the normalised histograms, ``m = (p + q) / 2``, and
    ``JSD = ½ Σ p_i log2(p_i / m_i) + ½ Σ q_i log2(q_i / m_i)`` with ``0 · log 0 = 0`` (no
    smoothing). The same value as ``scipy.spatial.distance.jensenshannon(p, q, base=2)``; 0 for
    identical histograms, 1 for histograms with no bin in common, and symmetric.
    """
    p, q = _probabilities(ref_counts, cur_counts)
    m = (p + q) / 2.0
    divergence = 0.5 * _kl_base2(p, m) + 0.5 * _kl_base2(q, m)
    return math.sqrt(min(max(divergence, 0.0), 1.0))


def bin_centres(edges: np.ndarray) -> np.ndarray:
    """A finite centre per bin: interior bins their midpoint; each outer (infinite) bin is given the
    width of its finite neighbour, so its centre lies half that width beyond the last finite edge.
    With a single interior edge ``e`` (two bins) the centres are ``e − ½`` and ``e + ½``; the
    normalisation in ``wasserstein_normalised`` makes that unit irrelevant.
    """
    edges = np.asarray(edges, dtype=np.float64)
    interior = edges[1:-1]
    k = edges.size - 1
    if k == 1:
        return np.zeros(1)
    low_width = interior[1] - interior[0] if interior.size >= 2 else 1.0
    high_width = interior[-1] - interior[-2] if interior.size >= 2 else 1.0
    middles = (interior[:-1] + interior[1:]) / 2.0
    return np.concatenate([[interior[0] - low_width / 2.0], middles, [interior[-1] + high_width / 2.0]])


def wasserstein_normalised(edges: np.ndarray, ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Earth mover's distance (W1) between the histograms placed at ``bin_centres(edges)``, divided
    by the reference's spread.

    ``W1 = Σ_{i<k−1} |P_i − Q_i| · (c_{i+1} − c_i)`` with ``P``, ``Q`` the cumulative normalised
    histograms and ``c`` the centres. The spread is the reference's standard deviation over the
    centres, ``sqrt(Σ p_i (c_i − Σ p_j c_j)²)``, or the mean spacing of the centres
    ``(c_{k−1} − c_0) / (k − 1)`` when the reference sits in one bin. A value of 1 means the
    distribution moved by about one reference standard deviation. One bin: 0.
    """
    p, q = _probabilities(ref_counts, cur_counts)
    centres = bin_centres(edges)
    if centres.size != p.size:
        raise ValueError(f"{len(edges)} edges make {centres.size} bins, but the histograms have {p.size}")
    if p.size == 1:
        return 0.0
    w1 = float(np.sum(np.abs(np.cumsum(p) - np.cumsum(q))[:-1] * np.diff(centres)))
    mean = float(np.sum(p * centres))
    spread = math.sqrt(float(np.sum(p * (centres - mean) ** 2)))
    if spread <= 1e-12 * max(1.0, abs(mean)):
        spread = float(centres[-1] - centres[0]) / (centres.size - 1)
    return w1 / spread


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's current window against its reference."""

    feature: str
    count: int
    psi: float
    jensen_shannon: float
    wasserstein: float


def compare_feature(reference: FeatureReference, current: WindowCounts) -> FeatureDrift:
    """The three distances of ``current`` from ``reference`` (``ValueError`` when ``current`` is empty)."""
    return FeatureDrift(
        feature=reference.name,
        count=current.total,
        psi=psi(reference.counts, current.counts),
        jensen_shannon=jensen_shannon(reference.counts, current.counts),
        wasserstein=wasserstein_normalised(reference.edges, reference.counts, current.counts),
    )


def _probabilities(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref_counts, dtype=np.float64).ravel()
    cur = np.asarray(cur_counts, dtype=np.float64).ravel()
    if ref.shape != cur.shape:
        raise ValueError(f"histograms differ in length: {ref.size} and {cur.size} bins")
    if ref.size == 0:
        raise ValueError("histograms have no bins")
    if np.any(ref < 0) or np.any(cur < 0) or not (np.all(np.isfinite(ref)) and np.all(np.isfinite(cur))):
        raise ValueError("counts must be finite and non-negative")
    ref_total, cur_total = ref.sum(), cur.sum()
    if ref_total <= 0 or cur_total <= 0:
        raise ValueError("a histogram is empty: wait for a minimum number of samples before comparing")
    return ref / ref_total, cur / cur_total


def _kl_base2(p: np.ndarray, m: np.ndarray) -> float:
    mask = p > 0  # where p > 0, m >= p / 2 > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / m[mask])))
