"""Input specs and data checks: every bad input gets an error naming the step, the array and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter.data import check_dataset, read_npz
from converter.errors import STEPS, ConversionError
from converter.signature import guess_layout, parse_input_spec, spec_from_array, with_batch
from models.bundle.manifest import TensorSpec

SPEC = TensorSpec(name="input", dtype="float32", shape=[-1, 1, 8, 8], layout="NCHW")


def images(count: int, dtype: str = "float32") -> np.ndarray:
    return np.zeros((count, 1, 8, 8), dtype=dtype)


@pytest.mark.parametrize(
    ("text", "shape", "dtype", "layout"),
    [
        ("input:1x1x8x8:float32", [1, 1, 8, 8], "float32", "ANY"),
        ("input:Nx3x224x224:float32:nchw", [-1, 3, 224, 224], "float32", "NCHW"),
        ("ids:?x128:int64", [-1, 128], "int64", "ANY"),
        ("x:-1x4:FLOAT32:NC", [-1, 4], "float32", "NC"),
    ],
)
def test_input_specs_parse(text: str, shape: list[int], dtype: str, layout: str) -> None:
    spec = parse_input_spec(text)
    assert (spec.shape, spec.dtype, spec.layout) == (shape, dtype, layout)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("input", "name:shape:dtype"),
        ("input:1x1x8x8", "name:shape:dtype"),
        ("input:1xAx8:float32", "not like"),
        ("input:1x0x8:float32", "positive"),
        ("input:1x8:float99", "dtype 'float99'"),
        ("input:1x8:float32:WXYZ", "layout 'WXYZ'"),
    ],
)
def test_bad_input_specs_say_how_to_write_one(text: str, why: str) -> None:
    with pytest.raises(ConversionError) as caught:
        parse_input_spec(text)
    assert why in caught.value.message
    assert caught.value.step == "load"
    assert "float32" in caught.value.hint


def test_layouts_are_guessed_cautiously() -> None:
    assert guess_layout([-1, 3, 224, 224]) == "NCHW"
    assert guess_layout([-1, 224, 224, 3]) == "NHWC"
    assert guess_layout([-1, 3, 8, 3]) == "ANY"
    assert guess_layout([-1, 16]) == "NC"


def test_a_spec_from_data_has_a_dynamic_batch() -> None:
    spec = spec_from_array("input", images(5))
    assert spec.shape == [-1, 1, 8, 8] and spec.dtype == "float32" and spec.layout == "NCHW"
    assert with_batch(spec, 1).shape == [1, 1, 8, 8]
    with pytest.raises(ConversionError, match=r"complex64"):
        spec_from_array("input", np.zeros((2, 3), np.complex64))


def test_a_good_dataset_passes_with_its_labels() -> None:
    data = check_dataset(
        {"input": images(7), "labels": np.arange(7)}, [SPEC], role="evaluation", source="eval.npz"
    )
    assert data.size == 7
    assert data.labels is not None and data.labels.tolist() == list(range(7))
    assert [len(b["input"]) for b in data.batches(3)] == [3, 3, 1]
    assert data.take(2).size == 2


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"x": images(4)}, "no array named 'input'"),
        ({"input": images(4, "float64")}, "is float64, but the model takes float32"),
        ({"input": np.zeros((4, 64), np.float32)}, "2-D"),
        ({"input": np.zeros((4, 1, 8, 9), np.float32)}, "axis 3 should be 8"),
        ({"input": images(0)}, "is empty"),
        ({"input": images(4), "labels": np.zeros(3, np.int64)}, "'labels' must be 4 integer"),
        ({"input": images(4), "labels": np.zeros(4, np.float32)}, "'labels' must be 4 integer"),
    ],
)
def test_bad_datasets_name_the_array_and_the_fix(arrays: dict[str, np.ndarray], needle: str) -> None:
    with pytest.raises(ConversionError) as caught:
        check_dataset(arrays, [SPEC], role="calibration", source="calib.npz")
    error = caught.value
    assert needle in error.message
    assert "calib.npz" in error.message
    assert error.step == "data" and error.hint
    assert str(error).startswith("[data] ")


def test_inputs_with_different_sample_counts_are_refused() -> None:
    specs = [SPEC, TensorSpec(name="mask", dtype="float32", shape=[-1, 4])]
    with pytest.raises(ConversionError, match="different sample counts"):
        check_dataset(
            {"input": images(4), "mask": np.zeros((5, 4), np.float32)},
            specs,
            role="calibration",
            source="c.npz",
        )


def test_missing_and_unreadable_npz_files(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="does not exist") as missing:
        read_npz(tmp_path / "nope.npz", "calibration")
    assert missing.value.step == "data"
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(ConversionError, match=r"not a readable \.npz") as unreadable:
        read_npz(broken, "evaluation")
    assert "numpy.savez" in unreadable.value.hint
    good = tmp_path / "good.npz"
    np.savez(good, input=images(2))
    assert list(read_npz(good, "calibration")) == ["input"]


def test_errors_know_their_steps() -> None:
    with pytest.raises(ValueError, match="unknown conversion step"):
        ConversionError("x", step="cooking", hint="y")
    error = ConversionError("boom", step="export", hint="do this", format="tflite", profile="raspberry-pi-5")
    assert error.headline() == "[export tflite, raspberry-pi-5] boom"
    assert error.to_dict()["hint"] == "do this"
    assert set(STEPS) >= {"load", "data", "plan", "export", "quantize", "validate", "benchmark", "package"}
