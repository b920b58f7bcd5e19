"""The in-process API (``edge_agent.api.LocalInference``) over the real runtimes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_agent.api import LocalInference
from edge_agent.serving import InvalidRequest, ModelNotFound
from models.bundle import HashMismatch, inspect_bundle
from tests.support.bundles import flip_byte
from tests.support.digits_bundles import FORMATS, INPUT_NAME, OUTPUT_NAME, BundleSet, shared_bundles

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> BundleSet:
    return shared_bundles(tmp_path_factory)


@pytest.fixture(scope="module")
def local(digits: BundleSet) -> Iterator[LocalInference]:
    bundles = [digits.path(fmt) for fmt in FORMATS]
    with LocalInference(
        bundles, trusted_keys=[digits.public_key_path], max_batch=8, batch_delay_ms=20
    ) as api:
        yield api


@pytest.mark.parametrize("fmt", FORMATS)
def test_answers_match_the_golden_outputs(local: LocalInference, digits: BundleSet, fmt: str) -> None:
    golden = inspect_bundle(digits.path(fmt)).golden
    assert golden is not None
    response = local.infer_response(digits.name(fmt), {INPUT_NAME: digits.golden_inputs}, request_id="g")
    assert response.model_version == "1.0.0" and response.id == "g"
    np.testing.assert_allclose(
        response.as_dict()[OUTPUT_NAME], digits.golden_outputs, atol=golden.atol, rtol=golden.rtol
    )


def test_errors_carry_the_status_a_network_client_would_get(local: LocalInference, digits: BundleSet) -> None:
    with pytest.raises(ModelNotFound) as missing:
        local.infer("no-such-model", {INPUT_NAME: digits.golden_inputs})
    assert missing.value.status == "NOT_FOUND"
    with pytest.raises(InvalidRequest, match="expected datatype FP32, got FP64") as wrong:
        local.infer(digits.name("onnx"), {INPUT_NAME: digits.golden_inputs.astype(np.float64)})
    assert wrong.value.status == "INVALID_ARGUMENT"


def test_threads_are_batched_and_each_gets_its_own_answer(local: LocalInference, digits: BundleSet) -> None:
    name = digits.name("openvino")
    batches = [np.ascontiguousarray(digits.golden_inputs[i : i + 1 + i % 2]) for i in range(12)]
    answers: list[np.ndarray | None] = [None] * len(batches)
    before = local.statistics(name)[0]
    barrier = threading.Barrier(len(batches))

    def call(i: int) -> None:
        barrier.wait()
        answers[i] = local.infer(name, {INPUT_NAME: batches[i]})[OUTPUT_NAME]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    after = local.statistics(name)[0]
    golden = inspect_bundle(digits.path("openvino")).golden
    assert golden is not None
    for i, answer in enumerate(answers):
        want = digits.golden_outputs[i : i + 1 + i % 2]
        assert answer is not None
        np.testing.assert_allclose(answer, want, atol=golden.atol, rtol=golden.rtol)
    assert after.inference.success.count - before.inference.success.count == len(batches)
    assert after.execution_count - before.execution_count < len(batches)


def test_unload_and_load(local: LocalInference, digits: BundleSet) -> None:
    name = digits.name("tflite")
    assert local.unload(name) == ["1.0.0"] and not local.ready(name)
    assert local.load(name) == ["1.0.0"] and local.ready(name)
    assert local.metadata(name).versions == ["1.0.0"]


def test_a_refused_bundle_loads_nothing_and_leaves_no_files(digits: BundleSet, tmp_path: Path) -> None:
    tampered = flip_byte(digits.path("onnx"), tmp_path / "bad.efb", "model.onnx", 500)
    data_dir = tmp_path / "data"
    with pytest.raises(HashMismatch):
        LocalInference(
            [digits.path("tflite"), tampered], trusted_keys=[digits.public_key_path], data_dir=data_dir
        )
    assert not list(data_dir.rglob("*.onnx"))


def test_a_temporary_data_directory_is_removed_on_close(digits: BundleSet) -> None:
    api = LocalInference([digits.path("onnx")], trusted_keys=[digits.private_key.public_key()])
    data_dir = api.data_dir
    assert any(data_dir.rglob("model.onnx"))
    api.close()
    assert not data_dir.exists()
