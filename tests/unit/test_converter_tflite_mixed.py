"""TFLite mixed precision: the per-op ai-edge-quantizer rules, the plan, and the scan's wording."""

from __future__ import annotations

from ai_edge_quantizer import qtyping, recipe_manager
from ai_edge_quantizer.algorithm_manager import AlgorithmName

from converter.exporters.tflite_export import _mixed_scan_notes
from converter.exporters.tflite_quantize import TfliteOp, float_op_rules, mixed_recipe
from converter.exporters.tflite_scan import IntegerScan
from converter.planning import ModelFacts, SourceKind, TargetPlan, plan_target
from hw_profiles import load_profile
from hw_profiles.schema import ModelFormat

FC = qtyping.TFLOperationName.FULLY_CONNECTED
# Real litert-torch scopes (output tensor names): the next op's scope names Linear_3 too.
FC3 = TfliteOp("FULLY_CONNECTED_6", "FULLY_CONNECTED", "__main__.M/torch.nn.modules.linear.Linear_3;1;")
FC4 = TfliteOp(
    "FULLY_CONNECTED_7",
    "FULLY_CONNECTED",
    "__main__.M/torch.nn.modules.linear.Linear_3;;__main__.M/torch.nn.modules.linear.Linear_4;;",
)
TORCH = ModelFacts(source_kind=SourceKind.TORCH)


def _labels(plan: TargetPlan) -> list[str]:
    return [a.label for a in plan.attempts]


def _algorithm(recipe: list[dict[str, object]], op: qtyping.TFLOperationName, scope: str) -> object:
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    return manager.get_quantization_configs(op, scope)[0]


def test_each_float_op_gets_one_anchored_no_quantize_rule_for_its_type() -> None:
    rules = float_op_rules([FC3])
    assert rules == [
        {
            "regex": r"^__main__\.M/torch\.nn\.modules\.linear\.Linear_3;1;$",
            "operation": "FULLY_CONNECTED",
            "algorithm_key": "no_quantize",
        }
    ]
    assert float_op_rules([]) == []


def test_the_mixed_recipe_leaves_exactly_the_named_ops_in_float() -> None:
    constraints = load_profile("raspberry-pi-5").quantization
    recipe = mixed_recipe(constraints, [FC3])
    assert _algorithm(recipe, FC, FC3.scope) == AlgorithmName.NO_QUANTIZE
    # The next op, whose scope also names Linear_3, and other op types in FC3's scope stay int8.
    assert _algorithm(recipe, FC, FC4.scope) == AlgorithmName.MIN_MAX_UNIFORM_QUANT
    assert _algorithm(recipe, qtyping.TFLOperationName.TANH, FC3.scope) == AlgorithmName.MIN_MAX_UNIFORM_QUANT
    # Without float ops it is the plain static recipe.
    assert _algorithm(mixed_recipe(constraints, []), FC, FC3.scope) == AlgorithmName.MIN_MAX_UNIFORM_QUANT


def test_the_pi_plans_tflite_mixed_precision_after_the_int8_calibrations_and_before_fp16() -> None:
    plan = plan_target(
        load_profile("raspberry-pi-5"), TORCH, formats=[ModelFormat.TFLITE], mixed_precision=True
    )
    labels = _labels(plan)
    assert "int8/mixed" in labels and labels.index("int8/mixed") < labels.index("fp16")
    assert [a.label for a in plan.attempts if a.precision.value == "int8"][-1] == "int8/mixed"
    assert not any("mixed precision skipped" in n for n in plan.notes)


def test_the_edge_tpu_plans_no_mixed_attempt_and_says_why() -> None:
    plan = plan_target(load_profile("coral-edgetpu"), TORCH, mixed_precision=True)
    assert plan.format is ModelFormat.TFLITE
    assert "int8/mixed" not in _labels(plan)
    assert any("mixed precision skipped" in n and "full-integer" in n for n in plan.notes)


def test_ops_kept_in_float_on_purpose_are_a_note_and_only_the_rest_warns() -> None:
    scan = IntegerScan(
        float_ops=("FULLY_CONNECTED", "FULLY_CONNECTED"), conversions=("DEQUANTIZE", "QUANTIZE")
    )
    [note] = _mixed_scan_notes(scan, ["FULLY_CONNECTED_6", "FULLY_CONNECTED_7"])
    assert "kept in float on purpose" in note and not note.startswith("warning")
    scan = IntegerScan(float_ops=("FULLY_CONNECTED", "LEAKY_RELU", "FULLY_CONNECTED"))
    note, warning = _mixed_scan_notes(scan, ["FULLY_CONNECTED_6"])
    assert "FULLY_CONNECTED_6 kept in float on purpose" in note
    assert warning.startswith("warning:") and "FULLY_CONNECTED, LEAKY_RELU in float" in warning
