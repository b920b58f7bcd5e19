"""Checking requests against the model's contract before decoding anything."""

from __future__ import annotations

import pytest

from edge_agent.serving.errors import InvalidRequest
from edge_agent.serving.validation import (
    DeclaredTensor,
    check_inputs,
    check_outputs,
    contracts,
    shape_matches,
)
from models.bundle import QuantParams, TensorSpec

FLOAT_IN = TensorSpec(name="image", dtype="float32", shape=[-1, 3, 4, 4], layout="NCHW")
QUANT_IN = TensorSpec(
    name="q", dtype="int8", shape=[-1, 8], quantization=QuantParams(scale=0.1, zero_point=-3, dtype="int8")
)
OUT = TensorSpec(name="scores", dtype="float32", shape=[-1, 10])
EXTRA_OUT = TensorSpec(name="embedding", dtype="float32", shape=[-1, 16])


def declared(name: str, datatype: str, *shape: int) -> DeclaredTensor:
    return DeclaredTensor(name, datatype, tuple(shape))


def test_a_quantized_input_is_float_to_clients_unless_raw() -> None:
    (cooked,) = contracts([QUANT_IN])
    (raw,) = contracts([QUANT_IN], raw=True)
    assert (cooked.datatype, raw.datatype) == ("FP32", "INT8")
    assert cooked.shape == raw.shape == (-1, 8) and cooked.quantized and cooked.has_dynamic_batch


def test_a_valid_request_passes() -> None:
    check_inputs(
        contracts([FLOAT_IN, QUANT_IN]), [declared("q", "FP32", 2, 8), declared("image", "FP32", 2, 3, 4, 4)]
    )


@pytest.mark.parametrize(
    ("inputs", "fragments"),
    [
        ([declared("image", "FP64", 1, 3, 4, 4)], ["'image'", "expected datatype FP32", "got FP64"]),
        ([declared("image", "FP32", 1, 3, 4)], ["'image'", "expected shape [-1, 3, 4, 4]", "got [1, 3, 4]"]),
        ([declared("image", "FP32", 1, 3, 5, 4)], ["'image'", "[-1, 3, 4, 4]", "got [1, 3, 5, 4]"]),
        ([declared("image", "FP32", 0, 3, 4, 4)], ["'image'", "empty"]),
        ([declared("photo", "FP32", 1, 3, 4, 4)], ["unknown input(s) ['photo']", "['image']"]),
        ([], ["missing input(s) ['image']"]),
        (
            [declared("image", "FP32", 1, 3, 4, 4), declared("image", "FP32", 1, 3, 4, 4)],
            ["['image']", "more than once"],
        ),
    ],
)
def test_each_mistake_names_the_input_and_what_was_expected(
    inputs: list[DeclaredTensor], fragments: list[str]
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_inputs(contracts([FLOAT_IN]), inputs)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_the_hint_for_a_quantized_input_mentions_raw() -> None:
    with pytest.raises(InvalidRequest, match="raw=true"):
        check_inputs(contracts([QUANT_IN]), [declared("q", "INT8", 1, 8)])
    check_inputs(contracts([QUANT_IN], raw=True), [declared("q", "INT8", 1, 8)])


def test_outputs_default_to_all_in_model_order_and_can_be_chosen() -> None:
    available = contracts([OUT, EXTRA_OUT])
    assert check_outputs(available, []) == ["scores", "embedding"]
    assert check_outputs(available, ["embedding"]) == ["embedding"]
    with pytest.raises(InvalidRequest, match=r"unknown output\(s\) \['logits'\]"):
        check_outputs(available, ["logits"])
    with pytest.raises(InvalidRequest, match="more than once"):
        check_outputs(available, ["scores", "scores"])


@pytest.mark.parametrize(
    ("expected", "got", "ok"),
    [
        ((-1, 4), (7, 4), True),
        ((-1, 4), (7, 5), False),
        ((-1, -1), (1, 100), True),
        ((2,), (2, 1), False),
        ((), (), True),
    ],
)
def test_shape_matching(expected: tuple[int, ...], got: tuple[int, ...], ok: bool) -> None:
    assert shape_matches(expected, got) is ok
