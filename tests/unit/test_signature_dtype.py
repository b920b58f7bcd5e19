"""A bundle keeps its source model's dtypes at its interface (issue 18, item 8): the pure parts.

TFLite has no int64 at a model's edge: litert-torch turns a torch model's int64 token ids into
int32. The manifest still declares int64 (what the source declared, and what the ONNX and
OpenVINO bundles of the same model take), and the runtime session casts at its edge: int64 feeds
are narrowed to int32 when every value fits and refused otherwise, int32 outputs are widened back
to int64. These tests cover the helper that casts and refuses, the signature check that lets a
manifest's int64 stand over a model's int32 (and nothing else), the shared session pipeline, and
the converter's choice of the interface dtypes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter.signature import interface_signature
from edge_agent.runtimes import InvalidInput, SignatureMismatch
from edge_agent.runtimes.casting import cast_note, castable, narrow_feed, widen_output
from edge_agent.runtimes.feeds import prepare_feeds
from edge_agent.runtimes.session import BaseSession
from edge_agent.runtimes.signature import reconcile_signature, runtime_dtypes
from hw_profiles.schema import RuntimeName
from models.bundle.manifest import QuantParams, TensorSpec

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
INT8 = QuantParams(scale=0.05, zero_point=-3, dtype="int8")

MODEL_IDS = TensorSpec(name="ids", dtype="int32", shape=[1, 4])
MODEL_TOP = TensorSpec(name="top", dtype="int32", shape=[1])
MODEL_LOGITS = TensorSpec(name="logits", dtype="float32", shape=[1, 3])
SOURCE_IDS = TensorSpec(name="ids", dtype="int64", shape=[-1, 4], layout="NC")
SOURCE_TOP = TensorSpec(name="top", dtype="int64", shape=[-1])
SOURCE_LOGITS = TensorSpec(name="logits", dtype="float32", shape=[-1, 3])
MANIFEST_IDS = MODEL_IDS.model_copy(update={"dtype": "int64", "layout": "NC"})
MANIFEST_TOP = MODEL_TOP.model_copy(update={"dtype": "int64"})


# --- the cast helper ------------------------------------------------------------------------


def test_only_int64_over_int32_may_differ() -> None:
    assert castable("int64", "int32")
    assert not castable("int32", "int64")  # a model that takes more than its interface: no cast
    assert not castable("int64", "int8")
    assert not castable("float32", "float16")
    assert not castable("float32", "int8")  # quantization is its own contract
    assert not castable("int64", "int64")


def test_values_that_fit_are_narrowed_exactly() -> None:
    ids = np.array([[0, 1, INT32_MAX, INT32_MIN]], np.int64)
    narrowed = narrow_feed("ids", ids, "int32")
    assert narrowed.dtype == np.int32
    assert narrowed.flags.c_contiguous
    assert narrowed.astype(np.int64).tolist() == ids.tolist()


@pytest.mark.parametrize(
    ("values", "outside", "low", "high"),
    [
        ([0, INT32_MAX + 1, 5, 7], 1, INT32_MAX + 1, INT32_MAX + 1),
        ([INT32_MIN - 1, 0, 2**40, 3], 2, INT32_MIN - 1, 2**40),
        ([-(2**63), 0, 0, 0], 1, -(2**63), -(2**63)),
    ],
)
def test_values_outside_int32_are_refused_with_the_input_and_the_range(
    values: list[int], outside: int, low: int, high: int
) -> None:
    with pytest.raises(InvalidInput) as caught:
        narrow_feed("ids", np.array([values], np.int64), "int32")
    message = caught.value.message
    assert "'ids'" in message
    assert f"{outside} of 4 values" in message
    assert f"from {low} to {high}" in message
    assert f"[{INT32_MIN}, {INT32_MAX}]" in message
    assert "int32" in message and "int64" in message
    assert caught.value.hint  # says what to send instead


def test_an_empty_feed_narrows_without_complaint() -> None:
    assert narrow_feed("ids", np.zeros((0, 4), np.int64), "int32").dtype == np.int32


def test_outputs_are_widened_back() -> None:
    top = np.array([3, INT32_MIN, INT32_MAX], np.int32)
    widened = widen_output(top, "int64")
    assert widened.dtype == np.int64 and widened.tolist() == top.tolist()


def test_the_note_says_what_clients_send_and_what_the_model_runs() -> None:
    assert (
        cast_note("ids", "input", "int64", "int32", RuntimeName.LITERT)
        == "ids: served as INT64, runs as int32 inside TFLite; values outside int32 are refused"
    )
    note = cast_note("top", "output", "int64", "int32", RuntimeName.LITERT)
    assert note.startswith("top: served as INT64, computed as int32 inside TFLite")


# --- the signature check --------------------------------------------------------------------


def test_a_manifest_may_declare_int64_over_a_models_int32() -> None:
    inputs, outputs = reconcile_signature(
        [MODEL_IDS], [MODEL_LOGITS, MODEL_TOP], ([MANIFEST_IDS], [MODEL_LOGITS, MANIFEST_TOP]), model="m"
    )
    assert [(s.name, s.dtype) for s in inputs] == [("ids", "int64")]
    assert inputs[0].layout == "NC"
    assert [(s.name, s.dtype) for s in outputs] == [("logits", "float32"), ("top", "int64")]
    assert runtime_dtypes([MODEL_IDS, MODEL_LOGITS, MODEL_TOP], [*inputs, *outputs]) == {
        "ids": "int32",
        "top": "int32",
    }


def test_without_a_manifest_the_model_dtypes_stand_and_nothing_is_cast() -> None:
    inputs, outputs = reconcile_signature([MODEL_IDS], [MODEL_TOP], None, model="m")
    assert inputs[0].dtype == "int32" and outputs[0].dtype == "int32"
    assert runtime_dtypes([MODEL_IDS, MODEL_TOP], [*inputs, *outputs]) == {}


@pytest.mark.parametrize(
    ("model", "manifest"),
    [
        (MODEL_IDS, MODEL_IDS.model_copy(update={"dtype": "float32"})),
        (MODEL_IDS.model_copy(update={"dtype": "int64"}), MODEL_IDS),  # narrower interface than model
        (MODEL_IDS, MODEL_IDS.model_copy(update={"dtype": "int16"})),
    ],
)
def test_other_dtype_differences_still_mean_another_model(model: TensorSpec, manifest: TensorSpec) -> None:
    with pytest.raises(SignatureMismatch, match=r"input 'ids' is .* in the model but .* in the manifest"):
        reconcile_signature([model], [MODEL_LOGITS], ([manifest], [MODEL_LOGITS]), model="m.tflite")


# --- feeds and the session pipeline ---------------------------------------------------------


def test_feeds_are_checked_against_the_interface_then_narrowed() -> None:
    spec = MANIFEST_IDS
    ids = np.array([[1, 2, 3, 4]], np.int64)
    feeds, _ = prepare_feeds([spec], {"ids": ids}, raw=False, runtime_dtypes={"ids": "int32"})
    assert feeds["ids"].dtype == np.int32 and feeds["ids"].tolist() == ids.tolist()
    with pytest.raises(InvalidInput, match=r"'ids'.*from 4294967300 to 4294967300"):
        prepare_feeds(
            [spec], {"ids": ids + np.array([[0, 0, 0, 2**32]])}, raw=False, runtime_dtypes={"ids": "int32"}
        )
    # raw=True concerns quantized tensors only: the cast still applies.
    raw, _ = prepare_feeds([spec], {"ids": ids}, raw=True, runtime_dtypes={"ids": "int32"})
    assert raw["ids"].dtype == np.int32


class _Lookup(BaseSession):
    """A model that runs int32 ids and an int8-quantized input, as a TFLite interpreter would."""

    runtime = RuntimeName.LITERT

    def __init__(self, batch: int) -> None:
        ids = TensorSpec(name="ids", dtype="int64", shape=[batch, 4])
        q = TensorSpec(name="q", dtype="int8", shape=[batch, 2], quantization=INT8)
        top = TensorSpec(name="top", dtype="int64", shape=[batch])
        y = TensorSpec(name="y", dtype="int8", shape=[batch, 2], quantization=INT8)
        super().__init__(
            model_path=Path("fake.tflite"),
            inputs=[ids, q],
            outputs=[top, y],
            provider="fake",
            fallbacks=[],
            threads=1,
            runtime_dtypes={"ids": "int32", "top": "int32"},
        )
        self.seen: list[np.dtype[np.generic]] = []

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.seen.append(feeds["ids"].dtype)
        assert feeds["ids"].dtype == np.int32  # what an interpreter's set_tensor demands
        assert feeds["q"].dtype == np.int8
        return {"top": feeds["ids"].max(axis=1).astype(np.int32), "y": feeds["q"]}


@pytest.mark.parametrize("batch", [1, -1])
def test_a_session_narrows_inputs_widens_outputs_and_keeps_quantization(batch: int) -> None:
    session = _Lookup(batch)
    ids = np.array([[1, 2, 3, 4], [INT32_MAX, 0, 0, 0], [7, 7, 7, 7]], np.int64)
    q = np.array([[0.0, 0.1]] * 3, np.float32)
    out = session.infer({"ids": ids, "q": q})
    assert out["top"].dtype == np.int64 and out["top"].tolist() == [4, INT32_MAX, 7]
    np.testing.assert_allclose(out["y"], q, atol=INT8.scale)  # dequantized as before
    assert set(session.seen) == {np.dtype(np.int32)}
    assert session.runtime_dtypes == {"ids": "int32", "top": "int32"}
    assert session.describe()["runtime_dtypes"] == {"ids": "int32", "top": "int32"}
    assert session.dtype_notes == [
        "ids: served as INT64, runs as int32 inside TFLite; values outside int32 are refused",
        cast_note("top", "output", "int64", "int32", RuntimeName.LITERT),
    ]
    with pytest.raises(InvalidInput, match=r"input 'ids'.*from 2147483648 to 2147483648"):
        session.infer({"ids": ids + np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]), "q": q})


# --- the converter's interface --------------------------------------------------------------


def test_the_converter_keeps_the_source_dtype_where_the_runtime_narrowed_it() -> None:
    chosen = interface_signature(
        [MODEL_IDS], [MODEL_LOGITS, MODEL_TOP], [SOURCE_IDS], [SOURCE_LOGITS, SOURCE_TOP]
    )
    assert chosen is not None
    inputs, outputs = chosen
    assert inputs == [MODEL_IDS.model_copy(update={"dtype": "int64"})]  # the model's shape and layout
    assert [(s.name, s.dtype) for s in outputs] == [("logits", "float32"), ("top", "int64")]


def test_the_converter_changes_nothing_else() -> None:
    same = [SOURCE_IDS.model_copy(update={"shape": [1, 4]})]
    assert interface_signature(same, [MODEL_LOGITS], [SOURCE_IDS], [SOURCE_LOGITS]) is None
    # Quantized (int8 I/O) tensors keep the model's own dtype and parameters: clients speak float.
    quantized = TensorSpec(name="x", dtype="int8", shape=[1, 4], quantization=INT8)
    float_source = TensorSpec(name="x", dtype="float32", shape=[-1, 4])
    assert interface_signature([quantized], [MODEL_LOGITS], [float_source], [SOURCE_LOGITS]) is None
    # A dtype the source does not list (renamed by the exporter) is left alone.
    assert interface_signature([MODEL_IDS], [MODEL_LOGITS], [], [SOURCE_LOGITS]) is None
