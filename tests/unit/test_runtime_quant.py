"""The runtime layer's pure logic: quantization, feed checks, signatures, options and fallback plans."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge_agent.runtimes import (
    InferenceFailed,
    InvalidInput,
    ModelLoadFailed,
    RuntimeConfigError,
    RuntimeOptions,
    RuntimeUnavailable,
    SignatureMismatch,
    dequantize,
    open_session,
    quantize,
    resolve_runtime_options,
)
from edge_agent.runtimes.feeds import prepare_feeds
from edge_agent.runtimes.litert_backend import EDGETPU_MISSING, plan_delegates
from edge_agent.runtimes.onnxruntime_backend import plan_providers
from edge_agent.runtimes.openvino_backend import compile_config, plan_devices
from edge_agent.runtimes.session import BaseSession
from edge_agent.runtimes.signature import reconcile_signature, shapes_compatible
from hw_profiles.schema import HardwareProfile, ModelFormat, RuntimeName
from models.bundle.manifest import FileEntry, Manifest, QuantParams, RuntimeSpec, TensorSpec

INT8 = QuantParams(scale=0.05, zero_point=-3, dtype="int8")
UINT8 = QuantParams(scale=1 / 255, zero_point=0, dtype="uint8")


# --- quantization ---------------------------------------------------------------------------


@settings(deadline=None)  # a loaded CI machine must not fail a correct test
@given(
    params=st.sampled_from([INT8, UINT8, QuantParams(scale=0.01, zero_point=7, dtype="int16")]),
    values=arrays(np.float32, 20, elements=st.floats(-2.0, 2.0, width=32)),
)
def test_quantize_follows_the_affine_formula(params: QuantParams, values: np.ndarray) -> None:
    q = quantize(values, params)
    info = np.iinfo(np.dtype(params.dtype))
    assert q.dtype == np.dtype(params.dtype)
    expected = np.clip(
        np.round(values.astype(np.float64) / params.scale) + params.zero_point, info.min, info.max
    )
    # Only exact .5 ties may round differently (away from zero here, to even in numpy).
    assert np.all(np.abs(q.astype(np.int64) - expected) <= 1)
    inside = (expected > info.min) & (expected < info.max)
    back = dequantize(q, params)
    assert back.dtype == np.float32
    assert np.all(np.abs(back[inside] - values[inside]) <= params.scale / 2 + 1e-6)


def test_quantize_rounds_half_away_from_zero_and_clips() -> None:
    params = QuantParams(scale=1.0, zero_point=0, dtype="int8")
    assert quantize(np.array([0.5, 1.5, -0.5, -2.5, 1000.0, -1000.0]), params).tolist() == [
        1,
        2,
        -1,
        -3,
        127,
        -128,
    ]


def test_dequantize_is_scale_times_offset() -> None:
    assert dequantize(np.array([-3, 17], dtype=np.int8), INT8).tolist() == pytest.approx([0.0, 1.0])


# --- feeds ----------------------------------------------------------------------------------

FLOAT_IN = TensorSpec(name="x", dtype="float32", shape=[-1, 3])
QUANT_IN = TensorSpec(name="q", dtype="int8", shape=[1, 4], quantization=INT8)
TOKENS_IN = TensorSpec(name="ids", dtype="int32", shape=[-1, 5])


def test_float_feeds_pass_and_are_cast() -> None:
    feeds, batch = prepare_feeds([FLOAT_IN], {"x": np.zeros((2, 3), np.float64)}, raw=False)
    assert feeds["x"].dtype == np.float32 and batch == 2


def test_quantized_inputs_take_float_and_raw_ints() -> None:
    feeds, _ = prepare_feeds([QUANT_IN], {"q": np.array([[0.0, 1.0, -1.0, 0.05]], np.float32)}, raw=False)
    assert feeds["q"].tolist() == [[-3, 17, -23, -2]]
    raw, _ = prepare_feeds([QUANT_IN], {"q": np.array([[1, 2, 3, 4]], np.int8)}, raw=True)
    assert raw["q"].tolist() == [[1, 2, 3, 4]]
    with pytest.raises(InvalidInput, match="takes float32"):
        prepare_feeds([QUANT_IN], {"q": np.ones((1, 4), np.int8)}, raw=False)
    with pytest.raises(InvalidInput, match="NaN"):
        prepare_feeds([QUANT_IN], {"q": np.full((1, 4), np.nan, np.float32)}, raw=False)


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({"x": np.zeros((2, 3), np.float32), "y": np.zeros(1)}, r"unknown input\(s\) \['y'\]"),
        ({}, r"missing input\(s\) \['x'\]"),
        ({"x": np.zeros((2, 3), np.int64)}, "expected float32, got int64"),
        ({"x": np.zeros((2, 3, 1), np.float32)}, r"expected rank 2 \[\?, 3\], got rank 3"),
        ({"x": np.zeros((2, 4), np.float32)}, r"dimension 1 must be 3"),
        ({"x": np.zeros((0, 3), np.float32)}, "empty"),
    ],
)
def test_bad_feeds_name_the_input_and_what_was_expected(feeds: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        prepare_feeds([FLOAT_IN], feeds, raw=False)


def test_integer_inputs_accept_integers_that_fit() -> None:
    feeds, _ = prepare_feeds([TOKENS_IN], {"ids": np.arange(5, dtype=np.int64).reshape(1, 5)}, raw=False)
    assert feeds["ids"].dtype == np.int32
    with pytest.raises(InvalidInput, match="expected int32"):
        prepare_feeds([TOKENS_IN], {"ids": np.full((1, 5), 2**40, np.int64)}, raw=False)


def test_static_batch_of_one_accepts_any_batch_when_looping_but_needs_agreement() -> None:
    specs = [QUANT_IN, TensorSpec(name="f", dtype="float32", shape=[1, 2])]
    feeds = {"q": np.zeros((3, 4), np.float32), "f": np.zeros((3, 2), np.float32)}
    _, batch = prepare_feeds(specs, feeds, raw=False, batch_loop=True)
    assert batch == 3
    with pytest.raises(InvalidInput, match="different batch sizes"):
        prepare_feeds(specs, {**feeds, "f": np.zeros((2, 2), np.float32)}, raw=False, batch_loop=True)
    with pytest.raises(InvalidInput, match="dimension 0 must be 4"):
        prepare_feeds(
            [TensorSpec(name="s", dtype="float32", shape=[4, 2])], {"s": np.zeros((3, 2))}, raw=False
        )


# --- the shared session pipeline, with a fake backend ----------------------------------------


class _Doubler(BaseSession):
    """Doubles its int8 input; records the batch sizes it was given."""

    runtime = RuntimeName.LITERT

    def __init__(self, batch: int) -> None:
        spec = TensorSpec(name="q", dtype="int8", shape=[batch, 4], quantization=INT8)
        out = TensorSpec(name="y", dtype="int8", shape=[batch, 4], quantization=INT8)
        super().__init__(
            model_path=Path("fake.tflite"),
            inputs=[spec],
            outputs=[out],
            provider="fake",
            fallbacks=[],
            threads=1,
        )
        self.seen: list[int] = []

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.seen.append(feeds["q"].shape[0])
        if feeds["q"][0, 0] == 127:
            raise ValueError("kernel exploded")
        q = feeds["q"].astype(np.int32)
        return {"y": np.clip(2 * (q - INT8.zero_point) + INT8.zero_point, -128, 127).astype(np.int8)}


def test_session_loops_a_static_batch_of_one_and_dequantizes() -> None:
    session = _Doubler(batch=1)
    x = np.array([[0.0, 0.1, -0.2, 1.0]] * 3, np.float32)
    out = session.infer({"q": x})
    assert session.seen == [1, 1, 1]
    np.testing.assert_allclose(out["y"], 2 * x, atol=INT8.scale)
    raw = session.infer({"q": quantize(x, INT8)}, raw=True)
    assert raw["y"].dtype == np.int8 and raw["y"].shape == (3, 4)


def test_dynamic_batch_runs_in_one_call() -> None:
    session = _Doubler(batch=-1)
    session.infer({"q": np.zeros((5, 4), np.float32)})
    assert session.seen == [5]


def test_runtime_errors_become_inference_failed_and_closed_sessions_refuse() -> None:
    with _Doubler(batch=-1) as session, pytest.raises(InferenceFailed, match="kernel exploded"):
        session.infer({"q": np.full((1, 4), 127, np.int8)}, raw=True)
    assert session.closed
    with pytest.raises(InferenceFailed, match="closed"):
        session.infer({"q": np.zeros((1, 4), np.float32)})


# --- signature checks -----------------------------------------------------------------------


def test_shapes_compatible() -> None:
    assert shapes_compatible([-1, 3], [4, 3])
    assert shapes_compatible([1, 3], [-1, 3])  # a static batch of 1 loops
    assert not shapes_compatible([2, 3], [-1, 3])
    assert not shapes_compatible([-1, 3], [-1, 3, 1])


def test_manifest_supplies_layout_and_missing_quantization() -> None:
    model_in = [TensorSpec(name="x", dtype="uint8", shape=[-1, 8, 8, 1])]
    model_out = [TensorSpec(name="y", dtype="float32", shape=[-1, 10])]
    manifest_in = [
        TensorSpec(name="x", dtype="uint8", shape=[-1, 8, 8, 1], layout="NHWC", quantization=UINT8)
    ]
    inputs, outputs = reconcile_signature(model_in, model_out, (manifest_in, model_out), model="m")
    assert inputs[0].layout == "NHWC" and inputs[0].quantization == UINT8
    assert outputs == model_out


def test_every_signature_difference_is_listed() -> None:
    model_in = [TensorSpec(name="x", dtype="int8", shape=[1, 4], quantization=INT8)]
    model_out = [TensorSpec(name="y", dtype="float32", shape=[1, 2])]
    want_in = [
        TensorSpec(
            name="x", dtype="int8", shape=[-1, 5], quantization=UINT8.model_copy(update={"dtype": "int8"})
        )
    ]
    want_out = [TensorSpec(name="z", dtype="float32", shape=[1, 2])]
    with pytest.raises(SignatureMismatch) as caught:
        reconcile_signature(model_in, model_out, (want_in, want_out), model="m.tflite")
    text = str(caught.value)
    assert "shape [1, 4] in the model but [-1, 5]" in text
    assert "quantized as int8 scale=0.05" in text
    assert "['z'] are in the manifest but not in the model" in text
    assert "output(s) ['y'] that the manifest does not list" in text
    assert "edgefleet convert" in text


# --- options and fallback plans -------------------------------------------------------------


def _manifest(fmt: ModelFormat, runtime: RuntimeName, options: dict[str, Any]) -> Manifest:
    spec = TensorSpec(name="x", dtype="float32", shape=[-1, 2])
    return Manifest(
        name="m",
        version="1.0.0",
        profile="p",
        format=fmt,
        precision="fp32",
        runtime=RuntimeSpec(name=runtime, options=options),
        model_file="model.bin",
        inputs=[spec],
        outputs=[spec.model_copy(update={"name": "y"})],
        files={"model.bin": FileEntry(sha256="0" * 64, size=1)},
    )


def _profile() -> HardwareProfile:
    return HardwareProfile.model_validate(
        {
            "name": "box",
            "description": "test",
            "architecture": "x86_64",
            "cpu": {"model": "x", "cores": 4},
            "memory_mb": 1024,
            "runtimes": [
                {"name": "onnxruntime", "format": "onnx", "execution_providers": ["cuda", "cpu"]},
                {
                    "name": "openvino",
                    "format": "openvino",
                    "devices": ["GPU", "CPU"],
                    "options": {"NUM_STREAMS": 1},
                },
            ],
            "formats": ["onnx", "openvino"],
            "precisions": ["fp32"],
            "threads": 3,
            "max_model_mb": 10,
        }
    )


def test_manifest_options_are_parsed_and_the_profile_wins() -> None:
    manifest = _manifest(
        ModelFormat.OPENVINO,
        RuntimeName.OPENVINO,
        {"threads": 2, "devices": ["NPU"], "PERFORMANCE_HINT": "LATENCY"},
    )
    assert resolve_runtime_options(manifest) == RuntimeOptions(
        threads=2, devices=("NPU",), extra={"PERFORMANCE_HINT": "LATENCY"}
    )
    merged = resolve_runtime_options(manifest, _profile())
    assert merged.threads == 3 and merged.devices == ("GPU", "CPU")
    assert merged.extra == {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}


def test_option_errors_are_clear() -> None:
    with pytest.raises(RuntimeConfigError, match="threads must be a positive integer"):
        RuntimeOptions.from_mapping({"threads": 0})
    with pytest.raises(RuntimeConfigError, match="list of names"):
        RuntimeOptions.from_mapping({"devices": [1, 2]})
    with pytest.raises(RuntimeConfigError, match="no runtime for tflite"):
        resolve_runtime_options(_manifest(ModelFormat.TFLITE, RuntimeName.LITERT, {}), _profile())
    with pytest.raises(RuntimeConfigError, match="cannot run onnx models"):
        resolve_runtime_options(_manifest(ModelFormat.ONNX, RuntimeName.OPENVINO, {}))


ALL_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_missing_providers_are_dropped_with_a_note() -> None:
    chosen, notes = plan_providers(
        ["tensorrt", "CUDAExecutionProvider"], ["CPUExecutionProvider"], ALL_PROVIDERS
    )
    assert chosen == ["CPUExecutionProvider"]
    assert len(notes) == 3 and "TensorrtExecutionProvider was requested" in notes[0]
    assert "onnxruntime-gpu" in notes[1] and notes[2] == "running on CPUExecutionProvider"
    chosen, notes = plan_providers(["cuda"], ["CUDAExecutionProvider", "CPUExecutionProvider"], ALL_PROVIDERS)
    assert (chosen, notes) == (["CUDAExecutionProvider", "CPUExecutionProvider"], [])
    assert plan_providers([], ["CPUExecutionProvider"], ALL_PROVIDERS) == (["CPUExecutionProvider"], [])
    with pytest.raises(RuntimeConfigError, match="unknown ONNX Runtime execution provider 'CUDAProvider'"):
        plan_providers(["CUDAProvider"], ["CPUExecutionProvider"], ALL_PROVIDERS)


def test_openvino_devices_fall_back_to_cpu_with_f32() -> None:
    candidates, notes = plan_devices(["NPU", "GPU", "CPU"], ["CPU", "GPU.0"])
    assert candidates == ["GPU", "CPU"]
    assert len(notes) == 1 and "NPU was requested" in notes[0]
    assert plan_devices(["CPU"], ["CPU"]) == (["CPU"], [])
    candidates, notes = plan_devices(["npu"], ["CPU"])
    assert candidates == ["CPU"] and "NPU was requested but is not present" in notes[0]
    assert plan_devices(["AUTO"], ["CPU"])[0] == ["AUTO", "CPU"]
    assert compile_config("CPU", 2, {}) == {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}
    assert compile_config("GPU", 2, {"PERFORMANCE_HINT": "LATENCY", "lower": 1}) == {
        "PERFORMANCE_HINT": "LATENCY"
    }
    assert (
        compile_config("CPU", None, {"INFERENCE_PRECISION_HINT": "bf16"})["INFERENCE_PRECISION_HINT"]
        == "bf16"
    )


def test_edgetpu_delegate_plan() -> None:
    loaded: list[tuple[str, Any]] = []

    def load(library: str, options: Any) -> str:
        loaded.append((library, options))
        return "delegate"

    absent = plan_delegates(["edgetpu"], load, {}, library_loads=lambda _: False)
    assert (absent.provider, absent.delegates, absent.notes) == ("xnnpack", [], [EDGETPU_MISSING])
    present = plan_delegates(
        ["edgetpu", "xnnpack"], load, {"edgetpu_device": "usb"}, library_loads=lambda _: True
    )
    assert present.provider == "edgetpu" and present.delegates == ["delegate"]
    assert loaded[0][1] == {"device": "usb"}
    assert plan_delegates(["builtin"], load, {}).use_xnnpack is False
    with pytest.raises(RuntimeConfigError, match="unknown LiteRT delegate 'gpu2'"):
        plan_delegates(["gpu2"], load, {})


# --- opening ----------------------------------------------------------------------------------


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadFailed, match="does not exist"):
        open_session(tmp_path / "nope.onnx", ModelFormat.ONNX)


@pytest.mark.parametrize(
    ("fmt", "module", "extra"),
    [
        (ModelFormat.ONNX, "onnxruntime", "edgefleet[onnx]"),
        (ModelFormat.TFLITE, "ai_edge_litert", "edgefleet[tflite]"),
        (ModelFormat.OPENVINO, "openvino", "edgefleet[openvino]"),
    ],
)
def test_missing_runtime_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: ModelFormat, module: str, extra: str
) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    if module == "ai_edge_litert":
        monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(RuntimeUnavailable) as caught:
        open_session(model, fmt)
    assert caught.value.hint == f"pip install '{extra}'"
