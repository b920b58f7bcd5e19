"""Drift statistics shared by the converter, the agent and the fleet. Pure numpy.

- The converter freezes bins from calibration data: ``build_reference_stats`` → ``ReferenceStats``
  (written as ``reference_stats.json`` with ``to_dict``).
- The agent counts live traffic into them: ``count_window(reference, inputs, outputs)`` →
  ``DriftWindow``; windows add up with ``merge``.
- The fleet compares: ``psi``, ``jensen_shannon``, ``wasserstein_normalised`` (or
  ``compare_feature`` for all three).
"""

from models.stats.binning import (
    categorical_edges,
    check_edges,
    count_in_bins,
    freeze_bin_edges,
    value_bin_edges,
)
from models.stats.distances import (
    PSI_EPS,
    FeatureDrift,
    bin_centres,
    compare_feature,
    jensen_shannon,
    psi,
    wasserstein_normalised,
)
from models.stats.features import (
    MAX_COLUMNS,
    N_PROJECTIONS,
    FeatureKind,
    FeatureValues,
    extract_features,
    guess_layout,
    looks_like_probabilities,
    projection_matrix,
)
from models.stats.moments import Moments
from models.stats.reference import (
    STATS_SCHEMA_VERSION,
    FeatureReference,
    ReferenceStats,
    TensorReference,
    build_reference_stats,
)
from models.stats.window import DriftWindow, WindowCounts, count_window, merge, request_samples

__all__ = [
    "MAX_COLUMNS",
    "N_PROJECTIONS",
    "PSI_EPS",
    "STATS_SCHEMA_VERSION",
    "DriftWindow",
    "FeatureDrift",
    "FeatureKind",
    "FeatureReference",
    "FeatureValues",
    "Moments",
    "ReferenceStats",
    "TensorReference",
    "WindowCounts",
    "bin_centres",
    "build_reference_stats",
    "categorical_edges",
    "check_edges",
    "compare_feature",
    "count_in_bins",
    "count_window",
    "extract_features",
    "freeze_bin_edges",
    "guess_layout",
    "jensen_shannon",
    "looks_like_probabilities",
    "merge",
    "projection_matrix",
    "psi",
    "request_samples",
    "value_bin_edges",
    "wasserstein_normalised",
]
