"""The reference model zoo against the real frameworks: accuracy, cache, shapes, files, exports.

The accuracy tests use the shared cache (``$EDGEFLEET_CACHE_DIR/zoo`` or ``~/.cache/edgefleet/zoo``),
so only the first run on a machine trains; the cache tests use a private directory and a one-epoch
config, so they exercise training without paying for a full run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.zoo import (
    CACHE_DIR_ENV,
    CALIB_FILE,
    EVAL_FILE,
    LABELS_KEY,
    REFERENCE_NAMES,
    WeightCache,
    default_cache_dir,
    get_reference,
)

pytestmark = pytest.mark.integration

MIN_ACCURACY = 0.97
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits_cnn() -> Any:
    return get_reference("digits-cnn").load()


@pytest.fixture(scope="module")
def digits_keras() -> Any:
    return get_reference("digits-keras").load()


@pytest.fixture(scope="module")
def mobilenet() -> Any:
    return get_reference("mobilenet-mini").load()


# --- accuracy -----------------------------------------------------------------------------------


def test_digits_cnn_reaches_target_accuracy(digits_cnn: Any) -> None:
    assert not digits_cnn.training, "load() returns the model in eval mode"
    assert get_reference("digits-cnn").evaluate(digits_cnn) >= MIN_ACCURACY


def test_digits_keras_reaches_target_accuracy(digits_keras: Any) -> None:
    assert get_reference("digits-keras").evaluate(digits_keras) >= MIN_ACCURACY


def test_import_path_factories_give_the_registry_models() -> None:
    from models.zoo import resolve_source

    assert resolve_source("models.zoo.digits_cnn:trained_model").__name__ == "trained_model"
    assert resolve_source("models.zoo.mobilenet_mini:build_model").__name__ == "build_model"
    assert get_reference("digits-cnn").source == "models.zoo.digits_cnn:trained_model"
    assert get_reference("mobilenet-mini").source == "models.zoo.mobilenet_mini:build_model"


# --- shapes and names ---------------------------------------------------------------------------


def test_digits_cnn_io(digits_cnn: Any) -> None:
    import torch

    out = digits_cnn(torch.zeros(3, *get_reference("digits-cnn").input_shape))
    assert tuple(out.shape) == (3, 10)


def test_digits_keras_io(digits_keras: Any) -> None:
    ref = get_reference("digits-keras")
    assert [t.name for t in digits_keras.inputs] == [ref.input_name]
    assert digits_keras.output_names == [ref.output_name]
    assert tuple(digits_keras.inputs[0].shape) == (None, *ref.input_shape)
    assert digits_keras.predict(np.zeros((3, *ref.input_shape), np.float32), verbose=0).shape == (3, 10)


def test_mobilenet_mini_size_and_io(mobilenet: Any) -> None:
    import torch

    from models.zoo import mobilenet_mini

    ref = get_reference("mobilenet-mini")
    assert ref.input_shape == mobilenet_mini.INPUT_SHAPE
    assert mobilenet_mini.parameter_count(mobilenet) >= 1_000_000
    depthwise = [
        m for m in mobilenet.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1
    ]
    assert depthwise, "MobileNetV2-style means depthwise convolutions"
    assert any(isinstance(m, torch.nn.ReLU6) for m in mobilenet.modules())
    assert any(getattr(m, "use_residual", False) for m in mobilenet.modules())
    with torch.no_grad():
        out = mobilenet(torch.from_numpy(ref.datasets().eval_inputs[:2]))
    assert tuple(out.shape) == (2, ref.num_classes)
    assert torch.isfinite(out).all()


def test_mobilenet_mini_is_deterministic_and_leaves_global_rng_alone(mobilenet: Any) -> None:
    import torch

    from models.zoo import mobilenet_mini

    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    rebuilt = mobilenet_mini.build_model()
    assert torch.equal(torch.rand(1), expected_next), "build_model must not consume the caller's RNG"
    for (name, a), (_, b) in zip(mobilenet.state_dict().items(), rebuilt.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_mobilenet_mini_activations_are_sane(mobilenet: Any) -> None:
    import torch

    batch = torch.from_numpy(get_reference("mobilenet-mini").datasets().calib[:8])
    with torch.no_grad():
        features = mobilenet.features(batch)
    # BatchNorm statistics set from seeded images keep activations O(1), neither dead nor exploding.
    assert 0.05 < float(features.std()) < 20.0


# --- data files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_written_npz_files(name: str, tmp_path: Path) -> None:
    ref = get_reference(name)
    calib_path, eval_path = ref.write_data(tmp_path)
    assert (calib_path.name, eval_path.name) == (CALIB_FILE, EVAL_FILE)
    with np.load(calib_path) as calib, np.load(eval_path) as evaluation:
        assert sorted(calib.files) == [ref.input_name]
        expected_eval_keys = sorted([ref.input_name, LABELS_KEY] if ref.labelled else [ref.input_name])
        assert sorted(evaluation.files) == expected_eval_keys
        calib_x, eval_x = calib[ref.input_name], evaluation[ref.input_name]
        assert calib_x.dtype == np.float32 and eval_x.dtype == np.float32
        assert calib_x.shape[1:] == ref.input_shape and eval_x.shape[1:] == ref.input_shape
        assert float(calib_x.min()) >= 0.0 and float(calib_x.max()) <= 1.0
        if ref.labelled:
            labels = evaluation[LABELS_KEY]
            assert labels.dtype == np.int64
            assert labels.shape == (eval_x.shape[0],)
            assert set(np.unique(labels)) == set(range(ref.num_classes))
        # Calibration and evaluation never share a sample.
        calib_rows = {row.tobytes() for row in calib_x}
        assert not any(row.tobytes() in calib_rows for row in eval_x)


def test_digits_sizes() -> None:
    data = get_reference("digits-cnn").datasets()
    assert data.calib.shape[0] == 200
    assert data.eval_inputs.shape[0] == pytest.approx(1797 * 0.2, abs=1)
    assert data.train is not None and data.train.shape[0] + data.eval_inputs.shape[0] == 1797


# --- cache ----------------------------------------------------------------------------------------


def _count_calls(monkeypatch: pytest.MonkeyPatch, module: Any, attr: str) -> list[int]:
    calls: list[int] = []
    original = getattr(module, attr)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, attr, counted)
    return calls


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    assert default_cache_dir() == tmp_path / "zoo"
    assert WeightCache().root == tmp_path / "zoo"
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert default_cache_dir() == Path.home() / ".cache" / "edgefleet" / "zoo"


def test_digits_cnn_cache_hit_and_corrupt_entry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    from models.zoo import digits_cnn

    config = digits_cnn.TrainConfig(epochs=1)
    cache = WeightCache(tmp_path)
    trainings = _count_calls(monkeypatch, digits_cnn, "train")

    first = digits_cnn.trained_model(cache, config)
    assert len(trainings) == 1
    (entry,) = tmp_path.glob("digits-cnn-*.pt")
    assert cache.is_valid(entry)
    mtime = entry.stat().st_mtime_ns

    second = digits_cnn.trained_model(cache, config)
    assert len(trainings) == 1, "the second load must come from the cache"
    assert entry.stat().st_mtime_ns == mtime
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name

    entry.write_bytes(entry.read_bytes()[:100])  # a torn write
    assert not cache.is_valid(entry)
    third = digits_cnn.trained_model(cache, config)
    assert len(trainings) == 2, "a corrupt entry is retrained"
    assert cache.is_valid(entry)
    # Training is deterministic, so the rebuilt entry holds the same weights.
    for (name, a), (_, b) in zip(first.state_dict().items(), third.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_digits_cnn_cache_key_follows_hyper_parameters() -> None:
    from models.zoo import digits_cnn

    assert digits_cnn.cache_key() == digits_cnn.cache_key(digits_cnn.TrainConfig())
    assert digits_cnn.cache_key() != digits_cnn.cache_key(digits_cnn.TrainConfig(epochs=1))


def test_digits_keras_cache_hit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from models.zoo import digits_keras

    config = digits_keras.TrainConfig(epochs=1)
    cache = WeightCache(tmp_path)
    trainings = _count_calls(monkeypatch, digits_keras, "train")
    first = digits_keras.trained_model(cache, config)
    (entry,) = tmp_path.glob("digits-keras-*.keras")
    mtime = entry.stat().st_mtime_ns
    second = digits_keras.trained_model(cache, config)
    assert len(trainings) == 1
    assert entry.stat().st_mtime_ns == mtime
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unusable_cache_dir_says_what_to_do(tmp_path: Path) -> None:
    from models.zoo import CacheError

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")

    def produce(path: Path) -> None:
        path.write_bytes(b"")

    with pytest.raises(CacheError, match=CACHE_DIR_ENV) as caught:
        WeightCache(blocker / "zoo").get_or_create("thing", "k", ".bin", produce)
    assert str(blocker) in str(caught.value)


def test_entry_that_does_not_load_is_rebuilt(tmp_path: Path) -> None:
    cache = WeightCache(tmp_path)
    writes: list[bytes] = []

    def produce(path: Path) -> None:
        # The first build writes bytes the reader rejects (hash and sidecar still agree).
        payload = b"not json" if not writes else b'{"ok": true}'
        writes.append(payload)
        path.write_bytes(payload)

    result = cache.load("thing", "k1", ".json", produce, lambda path: json.loads(path.read_text()))
    assert result == {"ok": True}
    assert len(writes) == 2


def test_missing_sidecar_means_rebuild(tmp_path: Path) -> None:
    cache = WeightCache(tmp_path)
    builds: list[int] = []

    def produce(path: Path) -> None:
        builds.append(1)
        path.write_bytes(b"payload")

    path = cache.get_or_create("thing", "k1", ".bin", produce)
    path.with_name(path.name + ".meta.json").unlink()  # as after a crash between the two renames
    assert cache.get_or_create("thing", "k1", ".bin", produce) == path
    assert len(builds) == 2
    assert cache.is_valid(path)
    assert not list(tmp_path.glob(".thing-*")), "no temporary files are left behind"


_RACE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from models.zoo.cache import WeightCache

    root, log = Path(sys.argv[1]), Path(sys.argv[2])

    def produce(path):
        with log.open("a") as handle:
            handle.write("built\\n")
        time.sleep(1.0)  # widens the window in which a second process would also build without the lock
        path.write_bytes(b"x" * 1_000_000)

    print(WeightCache(root).get_or_create("race", "k", ".bin", produce))
    """
)


def test_two_processes_build_an_entry_once(tmp_path: Path) -> None:
    root, log = tmp_path / "cache", tmp_path / "builds.log"
    script = tmp_path / "race.py"
    script.write_text(_RACE_SCRIPT)
    racers = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), str(log)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [racer.communicate(timeout=120) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), [err for _, err in results]
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    assert log.read_text().count("built") == 1
    entry = Path(paths.pop())
    assert WeightCache(root).is_valid(entry)
    assert entry.stat().st_size == 1_000_000


def test_importing_the_zoo_loads_no_framework() -> None:
    code = (
        "import sys, models.zoo\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'sklearn') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


# --- source files and conversions -------------------------------------------------------------


def test_digits_cnn_source_is_a_pt2_with_dynamic_batch(digits_cnn: Any, tmp_path: Path) -> None:
    import torch

    ref = get_reference("digits-cnn")
    path = ref.save_source(tmp_path, digits_cnn)
    assert path.suffix == ".pt2"
    program = torch.export.load(path)
    batch = torch.from_numpy(ref.datasets().eval_inputs[:5])  # not the example batch size
    with torch.no_grad():
        np.testing.assert_allclose(
            program.module()(batch).numpy(), digits_cnn(batch).numpy(), rtol=1e-5, atol=1e-5
        )


def test_digits_keras_source_loads_back_and_converts_to_tflite(digits_keras: Any, tmp_path: Path) -> None:
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    ref = get_reference("digits-keras")
    path = ref.save_source(tmp_path, digits_keras)
    assert path.suffix == ".keras"
    reloaded = keras.models.load_model(path, compile=False)
    samples = ref.datasets().eval_inputs[:8]
    expected = digits_keras.predict(samples, verbose=0)
    np.testing.assert_allclose(reloaded.predict(samples, verbose=0), expected, rtol=1e-5, atol=1e-5)

    interpreter = Interpreter(model_content=tf.lite.TFLiteConverter.from_keras_model(reloaded).convert())
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    for sample, want in zip(samples, expected, strict=True):
        interpreter.set_tensor(inp["index"], sample[None])
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(out["index"])[0], want, rtol=1e-4, atol=1e-4)


def test_digits_cnn_exports_to_onnx_with_its_names(digits_cnn: Any, tmp_path: Path) -> None:
    import onnxruntime as ort
    import torch

    ref = get_reference("digits-cnn")
    path = tmp_path / "digits.onnx"
    example = torch.zeros(2, *ref.input_shape)
    torch.onnx.export(
        digits_cnn,
        (example,),
        str(path),
        dynamo=True,
        external_data=False,
        input_names=[ref.input_name],
        output_names=[ref.output_name],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [ref.input_name]
    assert [o.name for o in session.get_outputs()] == [ref.output_name]
    assert ref.evaluate(lambda batch: session.run(None, {ref.input_name: batch})[0]) >= MIN_ACCURACY


@pytest.mark.slow
def test_digits_cnn_converts_with_litert_torch(digits_cnn: Any, tmp_path: Path) -> None:
    import litert_torch
    import torch
    from ai_edge_litert.interpreter import Interpreter

    ref = get_reference("digits-cnn")
    path = tmp_path / "digits.tflite"
    litert_torch.convert(digits_cnn.eval(), (torch.zeros(1, *ref.input_shape),)).export(str(path))
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    samples = ref.datasets().eval_inputs[:8]
    with torch.no_grad():
        expected = digits_cnn(torch.from_numpy(samples)).numpy()
    for sample, want in zip(samples, expected, strict=True):
        interpreter.set_tensor(inp["index"], sample[None])
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(out["index"])[0], want, rtol=1e-4, atol=1e-4)
