"""Drift features of integer and scalar inputs: value histograms, and a scalar counted per sample."""

from __future__ import annotations

import numpy as np
import pytest

from models.stats import (
    ReferenceStats,
    build_reference_stats,
    count_window,
    extract_features,
    freeze_bin_edges,
    psi,
    request_samples,
    value_bin_edges,
)


def test_value_bins_give_each_value_seen_a_bin_and_each_gap_another() -> None:
    edges = value_bin_edges(np.array([16000, 16000, 8000]))
    assert edges is not None
    assert edges[1:-1].tolist() == [7999.5, 8000.5, 15999.5, 16000.5]
    bins = np.searchsorted(edges[1:-1], [4000, 8000, 11025, 16000, 48000], side="right")
    assert bins.tolist() == [0, 1, 2, 3, 4]  # below, 8000, between, 16000, above


def test_neighbouring_integers_share_an_edge() -> None:
    edges = value_bin_edges(np.array([0, 1, 2, 2]))
    assert edges is not None and edges[1:-1].tolist() == [-0.5, 0.5, 1.5, 2.5]


@pytest.mark.parametrize(
    "values",
    [np.array([0.5, 1.0]), np.arange(11), np.array([2.0**53]), np.array([np.nan, np.inf])],
    ids=["fractions", "too-many-values", "too-large", "no-finite-value"],
)
def test_value_bins_are_left_to_quantiles_otherwise(values: np.ndarray) -> None:
    assert value_bin_edges(values, n_bins=10) is None


def test_quantile_bins_would_hide_an_unseen_rate() -> None:
    """Why: a reference that saw only 16000 puts 16000 and 48000 in the same quantile bin."""
    rates = np.full(100, 16000.0)
    quantile = freeze_bin_edges(rates)[1:-1]
    assert np.searchsorted(quantile, 16000, side="right") == np.searchsorted(quantile, 48000, side="right")
    values = value_bin_edges(rates)
    assert values is not None
    assert np.searchsorted(values[1:-1], 16000, side="right") != np.searchsorted(
        values[1:-1], 48000, side="right"
    )


def test_integer_tensors_values_are_marked_discrete_and_float_ones_are_not() -> None:
    assert extract_features("sr", np.full(4, 16000, np.int64))["sr/value"].discrete
    ids = extract_features("ids", np.zeros((4, 3), np.int64))
    assert ids["ids/col[0]"].discrete and not ids["ids/token_share[0]"].discrete
    assert not extract_features("x", np.zeros((4, 3), np.float32))["x/col[0]"].discrete


def _reference(rates: np.ndarray, n: int = 60) -> ReferenceStats:
    rng = np.random.default_rng(0)
    chunk = rng.standard_normal((n, 6)).astype(np.float32)
    return build_reference_stats({"input": chunk, "sr": rates}, {}, batch_axes={"sr": None})


def test_a_scalar_gets_a_value_histogram_and_a_float_table_keeps_quantiles() -> None:
    reference = _reference(np.full(60, 16000, np.int64))
    sr = reference.features["sr/value"]
    assert sr.edges[1:-1].tolist() == [15999.5, 16000.5] and sr.counts.tolist() == [0, 60, 0]
    assert reference.features["input/col[0]"].n_bins == 10


def test_a_float_scalar_without_a_batch_axis_gets_value_bins_too() -> None:
    reference = _reference(np.full(60, 2.0, np.float32))
    assert reference.features["sr/value"].edges[1:-1].tolist() == [1.5, 2.5]


def test_a_scalar_is_counted_once_for_each_sample_of_the_call() -> None:
    reference = _reference(np.full(60, 16000, np.int64))
    chunk = np.zeros((5, 6), np.float32)
    window = count_window(reference, {"input": chunk, "sr": np.array(8000, np.int64)})
    assert window.samples == 5
    assert window.features["sr/value"].counts.tolist() == [5, 0, 0]
    assert window.features["sr/value"].moments.mean == 8000.0
    assert window.features["input/col[0]"].total == 5
    alone = count_window(reference, {"sr": np.array(16000, np.int64)})  # no batched tensor: one sample
    assert alone.samples == 1 and alone.features["sr/value"].counts.tolist() == [0, 1, 0]


def test_request_samples_reads_batch_axes_and_ignores_unknown_tensors() -> None:
    reference = _reference(np.full(60, 16000, np.int64))
    assert request_samples(reference, {"input": np.zeros((3, 6)), "sr": np.array(1)}) == 3
    assert request_samples(reference, {"sr": np.array(1)}) == 1
    assert request_samples(reference, {"other": np.zeros((3, 6))}) == 0


def test_an_unseen_sample_rate_drifts_and_the_seen_one_does_not() -> None:
    reference = _reference(np.full(60, 16000, np.int64))
    sr = reference.features["sr/value"]
    chunk = np.zeros((200, 6), np.float32)
    for rate, drifted in ((16000, False), (8000, True), (48000, True)):
        window = count_window(reference, {"input": chunk, "sr": np.array(rate, np.int64)})
        assert (psi(sr.counts, window.features["sr/value"].counts) > 0.25) is drifted, rate


def test_the_agent_counts_a_stateful_call_by_its_batch_axes_and_the_scalar_once_per_sample() -> None:
    from edge_agent.telemetry.drift import DriftAccumulator

    rng = np.random.default_rng(1)
    state = rng.standard_normal((60, 2, 3)).astype(np.float32)  # samples first, as the converter gives
    reference = build_reference_stats(
        {"state": state, "sr": np.full(60, 16000, np.int64)}, {}, batch_axes={"state": 1, "sr": None}
    )
    accumulator = DriftAccumulator("vad", "1", reference, window_samples=6, window_s=1e9)
    served = np.moveaxis(state[:3], 0, 1)  # [2, 3, 3]: three streams, batch on axis 1
    assert accumulator.add({"state": served, "sr": np.array(8000, np.int64)}, {}, now=1.0) == []
    assert accumulator.samples == 3
    (closed,) = accumulator.add({"state": served, "sr": np.array(8000, np.int64)}, {}, now=2.0)
    window = closed.window
    assert window.samples == 6
    assert window.features["sr/value"].counts.tolist() == [6, 0, 0]
    assert {counts.total for counts in window.features.values()} == {6}
