"""The drift statistics: bins, counting, merging, moments, distances and (de)serialisation."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import jensenshannon as scipy_jensenshannon
from scipy.stats import wasserstein_distance

from models.stats import (
    MAX_COLUMNS,
    N_PROJECTIONS,
    DriftWindow,
    FeatureReference,
    Moments,
    ReferenceStats,
    WindowCounts,
    bin_centres,
    build_reference_stats,
    categorical_edges,
    compare_feature,
    count_in_bins,
    count_window,
    extract_features,
    freeze_bin_edges,
    guess_layout,
    jensen_shannon,
    merge,
    psi,
    wasserstein_normalised,
)

finite_floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, width=64)
float_arrays = arrays(np.float64, st.integers(min_value=0, max_value=60), elements=finite_floats)
nonempty_float_arrays = arrays(np.float64, st.integers(min_value=1, max_value=60), elements=finite_floats)
# Values with NaN and infinities too: what a broken sensor sends.
wild_floats = st.one_of(finite_floats, st.sampled_from([math.nan, math.inf, -math.inf]))
wild_arrays = arrays(np.float64, st.integers(min_value=0, max_value=40), elements=wild_floats)
histograms = st.integers(min_value=1, max_value=12).flatmap(
    lambda k: st.tuples(
        st.lists(st.integers(min_value=0, max_value=1000), min_size=k, max_size=k).filter(
            lambda c: sum(c) > 0
        ),
        st.lists(st.integers(min_value=0, max_value=1000), min_size=k, max_size=k).filter(
            lambda c: sum(c) > 0
        ),
    )
)

REFERENCE_EDGES = freeze_bin_edges(np.random.default_rng(0).normal(size=500), n_bins=10)


def _moments_close(a: Moments, b: Moments) -> None:
    assert a.count == b.count
    if a.count == 0:
        return
    scale = max(1.0, abs(a.mean), abs(b.mean))
    assert a.mean == pytest.approx(b.mean, rel=1e-9, abs=1e-9 * scale)
    assert a.variance == pytest.approx(b.variance, rel=1e-7, abs=1e-7 * scale * scale)
    assert (a.minimum, a.maximum) == (b.minimum, b.maximum)


# --- edges and counting ---------------------------------------------------------------------


@settings(deadline=None)  # a loaded CI machine must not fail a correct test
@given(reference=nonempty_float_arrays, others=wild_arrays, n_bins=st.integers(min_value=1, max_value=20))
def test_edges_are_increasing_and_cover_every_value(
    reference: np.ndarray, others: np.ndarray, n_bins: int
) -> None:
    edges = freeze_bin_edges(reference, n_bins)
    assert edges[0] == -np.inf and edges[-1] == np.inf
    assert np.all(np.diff(edges) > 0)
    assert len(edges) - 1 <= n_bins
    finite = others[~np.isnan(others)]
    counts = count_in_bins(edges, finite)
    assert counts.sum() == finite.size
    assert counts.shape == (len(edges) - 1,)


def test_quantile_edges_split_the_reference_evenly() -> None:
    values = np.random.default_rng(1).uniform(size=10_000)
    edges = freeze_bin_edges(values, n_bins=10)
    counts = count_in_bins(edges, values)
    assert counts.size == 10
    assert np.all(np.abs(counts - 1000) <= 1)


def test_constant_and_few_valued_features_get_fewer_bins() -> None:
    assert freeze_bin_edges(np.full(50, 3.0), n_bins=10).tolist() == [-np.inf, 3.0, np.inf]
    edges = freeze_bin_edges(np.repeat([0.0, 1.0], 50), n_bins=10)
    assert count_in_bins(edges, np.array([0.0, 0.0, 1.0])).sum() == 3
    assert len(edges) - 1 < 10


def test_bins_are_closed_on_the_left() -> None:
    edges = np.array([-np.inf, 0.0, 1.0, np.inf])
    assert count_in_bins(edges, np.array([-5.0, 0.0, 0.5, 1.0, 7.0])).tolist() == [1, 2, 2]


def test_freezing_needs_finite_values() -> None:
    with pytest.raises(ValueError, match="no finite values"):
        freeze_bin_edges(np.array([np.nan, np.inf]))
    with pytest.raises(ValueError, match="n_bins"):
        freeze_bin_edges(np.arange(5.0), n_bins=0)


def test_categorical_edges_give_one_bin_per_class() -> None:
    edges = categorical_edges(4)
    assert count_in_bins(edges, np.array([0, 1, 1, 3, 3, 3])).tolist() == [1, 2, 0, 3]


# --- moments and merging --------------------------------------------------------------------


@settings(deadline=None)
@given(values=float_arrays)
def test_moments_match_numpy(values: np.ndarray) -> None:
    moments = Moments.of(values)
    assert moments.count == values.size
    if values.size:
        assert moments.mean == pytest.approx(np.mean(values), rel=1e-9, abs=1e-6)
        assert moments.variance == pytest.approx(np.var(values), rel=1e-7, abs=1e-6)
        assert (moments.minimum, moments.maximum) == (values.min(), values.max())


@settings(deadline=None)
@given(a=wild_arrays, b=wild_arrays)
def test_merge_equals_counting_the_concatenation(a: np.ndarray, b: np.ndarray) -> None:
    merged = merge(WindowCounts.of(REFERENCE_EDGES, a), WindowCounts.of(REFERENCE_EDGES, b))
    whole = WindowCounts.of(REFERENCE_EDGES, np.concatenate([a, b]))
    assert merged.counts.tolist() == whole.counts.tolist()
    assert merged.nonfinite == whole.nonfinite == int((~np.isfinite(np.concatenate([a, b]))).sum())
    _moments_close(merged.moments, whole.moments)


@settings(deadline=None)
@given(a=float_arrays, b=float_arrays, c=float_arrays)
def test_merge_is_commutative_and_associative(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    wa, wb, wc = (WindowCounts.of(REFERENCE_EDGES, v) for v in (a, b, c))
    ab, ba = merge(wa, wb), merge(wb, wa)
    assert ab.counts.tolist() == ba.counts.tolist()
    _moments_close(ab.moments, ba.moments)
    left, right = merge(merge(wa, wb), wc), merge(wa, merge(wb, wc))
    assert left.counts.tolist() == right.counts.tolist()
    _moments_close(left.moments, right.moments)


def test_merging_windows_of_different_bins_is_refused() -> None:
    with pytest.raises(ValueError, match="bins"):
        merge(WindowCounts.empty(3), WindowCounts.empty(4))


# --- distances ------------------------------------------------------------------------------


def _independent_psi(ref_counts: list[int], cur_counts: list[int], eps: float = 1e-4) -> float:
    ref, cur = np.asarray(ref_counts, float), np.asarray(cur_counts, float)
    k = ref.size
    p = (ref / ref.sum() + eps) / (1 + k * eps)
    q = (cur / cur.sum() + eps) / (1 + k * eps)
    return float(sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q, strict=True)))


@settings(deadline=None)
@given(pair=histograms)
def test_psi_matches_its_documented_formula(pair: tuple[list[int], list[int]]) -> None:
    ref, cur = pair
    assert psi(np.array(ref), np.array(cur)) == pytest.approx(_independent_psi(ref, cur), abs=1e-6)


@settings(deadline=None)
@given(pair=histograms, factor=st.integers(min_value=1, max_value=50))
def test_psi_and_js_of_identical_distributions_are_zero(
    pair: tuple[list[int], list[int]], factor: int
) -> None:
    ref = np.array(pair[0])
    assert psi(ref, ref * factor) == pytest.approx(0.0, abs=1e-12)
    assert jensen_shannon(ref, ref * factor) == pytest.approx(0.0, abs=1e-6)
    assert wasserstein_normalised(np.arange(ref.size + 1.0), ref, ref * factor) == pytest.approx(
        0.0, abs=1e-9
    )


def test_psi_grows_with_the_shift() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(size=20_000)
    edges = freeze_bin_edges(reference, 10)
    ref_counts = count_in_bins(edges, reference)
    current = rng.normal(size=20_000)
    scores = [psi(ref_counts, count_in_bins(edges, current + shift)) for shift in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert scores[0] < 0.01
    assert all(a < b for a, b in itertools.pairwise(scores))
    assert scores[2] > 0.1  # half a standard deviation is a real shift


@settings(deadline=None)
@given(pair=histograms)
def test_js_is_bounded_symmetric_and_equals_scipy(pair: tuple[list[int], list[int]]) -> None:
    ref, cur = np.array(pair[0]), np.array(pair[1])
    value = jensen_shannon(ref, cur)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(jensen_shannon(cur, ref), abs=1e-12)
    expected = scipy_jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2)
    assert value == pytest.approx(expected, abs=1e-7)


def test_js_of_disjoint_histograms_is_one() -> None:
    assert jensen_shannon(np.array([5, 0]), np.array([0, 7])) == pytest.approx(1.0)


@settings(deadline=None)
@given(pair=histograms)
def test_wasserstein_equals_scipy_over_the_bin_centres(pair: tuple[list[int], list[int]]) -> None:
    ref, cur = np.array(pair[0], float), np.array(pair[1], float)
    k = ref.size
    edges = np.concatenate([[-np.inf], np.cumsum(np.linspace(0.5, 2.0, max(k - 1, 0))), [np.inf]])
    centres = bin_centres(edges)
    value = wasserstein_normalised(edges, ref, cur)
    if k == 1:
        assert value == 0.0
        return
    p = ref / ref.sum()
    spread = math.sqrt(float(np.sum(p * (centres - np.sum(p * centres)) ** 2)))
    if spread == 0:
        spread = (centres[-1] - centres[0]) / (k - 1)
    expected = wasserstein_distance(centres, centres, ref, cur) / spread
    assert value == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_wasserstein_reads_in_reference_standard_deviations() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=50_000)
    edges = freeze_bin_edges(reference, 20)
    ref_counts = count_in_bins(edges, reference)
    shifted = count_in_bins(edges, rng.normal(size=50_000) + 1.0)
    assert 0.7 < wasserstein_normalised(edges, ref_counts, shifted) < 1.3


def test_bin_centres_clip_the_outer_bins() -> None:
    centres = bin_centres(np.array([-np.inf, 0.0, 1.0, 3.0, np.inf]))
    assert centres.tolist() == [-0.5, 0.5, 2.0, 4.0]
    assert bin_centres(categorical_edges(3)).tolist() == [0.0, 1.0, 2.0]


def test_distances_refuse_empty_or_mismatched_histograms() -> None:
    with pytest.raises(ValueError, match="empty"):
        psi(np.array([1, 2]), np.array([0, 0]))
    with pytest.raises(ValueError, match="length"):
        jensen_shannon(np.array([1, 2]), np.array([1, 2, 3]))


# --- features -------------------------------------------------------------------------------


def test_layout_guess() -> None:
    assert guess_layout([-1, 3, 224, 224]) == "NCHW"
    assert guess_layout([1, 96, 96, 3]) == "NHWC"
    assert guess_layout([-1, 10]) == "NC"
    assert guess_layout([1, 3, 3, 3]) == "ANY"


def test_image_features_do_not_depend_on_the_layout() -> None:
    images = np.random.default_rng(4).random((6, 3, 8, 8), dtype=np.float32)
    nchw = extract_features("image", images, "NCHW", seed=7)
    nhwc = extract_features("image", images.transpose(0, 2, 3, 1), "NHWC", seed=7)
    assert sorted(nchw) == sorted(nhwc)
    assert len(nchw) == 3 + N_PROJECTIONS
    for name in nchw:
        np.testing.assert_allclose(nchw[name].values, nhwc[name].values, rtol=1e-10)
    np.testing.assert_allclose(
        nchw["image/channel_mean[1]"].values, images[:, 1].mean(axis=(1, 2)), rtol=1e-6
    )


def test_projections_are_seeded() -> None:
    images = np.random.default_rng(5).random((4, 1, 8, 8))
    a = extract_features("x", images, "NCHW", seed=1)["x/projection[0]"].values
    b = extract_features("x", images, "NCHW", seed=1)["x/projection[0]"].values
    c = extract_features("x", images, "NCHW", seed=2)["x/projection[0]"].values
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_tables_keep_a_capped_number_of_columns() -> None:
    table = np.arange(5 * 100, dtype=np.float64).reshape(5, 100)
    features = extract_features("t", table, "NC")
    assert len(features) == MAX_COLUMNS
    assert "t/col[0]" in features and "t/col[99]" in features
    np.testing.assert_array_equal(features["t/col[99]"].values, table[:, 99])


def test_classifier_outputs_give_class_and_confidence() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 5.0]])
    features = extract_features("logits", logits, kind="output")
    assert features["logits/class"].values.tolist() == [0.0, 2.0]
    assert features["logits/class"].categories == 3
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(features["logits/top1_confidence"].values, softmax.max(axis=1))
    probabilities = extract_features("p", softmax, kind="output")
    np.testing.assert_allclose(probabilities["p/top1_confidence"].values, softmax.max(axis=1))


# --- reference and windows ------------------------------------------------------------------


def _reference_data(n: int = 300, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, 8, 8), dtype=np.float32)
    logits = rng.normal(size=(n, 10)).astype(np.float32)
    return {"input": images}, {"logits": logits}


def test_reference_has_the_expected_features() -> None:
    inputs, outputs = _reference_data()
    reference = build_reference_stats(inputs, outputs, n_bins=8, seed=3)
    names = set(reference.features)
    assert {"input/channel_mean[0]", "logits/class", "logits/top1_confidence"} <= names
    assert {f"input/projection[{j}]" for j in range(N_PROJECTIONS)} <= names
    assert reference.features["logits/class"].categorical
    assert reference.features["logits/class"].n_bins == 10
    assert reference.tensor("logits").classifier and not reference.tensor("logits").probabilities
    assert reference.tensor("input").layout == "NCHW"
    for feature in reference.features.values():
        assert feature.counts.sum() == 300
        assert feature.n_bins <= max(8, 10)


def test_counting_the_reference_data_reproduces_the_reference() -> None:
    inputs, outputs = _reference_data()
    reference = build_reference_stats(inputs, outputs, seed=1)
    window = count_window(reference, inputs, outputs)
    assert window.samples == 300
    for name, feature in reference.features.items():
        assert window.features[name].counts.tolist() == feature.counts.tolist()
        assert psi(feature.counts, window.features[name].counts) == pytest.approx(0.0, abs=1e-12)


def test_windows_merge_like_one_big_window() -> None:
    inputs, outputs = _reference_data()
    reference = build_reference_stats(inputs, outputs)
    live_in, live_out = _reference_data(n=90, seed=9)
    halves = [
        count_window(
            reference, {"input": live_in["input"][s]}, {"logits": live_out["logits"][s]}, start=t, end=t + 1
        )
        for s, t in ((slice(0, 40), 100.0), (slice(40, 90), 50.0))
    ]
    merged = merge(halves[0], halves[1])
    whole = count_window(reference, live_in, live_out)
    assert merged.samples == whole.samples == 90
    assert (merged.start, merged.end) == (50.0, 101.0)
    for name in reference.features:
        assert merged.features[name].counts.tolist() == whole.features[name].counts.tolist()
        _moments_close(merged.features[name].moments, whole.features[name].moments)


def test_windows_of_different_references_do_not_mix() -> None:
    inputs, outputs = _reference_data()
    a = count_window(build_reference_stats(inputs, outputs, seed=0), inputs, outputs)
    b = count_window(build_reference_stats(inputs, outputs, seed=1), inputs, outputs)
    with pytest.raises(ValueError, match="different references"):
        merge(a, b)


def test_drift_shows_on_shifted_traffic() -> None:
    inputs, outputs = _reference_data()
    reference = build_reference_stats(inputs, outputs)
    live_in, live_out = _reference_data(n=300, seed=11)
    calm = count_window(reference, live_in, live_out)
    shifted = count_window(reference, {"input": live_in["input"] + 0.3}, live_out)
    feature = reference.features["input/channel_mean[0]"]
    calm_drift = compare_feature(feature, calm.features[feature.name])
    shifted_drift = compare_feature(feature, shifted.features[feature.name])
    assert calm_drift.psi < 0.1 < 0.25 < shifted_drift.psi
    assert shifted_drift.jensen_shannon > calm_drift.jensen_shannon
    assert shifted_drift.wasserstein > calm_drift.wasserstein
    assert shifted_drift.count == 300


def test_reference_round_trips_through_json() -> None:
    inputs, outputs = _reference_data()
    reference = build_reference_stats(inputs, outputs, n_bins=6, seed=4)
    text = json.dumps(reference.to_dict(), allow_nan=False)
    restored = ReferenceStats.from_dict(json.loads(text))
    assert restored.to_dict() == reference.to_dict()
    assert restored.fingerprint() == reference.fingerprint()
    window = count_window(restored, inputs, outputs)
    assert window.reference == reference.fingerprint()


@settings(deadline=None)
@given(values=wild_arrays)
def test_window_round_trips_through_json(values: np.ndarray) -> None:
    counts = WindowCounts.of(REFERENCE_EDGES, values)
    window = DriftWindow(reference="abc", features={"f": counts}, samples=values.size, start=1.5)
    restored = DriftWindow.from_dict(json.loads(json.dumps(window.to_dict(), allow_nan=False)))
    assert restored.features["f"].counts.tolist() == counts.counts.tolist()
    assert restored.features["f"].nonfinite == counts.nonfinite
    _moments_close(restored.features["f"].moments, counts.moments)
    assert (restored.samples, restored.start, restored.end) == (values.size, 1.5, None)


def test_corrupt_reference_is_refused() -> None:
    inputs, outputs = _reference_data()
    data = build_reference_stats(inputs, outputs).to_dict()
    data["features"][0]["edges"] = [3.0, 1.0]
    with pytest.raises(ValueError, match="increasing"):
        ReferenceStats.from_dict(data)
    data["schema_version"] = 99
    with pytest.raises(ValueError, match="schema"):
        ReferenceStats.from_dict(data)
    with pytest.raises(ValueError, match="counts"):
        FeatureReference.from_dict(
            {**build_reference_stats(inputs, outputs).to_dict()["features"][0], "counts": [1]}
        )
