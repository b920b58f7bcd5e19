"""Turning a batch of tensors into a few scalar features per sample, identically everywhere.

The converter runs this on calibration data to freeze bins; the agent runs it on live traffic to
count into them. Features per tensor:

- images (rank 4, ``NCHW``/``NHWC``): the mean of each channel (at most ``MAX_COLUMNS``), and
  ``N_PROJECTIONS`` seeded random projections of the whole image (channel-first order);
- sequences (rank 3): the mean of each channel over the sequence axis (``NLC``; at most ``MAX_COLUMNS``);
- tables (rank 2): each column, at most ``MAX_COLUMNS`` of them, evenly spaced; integer inputs
  (token ids) also get a coarse token histogram: per sample, the share of its ids in each band of
  ``TOKEN_BANDS`` (id 0, 1-15, 16-255, ...);
- a tensor whose samples are not on axis 0 (a state [2, N, H]) is read along its batch axis, and
  one without a batch axis (a scalar) holds one value that every sample of the call shares
  (``TensorReference.batch_axis``), so it is counted once per sample, as the reference counted it;
- a vector (rank 1, or rank 2 with one column): the value;
- the values of an integer tensor (a scalar ``sr``, a column of ids) are marked ``discrete``; the
  reference gives them a value histogram (``binning.value_bin_edges``) when they take few values;
- classifier outputs (rank 2, several columns): the predicted class (argmax) and the top-1
  confidence (the largest softmax probability; the softmax is skipped for outputs that already
  are probabilities).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

FeatureKind = Literal["input", "output"]

MAX_COLUMNS = 16
N_PROJECTIONS = 4
_SMALL_CHANNELS = (1, 2, 3, 4)


@dataclass(frozen=True)
class FeatureValues:
    """One value per sample (float64); ``categories`` is set for a class index feature.

    ``discrete``: the values are an integer tensor's own values (ids, a sample rate), which the
    reference bins as a value histogram when they take few distinct values.
    """

    values: np.ndarray
    categories: int | None = None
    discrete: bool = False


def guess_layout(shape: Sequence[int]) -> str:
    """``NC`` for rank 2; rank 4: ``NCHW`` or ``NHWC`` when the channel axis is plain to see; else ``ANY``."""
    if len(shape) == 2:
        return "NC"
    if len(shape) == 4:
        channels_first = shape[1] in _SMALL_CHANNELS and shape[3] not in _SMALL_CHANNELS
        channels_last = shape[3] in _SMALL_CHANNELS and shape[1] not in _SMALL_CHANNELS
        if channels_first:
            return "NCHW"
        if channels_last:
            return "NHWC"
    return "ANY"


def looks_like_probabilities(array: np.ndarray, atol: float = 1e-3) -> bool:
    """Rows in [0, 1] that sum to 1 (within ``atol``): a softmax was applied already."""
    values = np.asarray(array, dtype=np.float64)
    if values.ndim != 2 or values.size == 0 or not np.all(np.isfinite(values)):
        return False
    in_range = bool(np.all((values >= -atol) & (values <= 1 + atol)))
    return in_range and bool(np.allclose(values.sum(axis=1), 1.0, atol=atol))


def is_classifier_output(shape: Sequence[int]) -> bool:
    """Rank 2 with more than one column: scores per class."""
    return len(shape) == 2 and shape[1] != 1


def extract_features(
    name: str,
    array: np.ndarray,
    layout: str = "ANY",
    *,
    kind: FeatureKind = "input",
    seed: int = 0,
    classifier: bool | None = None,
    probabilities: bool | None = None,
) -> dict[str, FeatureValues]:
    """The features of tensor ``name`` for each sample of ``array`` (the first axis is the batch).

    ``classifier`` (outputs only; ``None``: rank 2 with several columns) and ``probabilities``
    (``None``: detected from the values) are frozen in the reference so the agent extracts
    exactly what the converter did.
    """
    values = np.asarray(array)
    if values.ndim == 0:
        values = values.reshape(1)
    if kind == "output" and (is_classifier_output(values.shape) if classifier is None else classifier):
        return _classifier_features(name, values, probabilities)
    if layout == "ANY" and values.ndim == 4:
        layout = guess_layout(values.shape)
    if values.ndim == 4 and layout in ("NCHW", "NHWC"):
        return _image_features(name, values, layout, seed)
    if values.ndim == 3:
        channel_axis = 1 if layout == "NCL" else 2  # NLC unless stated otherwise
        reduce_axis = 2 if channel_axis == 1 else 1
        return _per_channel_means(name, values.mean(axis=reduce_axis, dtype=np.float64))
    integer = values.dtype.kind in "iub"
    if values.ndim == 2 and values.shape[1] > 1:
        if kind == "input" and values.dtype.kind in "iu":
            return {**_columns(name, values, integer), **_token_buckets(name, values)}
        return _columns(name, values, integer)
    if values.ndim <= 2:
        value = values.reshape(values.shape[0]).astype(np.float64)
        return {f"{name}/value": FeatureValues(value, discrete=integer)}
    flat = values.reshape(values.shape[0], -1)
    return {f"{name}/mean": FeatureValues(flat.mean(axis=1, dtype=np.float64))}


# Token id magnitudes: in BPE and WordPiece vocabularies an id roughly ranks its token's frequency,
# so the share of a sequence's tokens in each band (0 is usually padding) follows its vocabulary.
TOKEN_BANDS = (1, 2**4, 2**8, 2**10, 2**12, 2**14)


def _token_buckets(name: str, tokens: np.ndarray) -> dict[str, FeatureValues]:
    """Per sample, the share of its token ids in each band of ``TOKEN_BANDS`` (a coarse token histogram)."""
    bands = np.searchsorted(np.asarray(TOKEN_BANDS), tokens, side="right")  # 0 .. len(TOKEN_BANDS)
    length = tokens.shape[1]
    return {
        f"{name}/token_share[{band}]": FeatureValues((bands == band).sum(axis=1, dtype=np.float64) / length)
        for band in range(len(TOKEN_BANDS) + 1)
    }


def _classifier_features(
    name: str, scores: np.ndarray, probabilities: bool | None
) -> dict[str, FeatureValues]:
    scores = np.asarray(scores, dtype=np.float64).reshape(scores.shape[0], -1)
    n_classes = scores.shape[1]
    is_probability = looks_like_probabilities(scores) if probabilities is None else probabilities
    if is_probability:
        confidence = scores.max(axis=1)
    else:
        # max softmax = 1 / sum(exp(x - max)): no overflow, and no full softmax needed.
        shifted = scores - scores.max(axis=1, keepdims=True)
        confidence = 1.0 / np.exp(shifted).sum(axis=1)
    return {
        f"{name}/class": FeatureValues(scores.argmax(axis=1).astype(np.float64), categories=n_classes),
        f"{name}/top1_confidence": FeatureValues(confidence),
    }


def _image_features(name: str, images: np.ndarray, layout: str, seed: int) -> dict[str, FeatureValues]:
    channel_first = images if layout == "NCHW" else np.moveaxis(images, 3, 1)
    features = _per_channel_means(name, channel_first.mean(axis=(2, 3), dtype=np.float64))
    flat = channel_first.reshape(channel_first.shape[0], -1).astype(np.float64, copy=False)
    projected = flat @ projection_matrix(name, flat.shape[1], seed)
    for j in range(projected.shape[1]):
        features[f"{name}/projection[{j}]"] = FeatureValues(np.ascontiguousarray(projected[:, j]))
    return features


def _per_channel_means(name: str, means: np.ndarray) -> dict[str, FeatureValues]:
    channels = _spread_indices(means.shape[1])
    return {f"{name}/channel_mean[{c}]": FeatureValues(np.ascontiguousarray(means[:, c])) for c in channels}


def _columns(name: str, table: np.ndarray, discrete: bool = False) -> dict[str, FeatureValues]:
    return {
        f"{name}/col[{c}]": FeatureValues(table[:, c].astype(np.float64), discrete=discrete)
        for c in _spread_indices(table.shape[1])
    }


def _spread_indices(n: int) -> list[int]:
    """All of ``0..n-1`` when ``n <= MAX_COLUMNS``, else ``MAX_COLUMNS`` evenly spaced ones."""
    if n <= MAX_COLUMNS:
        return list(range(n))
    return sorted({round(float(i)) for i in np.linspace(0, n - 1, MAX_COLUMNS)})


@lru_cache(maxsize=32)
def projection_matrix(name: str, dim: int, seed: int, n_projections: int = N_PROJECTIONS) -> np.ndarray:
    """A ``(dim, n_projections)`` Gaussian matrix scaled by ``1/sqrt(dim)``, seeded by ``seed`` and the name.

    The generator is ``numpy.random.default_rng([seed, crc32(name)])``, so the converter and
    the agent derive the same matrix without shipping it. Read-only: it is cached and shared.
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    matrix = rng.standard_normal((dim, n_projections)) / np.sqrt(dim)
    matrix.setflags(write=False)
    return matrix
