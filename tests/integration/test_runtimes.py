"""The runtime backends against real runtimes, on tiny models built here from torch and Keras.

Each backend must give the source model's answer (within the precision of the artifact), handle
a dynamic batch and a static batch of 1, serve int8-I/O models in float by default and in ints
with ``raw=True``, report what it fell back from, and refuse bad input with a clear error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.runtimes import (
    InvalidInput,
    ModelLoadFailed,
    RuntimeSession,
    SignatureMismatch,
    open_bundle_session,
    open_session,
    quantize,
)
from edge_agent.runtimes.litert_backend import EDGETPU_MISSING, edgetpu_library, library_loads
from edge_agent.runtimes.openvino_backend import OpenVINOSession
from hw_profiles.schema import HardwareProfile, ModelFormat
from models.bundle.manifest import FileEntry, Manifest, RuntimeSpec, TensorSpec

pytestmark = pytest.mark.integration

BATCH = 6
FP32_ATOL = 1e-4


# --- fixtures: tiny models, built once per module --------------------------------------------


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime-models")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).random((BATCH, 1, 8, 8), dtype=np.float32)


@pytest.fixture(scope="module")
def torch_case(models_dir: Path, images: np.ndarray) -> dict[str, Any]:
    """A tiny torch CNN exported to ONNX (dynamic and static batch) and OpenVINO IR, with its outputs."""
    import openvino as ov
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 10),
    ).eval()
    sample = torch.from_numpy(images)
    names: dict[str, Any] = {"input_names": ["input"], "output_names": ["logits"], "dynamo": False}
    dynamic = models_dir / "cnn-dynamic.onnx"
    static = models_dir / "cnn-static.onnx"
    torch.onnx.export(
        model, (sample,), dynamic, dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}}, **names
    )
    torch.onnx.export(model, (sample[:1],), static, **names)
    ir = models_dir / "cnn.xml"
    ov.save_model(ov.convert_model(str(dynamic)), str(ir), compress_to_fp16=False)
    with torch.no_grad():
        expected = model(sample).numpy()
    return {"onnx": dynamic, "onnx_static": static, "openvino": ir, "expected": expected}


@pytest.fixture(scope="module")
def keras_case(models_dir: Path, images: np.ndarray) -> dict[str, Any]:
    """A tiny Keras CNN (NHWC) converted to TFLite: float with a dynamic batch, float with a static
    batch of 1, and full-integer int8 (int8 I/O, as the Edge TPU wants) from a representative set."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    nhwc = images.transpose(0, 2, 3, 1).copy()

    def build(batch: int | None) -> Any:
        tf.keras.utils.set_random_seed(0)
        inputs = tf.keras.Input(shape=(8, 8, 1), batch_size=batch, name="input")
        hidden = tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        outputs = tf.keras.layers.Dense(10)(tf.keras.layers.Flatten()(hidden))
        return tf.keras.Model(inputs, outputs)

    def convert(model: Any, path: Path, int8: bool = False) -> Path:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([nhwc[i : i + 1]] for i in range(BATCH))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        path.write_bytes(converter.convert())
        return path

    dynamic_model = build(None)
    static_model = build(1)
    static_model.set_weights(dynamic_model.get_weights())
    return {
        "float": convert(dynamic_model, models_dir / "cnn-float.tflite"),
        "static": convert(static_model, models_dir / "cnn-static.tflite"),
        "int8": convert(dynamic_model, models_dir / "cnn-int8.tflite", int8=True),
        "images": nhwc,
        "expected": dynamic_model(nhwc).numpy(),
    }


@pytest.fixture
def onnx_session(torch_case: dict[str, Any]) -> Iterator[RuntimeSession]:
    with open_session(torch_case["onnx"], ModelFormat.ONNX, threads=1) as session:
        yield session


# --- same answers as the source model ------------------------------------------------------


def test_onnxruntime_matches_torch_with_a_dynamic_batch(
    onnx_session: RuntimeSession, torch_case: dict[str, Any], images: np.ndarray
) -> None:
    assert onnx_session.provider == "CPUExecutionProvider"
    assert onnx_session.inputs == [
        TensorSpec(name="input", dtype="float32", shape=[-1, 1, 8, 8], layout="NCHW")
    ]
    assert [spec.name for spec in onnx_session.outputs] == ["logits"]
    for batch in (BATCH, 1, 3):
        logits = onnx_session.infer({"input": images[:batch]})["logits"]
        np.testing.assert_allclose(logits, torch_case["expected"][:batch], atol=FP32_ATOL)


def test_onnxruntime_loops_over_a_static_batch_of_one(torch_case: dict[str, Any], images: np.ndarray) -> None:
    with open_session(torch_case["onnx_static"], ModelFormat.ONNX) as session:
        assert session.inputs[0].shape == [1, 1, 8, 8]
        logits = session.infer({"input": images})["logits"]
    assert logits.shape == (BATCH, 10)
    np.testing.assert_allclose(logits, torch_case["expected"], atol=FP32_ATOL)


def test_openvino_matches_torch_in_f32(torch_case: dict[str, Any], images: np.ndarray) -> None:
    with open_session(torch_case["openvino"], ModelFormat.OPENVINO, threads=1) as session:
        assert isinstance(session, OpenVINOSession)
        assert session.provider == "CPU"
        assert str(session.execution_property("INFERENCE_PRECISION_HINT")) in ("f32", "<Type: 'float32'>")
        assert session.execution_property("INFERENCE_NUM_THREADS") == 1
        assert session.inputs[0].shape == [-1, 1, 8, 8]
        for batch in (BATCH, 1, 4):
            logits = session.infer({"input": images[:batch]})["logits"]
            np.testing.assert_allclose(logits, torch_case["expected"][:batch], atol=FP32_ATOL)


def test_litert_matches_keras_and_resizes_the_batch(keras_case: dict[str, Any]) -> None:
    with open_session(keras_case["float"], ModelFormat.TFLITE, threads=1) as session:
        assert session.provider == "xnnpack"
        assert session.inputs == [
            TensorSpec(name="input", dtype="float32", shape=[-1, 8, 8, 1], layout="NHWC")
        ]
        output = session.outputs[0].name
        for batch in (BATCH, 1, BATCH, 2):
            result = session.infer({"input": keras_case["images"][:batch]})[output]
            np.testing.assert_allclose(result, keras_case["expected"][:batch], atol=FP32_ATOL)


def test_litert_loops_over_a_static_batch_of_one(keras_case: dict[str, Any]) -> None:
    with open_session(keras_case["static"], ModelFormat.TFLITE) as session:
        assert session.inputs[0].shape == [1, 8, 8, 1]
        result = session.infer({"input": keras_case["images"]})[session.outputs[0].name]
    np.testing.assert_allclose(result, keras_case["expected"], atol=FP32_ATOL)


def test_int8_io_model_takes_float_by_default_and_ints_when_raw(keras_case: dict[str, Any]) -> None:
    with open_session(keras_case["int8"], ModelFormat.TFLITE, threads=1) as session:
        spec_in, spec_out = session.inputs[0], session.outputs[0]
        assert spec_in.dtype == "int8" and spec_in.quantization is not None
        assert spec_out.dtype == "int8" and spec_out.quantization is not None
        assert spec_in.client_dtype == "float32"
        images = keras_case["images"]
        floats = session.infer({"input": images})[spec_out.name]
        assert floats.dtype == np.float32
        # Int8 error: a few quantization steps of the output, since the representative set covers the inputs.
        np.testing.assert_allclose(floats, keras_case["expected"], atol=8 * spec_out.quantization.scale)
        raw = session.infer({"input": quantize(images, spec_in.quantization)}, raw=True)[spec_out.name]
        assert raw.dtype == np.int8
        expected_floats = spec_out.quantization.scale * (
            raw.astype(np.float32) - spec_out.quantization.zero_point
        )
        np.testing.assert_allclose(floats, expected_floats, rtol=1e-6)
        with pytest.raises(InvalidInput, match="raw=True"):
            session.infer({"input": images}, raw=True)


# --- what was asked for and is missing ----------------------------------------------------


def test_missing_execution_providers_are_reported(torch_case: dict[str, Any]) -> None:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    with open_session(torch_case["onnx"], ModelFormat.ONNX, providers=wanted) as session:
        missing = [p for p in wanted[:2] if p not in available]
        for provider in missing:
            assert any(note.startswith(f"{provider} was requested") for note in session.fallbacks)
        expected = next((p for p in wanted if p in available), "CPUExecutionProvider")
        assert session.provider == expected


def test_edgetpu_fallback_note(keras_case: dict[str, Any]) -> None:
    with open_session(keras_case["float"], ModelFormat.TFLITE, delegates=["edgetpu"]) as session:
        if library_loads(edgetpu_library()):  # a machine with the Edge TPU runtime installed
            assert session.provider == "edgetpu" or any("failed to start" in n for n in session.fallbacks)
        else:
            assert session.provider == "xnnpack"
            assert session.fallbacks == [EDGETPU_MISSING]
        result = session.infer({"input": keras_case["images"]})[session.outputs[0].name]
    np.testing.assert_allclose(result, keras_case["expected"], atol=FP32_ATOL)


def test_missing_openvino_devices_fall_back_to_cpu(torch_case: dict[str, Any]) -> None:
    from edge_agent.runtimes.openvino_backend import shared_core

    available = shared_core().available_devices  # a throw-away Core's plugin could outlive its thread
    with open_session(torch_case["openvino"], ModelFormat.OPENVINO, devices=["NPU", "GPU", "CPU"]) as session:
        for device in ("NPU", "GPU"):
            present = any(d == device or d.startswith(device + ".") for d in available)
            assert present != any(note.startswith(f"OpenVINO device {device} ") for note in session.fallbacks)
        if not any(d.startswith(("NPU", "GPU")) for d in available):
            assert session.provider == "CPU"
            assert session.fallbacks[-1] == "running on CPU"


# --- errors -----------------------------------------------------------------------------


@pytest.fixture(params=["onnx", "openvino", "tflite"])
def any_session(
    request: pytest.FixtureRequest, torch_case: dict[str, Any], keras_case: dict[str, Any]
) -> Iterator[RuntimeSession]:
    path = keras_case["float"] if request.param == "tflite" else torch_case[request.param]
    with open_session(path, ModelFormat(request.param)) as session:
        yield session


def test_bad_requests_are_refused_clearly(any_session: RuntimeSession) -> None:
    spec = any_session.inputs[0]
    good_shape = tuple(4 if d == -1 else d for d in spec.shape)
    with pytest.raises(InvalidInput, match=r"unknown input\(s\) \['nope'\]"):
        any_session.infer({"input": np.zeros(good_shape, np.float32), "nope": np.zeros(1)})
    with pytest.raises(InvalidInput, match=r"missing input\(s\) \['input'\]"):
        any_session.infer({})
    with pytest.raises(InvalidInput, match="'input': expected float32, got int64"):
        any_session.infer({"input": np.zeros(good_shape, np.int64)})
    with pytest.raises(InvalidInput, match="'input': expected rank 4"):
        any_session.infer({"input": np.zeros((4, 64), np.float32)})
    wrong = (4, 8, 8, 8) if spec.layout == "NCHW" else (4, 8, 8, 2)
    with pytest.raises(InvalidInput, match="'input': expected shape"):
        any_session.infer({"input": np.zeros(wrong, np.float32)})
    assert any_session.infer({"input": np.zeros(good_shape, np.float32)})  # still usable


@pytest.mark.parametrize(("fmt", "name"), [("onnx", "m.onnx"), ("tflite", "m.tflite"), ("openvino", "m.xml")])
def test_corrupt_model_files_fail_to_load_clearly(tmp_path: Path, fmt: str, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"this is not a model")
    path.with_suffix(".bin").write_bytes(b"nor are these weights")
    with pytest.raises(ModelLoadFailed) as caught:
        open_session(path, ModelFormat(fmt))
    assert name in caught.value.message and caught.value.hint


def test_openvino_ir_without_weights(tmp_path: Path, torch_case: dict[str, Any]) -> None:
    lonely = tmp_path / "cnn.xml"
    lonely.write_bytes(torch_case["openvino"].read_bytes())
    with pytest.raises(ModelLoadFailed, match=r"no weights file cnn\.bin"):
        open_session(lonely, ModelFormat.OPENVINO)


def test_litert_serves_concurrent_callers(keras_case: dict[str, Any]) -> None:
    images, expected = keras_case["images"], keras_case["expected"]
    with open_session(keras_case["float"], ModelFormat.TFLITE, threads=1) as session:
        output = session.outputs[0].name

        def call(i: int) -> float:
            batch = 1 + i % BATCH
            result = session.infer({"input": images[:batch]})[output]
            return float(np.abs(result - expected[:batch]).max())

        with ThreadPoolExecutor(max_workers=4) as pool:
            errors = list(pool.map(call, range(40)))
    assert max(errors) < FP32_ATOL


# --- bundles ----------------------------------------------------------------------------


def _manifest(
    model_file: str, inputs: list[TensorSpec], outputs: list[TensorSpec], **options: Any
) -> Manifest:
    return Manifest(
        name="cnn",
        version="1.0.0",
        profile="box",
        format="onnx",
        precision="fp32",
        runtime=RuntimeSpec(name="onnxruntime", options=options),
        model_file=model_file,
        inputs=inputs,
        outputs=outputs,
        files={model_file: FileEntry(sha256="0" * 64, size=1)},
    )


def test_bundle_session_uses_the_profile_and_checks_the_manifest(
    tmp_path: Path, torch_case: dict[str, Any], images: np.ndarray
) -> None:
    (tmp_path / "model.onnx").write_bytes(torch_case["onnx"].read_bytes())
    inputs = [TensorSpec(name="input", dtype="float32", shape=[-1, 1, 8, 8], layout="NCHW")]
    outputs = [TensorSpec(name="logits", dtype="float32", shape=[-1, 10], layout="NC")]
    profile = HardwareProfile.model_validate(
        {
            "name": "box",
            "description": "test box",
            "architecture": "x86_64",
            "cpu": {"model": "x", "cores": 2},
            "memory_mb": 512,
            "runtimes": [{"name": "onnxruntime", "format": "onnx", "execution_providers": ["cuda", "cpu"]}],
            "formats": ["onnx"],
            "precisions": ["fp32"],
            "threads": 1,
            "max_model_mb": 5,
        }
    )
    manifest = _manifest("model.onnx", inputs, outputs, threads=2)
    with open_bundle_session(tmp_path, manifest, profile) as session:
        assert session.describe()["threads"] == 1
        assert session.inputs == inputs
        np.testing.assert_allclose(
            session.infer({"input": images})["logits"], torch_case["expected"], atol=FP32_ATOL
        )
    with open_bundle_session(tmp_path, manifest) as session:
        assert session.describe()["threads"] == 2

    lying = _manifest("model.onnx", [inputs[0].model_copy(update={"shape": [-1, 3, 8, 8]})], outputs)
    with pytest.raises(SignatureMismatch, match=r"input 'input' has shape \[-1, 1, 8, 8\] in the model"):
        open_bundle_session(tmp_path, lying)
    # The manifest schema refuses such a name; a hand-built (unvalidated) one must still not escape.
    escaping = manifest.model_copy(update={"model_file": "../model.onnx"})
    with pytest.raises(ModelLoadFailed, match="outside the bundle"):
        open_bundle_session(tmp_path / "sub", escaping)


# --- the agent stays light ------------------------------------------------------------------

HEAVY = ("torch", "tensorflow", "nncf", "onnx", "keras", "litert_torch")


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_agent_and_its_runtimes_loads_no_framework() -> None:
    loaded = _modules_after("import edge_agent, edge_agent.runtimes")
    assert {"edge_agent", "edge_agent.runtimes"} <= loaded
    assert sorted(m for m in loaded if m.split(".")[0] in HEAVY) == []
    # Runtimes load when a session opens, not before.
    assert not {"onnxruntime", "openvino", "ai_edge_litert"} & loaded


def test_running_every_backend_loads_no_framework(
    torch_case: dict[str, Any], keras_case: dict[str, Any]
) -> None:
    models = [(str(torch_case["onnx"]), "onnx"), (str(torch_case["openvino"]), "openvino")]
    models.append((str(keras_case["int8"]), "tflite"))
    code = (
        "import numpy as np\nfrom pathlib import Path\nfrom edge_agent.runtimes import open_session\n"
        f"for path, fmt in {models!r}:\n"
        "    with open_session(Path(path), fmt) as s:\n"
        "        shape = [1 if d == -1 else d for d in s.inputs[0].shape]\n"
        "        s.infer({s.inputs[0].name: np.zeros(shape, np.float32)})\n"
    )
    loaded = _modules_after(code)
    assert {"onnxruntime", "openvino", "ai_edge_litert"} <= {m.split(".")[0] for m in loaded}
    assert sorted(m for m in loaded if m.split(".")[0] in HEAVY) == []
