"""Outputs whose batch axis is not axis 0, or whose declared shape is wrong (issue 12).

The ``--output name:shape[:dtype]`` grammar, the pure detection (``converter.outputs``), the
loader's probe of a stand-in original (a numpy function shaped like ddddocr's CTC recognizer:
declared ``[1, seqlen]``, returning ``[T, batch, classes]``), and the agent's golden top-1 check
along an output's own batch axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from converter.data import Dataset, check_dataset
from converter.errors import ConversionError
from converter.outputs import batch_axis, fitted_shape, settle_outputs
from converter.planning import SourceKind
from converter.signature import OutputDeclaration, parse_output_spec
from converter.sources import SourceModel
from edge_agent.ota.health import compare_golden
from models.bundle.manifest import GoldenSpec, TensorSpec

# --- the --output grammar ----------------------------------------------------------------------


def test_a_bare_output_name_only_names_it() -> None:
    assert parse_output_spec("logits") == OutputDeclaration(name="logits")
    assert not parse_output_spec("logits").declares_shape


def test_n_marks_an_outputs_batch_axis_and_the_dtype_is_optional() -> None:
    spec = parse_output_spec("387:?xNx8210")
    assert (spec.shape, spec.batch_axis, spec.dtype) == ([-1, -1, 8210], 1, None)
    spec = parse_output_spec("probs:Nx10:float32")
    assert (spec.shape, spec.batch_axis, spec.dtype) == ([-1, 10], 0, "float32")


def test_an_output_shape_without_n_has_no_batch_axis_even_with_a_leading_1() -> None:
    # Unlike --input, where 1x... is a static batch on axis 0: an output's shape is seen, not built.
    assert parse_output_spec("table:1x10").batch_axis is None
    assert parse_output_spec("score:").shape == []


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("y:NxN", "one batch axis"),
        ("y:Nx3:complex64", "dtype"),
        (":Nx3", "expected name"),
        ("y:Nx3:float32:NCHW", "expected name"),
        ("y:0x3", "positive"),
        ("y:Nxfoo", "not like"),
    ],
)
def test_bad_output_specs_say_what_a_good_one_looks_like(text: str, why: str) -> None:
    with pytest.raises(ConversionError, match=why) as caught:
        parse_output_spec(text)
    assert caught.value.message.startswith("--output") and "?xNx8210" in caught.value.hint


# --- detection: pure ---------------------------------------------------------------------------


def test_a_dynamic_batch_is_the_axis_that_goes_from_one_to_two() -> None:
    assert batch_axis((20, 1, 8210), (20, 2, 8210), batch=1, declared=0) == 1
    assert batch_axis((1, 10), (2, 10), batch=1, declared=0) == 0
    # Two candidates: the declared one wins.
    assert batch_axis((1, 1, 5), (2, 2, 5), batch=1, declared=1) == 1


def test_an_output_that_does_not_grow_has_no_batch_axis() -> None:
    assert batch_axis((7, 3), (7, 3), batch=1, declared=0) is None


def test_an_output_that_grows_but_not_by_an_axis_keeps_its_declared_one() -> None:
    # Samples flattened into another axis: no axis counts them alone.
    assert batch_axis((20,), (40,), batch=1, declared=0) == 0


def test_a_static_batch_is_an_axis_of_its_size_the_declared_one_first() -> None:
    assert batch_axis((20, 1, 8210), None, batch=1, declared=0) == 1  # ddddocr
    assert batch_axis((1, 1, 64, 64), None, batch=1, declared=0) == 0
    assert batch_axis((4, 5), None, batch=4, declared=None) == 0
    assert batch_axis((20, 8210), None, batch=1, declared=0) is None  # the batch was squeezed away


def test_the_shape_trusts_the_real_rank_and_keeps_only_declarations_that_fit() -> None:
    # A wrong declaration vouches for nothing: only the batch axis is known.
    assert fitted_shape([1, -1], [20, 1, 8210], 1, dynamic=False) == [-1, 1, -1]
    assert fitted_shape([-1, 10], [1, 10], 0, dynamic=True) == [-1, 10]
    assert fitted_shape([1, 12], [1, 10], 0, dynamic=False) == [1, -1]
    assert fitted_shape([-1, 3], [5, 3], None, dynamic=True) == [-1, 3]


# --- detection: the loader's probe -------------------------------------------------------------


class CtcStandIn(SourceModel):
    """A recognizer that returns ``[T, batch, classes]`` and declares ``[1, seqlen]`` (as ddddocr)."""

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        image = feeds["image"]  # [batch, 4, T]
        return {"logits": np.transpose(image, (2, 0, 1)).copy()}  # [T, batch, 4]


def _source(batch: int) -> SourceModel:
    image = TensorSpec(name="image", dtype="float32", shape=[batch, 4, 6])
    logits = TensorSpec(name="logits", dtype="float32", shape=[1, -1], layout="NC")
    return CtcStandIn(
        kind=SourceKind.ONNX, name="ctc", description="stand-in", inputs=[image], outputs=[logits]
    )


def _data(source: SourceModel, samples: int = 3) -> Dataset:
    image = np.arange(samples * 24, dtype=np.float32).reshape(samples, 4, 6)
    return check_dataset({"image": image}, source.inputs, role="calibration", source=str(Path("c.npz")))


@pytest.mark.parametrize(("batch", "want"), [(1, [-1, 1, -1]), (-1, [-1, -1, -1])])
def test_the_loader_reads_the_batch_axis_from_what_the_original_returns(batch: int, want: list[int]) -> None:
    source = _source(batch)
    notes = settle_outputs(source, _data(source))
    (logits,) = source.outputs
    assert (logits.batch_axis, logits.shape) == (1, want)
    assert logits.layout == "ANY"  # not the NC guessed from the declared [1, seqlen]
    (note,) = notes
    assert "'logits' is declared [1, ?] but returns [6, 1, 4]" in note and "batch on axis 1" in note


def test_a_declared_output_overrides_what_is_read_once_it_fits() -> None:
    source = _source(1)
    settle_outputs(source, _data(source), [parse_output_spec("logits:6xNx4:float32")])
    assert (source.outputs[0].batch_axis, source.outputs[0].shape) == (1, [6, 1, 4])


@pytest.mark.parametrize("text", ["logits:6xNx4x1", "logits:7xNx4", "logits:6xNx4:int64", "logits:Nx4"])
def test_a_declaration_the_model_does_not_return_is_refused(text: str) -> None:
    source = _source(1)
    declaration = parse_output_spec(text)
    with pytest.raises(ConversionError, match="but the model returns \\[6, 1, 4\\] float32"):
        settle_outputs(source, _data(source), [declaration])


def test_a_declaration_for_an_output_the_model_lacks_names_the_outputs() -> None:
    source = _source(1)
    with pytest.raises(ConversionError, match=r"\['probs'\].*\['logits'\]"):
        settle_outputs(source, _data(source), [parse_output_spec("probs:Nx4")])


# --- the agent's golden check ------------------------------------------------------------------


def test_the_golden_top1_check_reads_samples_on_the_outputs_batch_axis() -> None:
    want = np.array([[0.9, 0.1, 0.2, 0.7], [0.1, 0.8, 0.7, 0.2]], np.float32)  # [classes, samples]
    got = want.copy()
    got[:, 3] = [0.2, 0.7]  # sample 3's class flips; every value is still within atol 1.0
    spec = GoldenSpec(file="golden.npz", atol=1.0, rtol=0.0, min_top1_agreement=1.0)
    report = compare_golden({"y": want}, {"y": got}, spec, {"y": 1})
    assert report.outputs[0].top1_agreement == pytest.approx(0.75) and not report.passed
    # Read as rows (axis 0), the two "samples" are the classes, and both still agree.
    assert compare_golden({"y": want}, {"y": got}, spec).outputs[0].top1_agreement == 1.0
