"""The zoo's data splits, seeded images, scoring and registry: no training, no torch, no keras."""

from __future__ import annotations

import numpy as np
import pytest

from models.zoo import (
    REFERENCE_NAMES,
    UnknownReferenceError,
    accuracy,
    get_reference,
    predict,
    stratified_split,
)
from models.zoo import data as zoo_data


@pytest.fixture(scope="module")
def digits() -> zoo_data.LabelledImages:
    return zoo_data.load_digits_nchw()


def test_digits_are_scaled_nchw_float32(digits: zoo_data.LabelledImages) -> None:
    assert digits.images.dtype == np.float32
    assert digits.images.shape[1:] == (1, 8, 8)
    assert digits.labels.dtype == np.int64
    assert digits.images.shape[0] == digits.labels.shape[0]
    assert float(digits.images.min()) == 0.0
    assert float(digits.images.max()) == 1.0
    assert set(np.unique(digits.labels)) == set(range(10))


def test_split_is_deterministic(digits: zoo_data.LabelledImages) -> None:
    first = stratified_split(digits.labels)
    second = stratified_split(digits.labels)
    for part in ("train", "calib", "eval"):
        np.testing.assert_array_equal(getattr(first, part), getattr(second, part))


def test_split_depends_on_seed(digits: zoo_data.LabelledImages) -> None:
    default = stratified_split(digits.labels)
    other = stratified_split(digits.labels, seed=1)
    assert not np.array_equal(default.eval, other.eval)


def test_split_parts_are_disjoint_and_cover_the_data(digits: zoo_data.LabelledImages) -> None:
    split = stratified_split(digits.labels)
    total = digits.labels.size
    assert np.intersect1d(split.eval, split.train).size == 0
    assert np.intersect1d(split.eval, split.calib).size == 0
    assert np.setdiff1d(split.calib, split.train).size == 0, "calibration rows come from the training part"
    np.testing.assert_array_equal(np.union1d(split.train, split.eval), np.arange(total))
    assert split.calib.size == zoo_data.CALIB_SIZE
    assert split.eval.size == pytest.approx(total * zoo_data.EVAL_FRACTION, abs=1)


def test_split_indices_are_unique(digits: zoo_data.LabelledImages) -> None:
    split = stratified_split(digits.labels)
    for part in (split.train, split.calib, split.eval):
        assert np.unique(part).size == part.size


def test_split_is_stratified(digits: zoo_data.LabelledImages) -> None:
    split = stratified_split(digits.labels)
    overall = np.bincount(digits.labels, minlength=10) / digits.labels.size
    for part in (split.eval, split.calib):
        share = np.bincount(digits.labels[part], minlength=10) / part.size
        # Each class's share within one sample of its share in the whole set.
        assert np.all(np.abs(share - overall) <= 1.0 / part.size + 1e-9), share


def test_split_on_synthetic_labels() -> None:
    labels = np.repeat(np.arange(4), 100)
    split = stratified_split(labels, eval_fraction=0.25, calib_size=40, seed=3)
    assert split.eval.size == 100
    assert split.calib.size == 40
    np.testing.assert_array_equal(np.bincount(labels[split.eval]), [25, 25, 25, 25])
    np.testing.assert_array_equal(np.bincount(labels[split.calib]), [10, 10, 10, 10])


@pytest.mark.parametrize("calib_size", [0, 10_000])
def test_split_rejects_impossible_calibration_size(calib_size: int) -> None:
    with pytest.raises(ValueError, match="calib_size"):
        stratified_split(np.repeat(np.arange(4), 100), calib_size=calib_size)


def test_split_rejects_non_vector_labels() -> None:
    with pytest.raises(ValueError, match="1-D"):
        stratified_split(np.zeros((4, 4)))


def test_nhwc_data_is_the_nchw_data_transposed() -> None:
    nchw = zoo_data.digits_reference_data("NCHW")
    nhwc = zoo_data.digits_reference_data("NHWC")
    np.testing.assert_array_equal(nhwc.calib, nchw.calib.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(nhwc.eval_inputs, nchw.eval_inputs.transpose(0, 2, 3, 1))
    assert nchw.eval_labels is not None and nhwc.eval_labels is not None
    np.testing.assert_array_equal(nhwc.eval_labels, nchw.eval_labels)
    assert nhwc.calib.flags["C_CONTIGUOUS"]


def test_reference_data_rejects_unknown_layout() -> None:
    with pytest.raises(ValueError, match="NHWC"):
        zoo_data.digits_reference_data("CHW")


def test_random_images_are_seeded_and_in_range() -> None:
    first = zoo_data.random_images(3, (3, 20, 30), seed=7)
    again = zoo_data.random_images(3, (3, 20, 30), seed=7)
    other = zoo_data.random_images(3, (3, 20, 30), seed=8)
    assert first.shape == (3, 3, 20, 30)
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert float(first.min()) >= 0.0
    assert float(first.max()) <= 1.0
    assert float(first.std()) > 0.05, "images carry content, not a constant"


def test_random_reference_data_has_no_labels_and_distinct_sets() -> None:
    data = zoo_data.random_reference_data((3, 16, 16))
    assert data.eval_labels is None
    assert data.train is None
    calib_rows = {row.tobytes() for row in data.calib}
    assert not any(row.tobytes() in calib_rows for row in data.eval_inputs)


def test_accuracy_counts_argmax_matches() -> None:
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert accuracy(logits, np.array([1, 0, 0, 0])) == pytest.approx(0.75)
    assert accuracy(logits, np.array([0, 1, 0, 1])) == pytest.approx(0.0)


def test_accuracy_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="labels"):
        accuracy(np.zeros((3, 2)), np.zeros(4, dtype=np.int64))


def test_predict_batches_a_plain_callable() -> None:
    seen: list[int] = []

    def model(batch: np.ndarray) -> np.ndarray:
        seen.append(len(batch))
        return batch.reshape(len(batch), -1)[:, :2] * 2

    inputs = np.arange(10 * 4, dtype=np.float32).reshape(10, 4)
    out = predict(model, inputs, batch_size=4)
    assert seen == [4, 4, 2]
    np.testing.assert_array_equal(out, inputs[:, :2] * 2)


def test_predict_rejects_what_it_cannot_run() -> None:
    with pytest.raises(TypeError, match="callable"):
        predict(object(), np.zeros((1, 2), dtype=np.float32))


def test_registry_names_and_lookup() -> None:
    assert REFERENCE_NAMES == ("digits-cnn", "digits-keras", "mobilenet-mini")
    for name in REFERENCE_NAMES:
        assert get_reference(name).name == name


def test_unknown_reference_lists_the_known_ones() -> None:
    with pytest.raises(UnknownReferenceError) as caught:
        get_reference("resnet-9000")
    message = str(caught.value)
    assert "resnet-9000" in message
    for name in REFERENCE_NAMES:
        assert name in message


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_reference_data_matches_the_declared_input(name: str) -> None:
    ref = get_reference(name)
    data = ref.datasets()
    assert data.calib.shape[1:] == ref.input_shape
    assert data.eval_inputs.shape[1:] == ref.input_shape
    assert data.calib.dtype == np.float32
    assert (data.eval_labels is not None) == ref.labelled
    if data.eval_labels is not None:
        assert data.eval_labels.dtype == np.int64
        assert data.eval_labels.shape == (data.eval_inputs.shape[0],)
        assert int(data.eval_labels.max()) < ref.num_classes
    assert ref.source.count(":") == 1


def test_unlabelled_reference_refuses_to_score() -> None:
    ref = get_reference("mobilenet-mini")
    with pytest.raises(ValueError, match="accuracy means nothing"):
        ref.evaluate(lambda batch: np.zeros((len(batch), 10)))


def test_labelled_reference_scores_a_callable() -> None:
    ref = get_reference("digits-cnn")
    data = ref.datasets()
    assert data.eval_labels is not None
    labels = data.eval_labels

    def oracle(batch: np.ndarray) -> np.ndarray:
        # Looks each image up in the eval set and answers its label: a perfect "model".
        rows = [int(np.flatnonzero((data.eval_inputs == image).all(axis=(1, 2, 3)))[0]) for image in batch]
        return np.eye(ref.num_classes)[labels[rows]]

    assert ref.evaluate(oracle) == pytest.approx(1.0)
