"""Sharing a TFLite model's repeated constant vectors: smaller, and the same model to LiteRT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter.exporters.tflite_compact import share_constant_vectors

pytestmark = pytest.mark.integration

CHANNELS = 24


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-channel int8 conv net from TFLiteConverter: six layers of the same width repeat their zero points."""
    import tensorflow as tf

    keras = tf.keras
    layers = [keras.Input((16, 16, 3), batch_size=1)]
    model = keras.Sequential(
        [*layers, *[keras.layers.Conv2D(CHANNELS, 3, padding="same", activation="relu") for _ in range(6)]]
    )
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: (
        [rng.random((1, 16, 16, 3), dtype=np.float32)] for _ in range(8)
    )
    path = tmp_path_factory.mktemp("compact") / "model.tflite"
    path.write_bytes(converter.convert())
    return path


def _outputs(path: Path, sample: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample)
    interpreter.invoke()
    return np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


def _zero_point_vectors(path: Path) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(str(path)).get_tensor_details()
    return [
        d["quantization_parameters"]["zero_points"]
        for d in details
        if d["quantization_parameters"]["zero_points"].size > 1
    ]


def test_shared_vectors_shrink_the_model_and_change_no_output(int8_model: Path, tmp_path: Path) -> None:
    compact = tmp_path / "model.tflite"
    compact.write_bytes(int8_model.read_bytes())
    per_channel = _zero_point_vectors(int8_model)
    assert len(per_channel) >= 6, "the fixture should have per-channel weights"

    saved = share_constant_vectors(compact)

    # Each layer's weight and bias zero points (CHANNELS int64 each) are now written once.
    assert saved >= (len(per_channel) - 1) * CHANNELS * 8
    assert compact.stat().st_size == int8_model.stat().st_size - saved
    sample = np.random.default_rng(1).random((1, 16, 16, 3), dtype=np.float32)
    np.testing.assert_array_equal(_outputs(compact, sample), _outputs(int8_model, sample))
    # The quantization parameters read back unchanged.
    for before, after in zip(per_channel, _zero_point_vectors(compact), strict=True):
        np.testing.assert_array_equal(before, after)


def test_a_compact_model_is_left_as_it_is(int8_model: Path, tmp_path: Path) -> None:
    compact = tmp_path / "model.tflite"
    compact.write_bytes(int8_model.read_bytes())
    share_constant_vectors(compact)
    once = compact.read_bytes()

    assert share_constant_vectors(compact) == 0
    assert compact.read_bytes() == once


def test_a_file_that_is_not_a_flatbuffer_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"not a model" * 100)

    assert share_constant_vectors(path) == 0
    assert path.read_bytes() == b"not a model" * 100
