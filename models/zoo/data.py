"""Data for the reference models: scikit-learn's digits (it ships inside the package) and seeded images.

Nothing here downloads anything. The digits splits are deterministic and stratified: an evaluation
split of about 20%, and a calibration split of about 200 samples drawn from the training part, so
calibration (what a quantizer sees) never overlaps evaluation (what accuracy is measured on).
scikit-learn is imported inside the functions that need it, so importing this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

DIGITS_PIXEL_MAX = 16.0
"""load_digits pixels are integers in [0, 16]; the models take them scaled to [0, 1]."""

EVAL_FRACTION = 0.2
CALIB_SIZE = 200
SPLIT_SEED = 0


@dataclass(frozen=True)
class SplitIndices:
    """Row indices into the full data set: ``calib`` is a subset of ``train``; ``eval`` meets neither."""

    train: IntArray
    calib: IntArray
    eval: IntArray


@dataclass(frozen=True)
class LabelledImages:
    """Images in NCHW ``[N, 1, 8, 8]`` float32 in [0, 1], and their int64 class labels."""

    images: FloatArray
    labels: IntArray


def stratified_split(
    labels: npt.ArrayLike,
    *,
    eval_fraction: float = EVAL_FRACTION,
    calib_size: int = CALIB_SIZE,
    seed: int = SPLIT_SEED,
) -> SplitIndices:
    """Split row indices into train/calib/eval, each stratified by ``labels``, deterministic in ``seed``."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    rows = np.arange(y.size, dtype=np.int64)
    train, evaluation = train_test_split(rows, test_size=eval_fraction, stratify=y, random_state=seed)
    if not 0 < calib_size < train.size:
        raise ValueError(f"calib_size must be between 1 and {train.size - 1}, got {calib_size}")
    calib, _ = train_test_split(train, train_size=calib_size, stratify=y[train], random_state=seed)
    # Sorted indices make the splits easy to compare and print; the order carries no meaning.
    return SplitIndices(
        train=np.sort(train).astype(np.int64),
        calib=np.sort(calib).astype(np.int64),
        eval=np.sort(evaluation).astype(np.int64),
    )


def load_digits_nchw() -> LabelledImages:
    """All 1797 digits as NCHW float32 in [0, 1] (pixels / 16), with int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (np.asarray(digits.images, dtype=np.float32) / DIGITS_PIXEL_MAX)[:, None, :, :]
    return LabelledImages(images=images, labels=np.asarray(digits.target, dtype=np.int64))


def nchw_to_nhwc(images: FloatArray) -> FloatArray:
    """``[N, C, H, W]`` to ``[N, H, W, C]``, contiguous so it saves and feeds without surprises."""
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))


def random_images(count: int, shape: tuple[int, int, int], *, seed: int) -> FloatArray:
    """Seeded float32 NCHW images in [0, 1]: smooth blobs plus a little pixel noise.

    Smooth content has the spatial correlation real images have, so calibration ranges computed
    from it look more like real activations than white noise would.
    """
    channels, height, width = shape
    rng = np.random.default_rng(seed)
    coarse_h, coarse_w = max(1, height // 8), max(1, width // 8)
    coarse = rng.random((count, channels, coarse_h, coarse_w), dtype=np.float32)
    smooth = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)[:, :, :height, :width]
    smooth = np.pad(
        smooth, ((0, 0), (0, 0), (0, height - smooth.shape[2]), (0, width - smooth.shape[3])), mode="edge"
    )
    noise = rng.normal(0.0, 0.05, size=smooth.shape).astype(np.float32)
    return np.clip(smooth + noise, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class ReferenceData:
    """What a reference model is calibrated and evaluated on, shaped and typed as its input.

    ``eval_labels`` is None when the labels mean nothing (seeded random images); ``train`` and
    ``train_labels`` are set for the models trained here.
    """

    calib: FloatArray
    eval_inputs: FloatArray
    eval_labels: IntArray | None
    train: FloatArray | None = None
    train_labels: IntArray | None = None


def digits_reference_data(layout: str) -> ReferenceData:
    """The digits splits as ``"NCHW"`` ``[N, 1, 8, 8]`` or ``"NHWC"`` ``[N, 8, 8, 1]`` float32."""
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    digits = load_digits_nchw()
    split = stratified_split(digits.labels)
    images = digits.images if layout == "NCHW" else nchw_to_nhwc(digits.images)
    return ReferenceData(
        calib=np.ascontiguousarray(images[split.calib]),
        eval_inputs=np.ascontiguousarray(images[split.eval]),
        eval_labels=digits.labels[split.eval],
        train=np.ascontiguousarray(images[split.train]),
        train_labels=digits.labels[split.train],
    )


RANDOM_CALIB_SIZE = 32
RANDOM_EVAL_SIZE = 32
# Different seeds for the two sets, so that calibration and evaluation images never coincide.
RANDOM_CALIB_SEED = 1
RANDOM_EVAL_SEED = 2


def random_reference_data(shape: tuple[int, int, int]) -> ReferenceData:
    """Seeded random NCHW images for a model whose accuracy means nothing: no labels, no training set.

    Kept small (32 + 32 images; 3.5 MB each at 3x96x96) because they travel inside bundles and tests.
    """
    return ReferenceData(
        calib=random_images(RANDOM_CALIB_SIZE, shape, seed=RANDOM_CALIB_SEED),
        eval_inputs=random_images(RANDOM_EVAL_SIZE, shape, seed=RANDOM_EVAL_SEED),
        eval_labels=None,
    )
