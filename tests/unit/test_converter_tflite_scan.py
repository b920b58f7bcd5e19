"""The full-integer scan's judgement over plain graph descriptions, and the AEQ recipe it checks."""

from __future__ import annotations

import pytest

from converter.exporters.tflite_quantize import static_int8_recipe
from converter.exporters.tflite_scan import GraphView, IntegerScan, OpView, find_float_ops
from hw_profiles import load_profile

I8, I32, F32 = "INT8", "INT32", "FLOAT32"


def op(name: str, inputs: list[tuple[int, str]], outputs: list[tuple[int, str]], subgraph: int = 0) -> OpView:
    return OpView(name, tuple(inputs), tuple(outputs), subgraph=subgraph)


# input 0 (int8) → CONV_2D → 3 → FULLY_CONNECTED → output 5
INTEGER = GraphView(
    ops=(
        op("CONV_2D", [(0, I8), (1, I8), (2, I32)], [(3, I8)]),
        op("FULLY_CONNECTED", [(3, I8), (4, I8)], [(5, I8)]),
    ),
    inputs=frozenset({0}),
    outputs=frozenset({5}),
)
# float input 0 → QUANTIZE → 1 → CONV_2D → 3 → DEQUANTIZE → float output 4
FLOAT_EDGES = GraphView(
    ops=(
        op("QUANTIZE", [(0, F32)], [(1, I8)]),
        op("CONV_2D", [(1, I8), (2, I8)], [(3, I8)]),
        op("DEQUANTIZE", [(3, I8)], [(4, F32)]),
    ),
    inputs=frozenset({0}),
    outputs=frozenset({4}),
)
# int8 input 0 → CONV_2D → DEQUANTIZE → LEAKY_RELU (float) → QUANTIZE → FULLY_CONNECTED → output 7
LEAKY = GraphView(
    ops=(
        op("CONV_2D", [(0, I8), (1, I8)], [(2, I8)]),
        op("DEQUANTIZE", [(2, I8)], [(3, F32)]),
        op("LEAKY_RELU", [(3, F32)], [(4, F32)]),
        op("QUANTIZE", [(4, F32)], [(5, I8)]),
        op("FULLY_CONNECTED", [(5, I8), (6, I8)], [(7, I8)]),
    ),
    inputs=frozenset({0}),
    outputs=frozenset({7}),
)


@pytest.mark.parametrize("float_io", [True, False])
def test_an_all_integer_graph_is_full_integer(float_io: bool) -> None:
    scan = find_float_ops(INTEGER, float_io=float_io)
    assert scan == IntegerScan() and scan.full_integer and scan.describe() == ""


def test_float_io_edges_pass_only_when_float_io_was_asked_for() -> None:
    accepted = find_float_ops(FLOAT_EDGES, float_io=True)
    assert accepted.full_integer and accepted.edges == 2
    refused = find_float_ops(FLOAT_EDGES, float_io=False)
    assert not refused.full_integer
    assert refused.conversions == ("QUANTIZE", "DEQUANTIZE") and refused.float_ops == ()
    assert refused.describe() == "DEQUANTIZE, QUANTIZE inside the graph"


@pytest.mark.parametrize("float_io", [True, False])
def test_an_op_left_in_float_is_named_with_its_conversions(float_io: bool) -> None:
    scan = find_float_ops(LEAKY, float_io=float_io)
    assert not scan.full_integer
    assert scan.float_ops == ("LEAKY_RELU",)
    assert scan.conversions == ("DEQUANTIZE", "QUANTIZE")  # inside the graph, not at its edges
    assert scan.describe() == "LEAKY_RELU in float; DEQUANTIZE, QUANTIZE inside the graph"


@pytest.mark.parametrize("float_io", [True, False])
def test_an_integer_requantization_is_full_integer(float_io: bool) -> None:
    """QUANTIZE int8 → int8 (a new scale before a CONCATENATION, as in YOLOX): no float involved."""
    graph = GraphView(
        ops=(
            op("CONV_2D", [(0, I8), (1, I8)], [(2, I8)]),
            op("QUANTIZE", [(2, I8)], [(3, I8)]),
            op("CONCATENATION", [(3, I8), (0, I8)], [(4, I8)]),
        ),
        inputs=frozenset({0}),
        outputs=frozenset({4}),
    )
    scan = find_float_ops(graph, float_io=float_io)
    assert scan.full_integer and scan == IntegerScan()


def test_repeated_ops_are_counted() -> None:
    graph = GraphView(
        ops=(
            op("MINIMUM", [(0, F32), (1, F32)], [(2, F32)]),
            op("MINIMUM", [(2, F32), (1, F32)], [(3, F32)]),
            op("RELU6", [(3, F32)], [(4, F32)]),
        ),
        inputs=frozenset({0}),
        outputs=frozenset({4}),
    )
    assert find_float_ops(graph, float_io=True).describe() == "MINIMUM x2, RELU6 in float"


def test_a_float_op_reading_a_float_graph_input_directly_is_not_an_edge() -> None:
    graph = GraphView(
        ops=(op("TRANSPOSE", [(0, F32), (1, I32)], [(2, F32)]), op("QUANTIZE", [(2, F32)], [(3, I8)])),
        inputs=frozenset({0}),
        outputs=frozenset({3}),
    )
    scan = find_float_ops(graph, float_io=True)
    assert scan.float_ops == ("TRANSPOSE",) and scan.conversions == ("QUANTIZE",)


def test_conversions_in_another_subgraph_are_never_io_edges() -> None:
    graph = GraphView(
        ops=(op("QUANTIZE", [(0, F32)], [(1, I8)], subgraph=1),),
        inputs=frozenset({0}),
        outputs=frozenset({1}),
    )
    assert find_float_ops(graph, float_io=True).conversions == ("QUANTIZE",)


def test_float16_tensors_count_as_float() -> None:
    graph = GraphView(ops=(op("CONV_2D", [(0, I8), (1, "FLOAT16")], [(2, I8)]),))
    assert find_float_ops(graph, float_io=True).float_ops == ("CONV_2D",)


def _value(enum_or_str: object) -> str:
    return str(getattr(enum_or_str, "value", enum_or_str))


def _by_operation(recipe: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {_value(entry["operation"]): entry for entry in recipe}


def test_the_recipe_gives_the_edge_tpu_int8_io_and_the_pi_float_io() -> None:
    coral = _by_operation(static_int8_recipe(load_profile("coral-edgetpu").quantization))
    assert set(coral) == {"*"}  # everything static int8, the model's inputs and outputs too
    pi = _by_operation(static_int8_recipe(load_profile("raspberry-pi-5").quantization))
    assert set(pi) == {"*", "INPUT", "OUTPUT"}
    assert {_value(pi[edge]["algorithm_key"]) for edge in ("INPUT", "OUTPUT")} == {"no_quantize"}
    for recipe in (coral, pi):
        config: dict[str, dict[str, object]] = recipe["*"]["op_config"]  # type: ignore[assignment]
        assert config["activation_tensor_config"]["num_bits"] == 8
        assert config["weight_tensor_config"]["num_bits"] == 8
        assert _value(config["weight_tensor_config"]["granularity"]) == "CHANNELWISE"


def test_per_tensor_weights_when_the_profile_asks() -> None:
    constraints = load_profile("raspberry-pi-5").quantization.model_copy(update={"per_channel": False})
    config: dict[str, dict[str, object]] = _by_operation(static_int8_recipe(constraints))["*"]["op_config"]  # type: ignore[assignment]
    assert _value(config["weight_tensor_config"]["granularity"]) == "TENSORWISE"
