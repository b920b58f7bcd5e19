"""The pure core of mixed precision: grouping, ranking, the budget and the greedy selection."""

from __future__ import annotations

import pytest

from converter.mixed_precision import (
    MixedBudget,
    Probe,
    Selection,
    Trial,
    describe,
    probe_groups,
    rank_probes,
    select_float_nodes,
)
from converter.planning import CalibrationMethod, ModelFacts, SourceKind, TargetPlan, plan_target
from hw_profiles import load_profile
from hw_profiles.schema import ModelFormat, Precision

NODES = [f"conv{i}" for i in range(12)]
ONNX_SOURCE = ModelFacts(source_kind=SourceKind.ONNX, has_conv=True)


def _labels(plan: TargetPlan) -> list[str]:
    return [a.label for a in plan.attempts]


def test_the_onnx_chain_tries_mixed_precision_after_the_int8_calibrations_and_before_fp16() -> None:
    pi = load_profile("raspberry-pi-5")
    plan = plan_target(pi, ONNX_SOURCE, formats=[ModelFormat.ONNX], mixed_precision=True)
    assert _labels(plan) == ["int8/minmax", "int8/entropy", "int8/percentile", "int8/mixed", "fp16", "fp32"]
    mixed = plan.attempts[3]
    assert mixed.mixed and mixed.calibration is CalibrationMethod.MINMAX  # MinMax ranges
    assert mixed.slug == "onnx-int8-mixed"
    # Only when asked for (``convert`` asks unless the calibrations are narrowed).
    assert "int8/mixed" not in _labels(plan_target(pi, ONNX_SOURCE, formats=[ModelFormat.ONNX]))
    narrowed = plan_target(
        load_profile("generic-x86"),
        ONNX_SOURCE,
        formats=[ModelFormat.ONNX],
        precisions=[Precision.INT8, Precision.FP32],
        calibrations=[CalibrationMethod.MINMAX],
        mixed_precision=True,
    )
    assert _labels(narrowed) == ["int8/minmax", "int8/mixed", "fp32"]


def test_other_formats_skip_mixed_precision_with_a_note() -> None:
    intel = load_profile("intel-x86-openvino")
    plan = plan_target(intel, ModelFacts(source_kind=SourceKind.TORCH), mixed_precision=True)
    assert plan.format is ModelFormat.OPENVINO and "int8/mixed" not in _labels(plan)
    assert any("mixed precision skipped" in note and "accuracy-control" in note for note in plan.notes)
    # No static int8 in the chain: nothing to mix, and nothing to say.
    jetson = plan_target(load_profile("jetson-orin-nano"), ONNX_SOURCE, mixed_precision=True)
    assert _labels(jetson) == ["fp16", "fp32"] and not any("mixed" in n for n in jetson.notes)


def test_each_node_is_probed_alone_until_there_are_too_many_then_in_contiguous_blocks() -> None:
    assert probe_groups(NODES[:3], 32) == [("conv0",), ("conv1",), ("conv2",)]
    blocks = probe_groups(NODES, 5)
    assert blocks == [
        ("conv0", "conv1", "conv2"),
        ("conv3", "conv4", "conv5"),
        ("conv6", "conv7", "conv8"),
        ("conv9", "conv10", "conv11"),
    ]
    assert [n for block in blocks for n in block] == NODES  # every node once, in graph order
    assert probe_groups([], 4) == []


def test_the_most_harmful_node_ranks_first_and_harmless_ones_are_left_out() -> None:
    probes = [
        Probe(("a",), 0.9),
        Probe(("b",), -3.0),  # quantized alone, it breaks the metric
        Probe(("c",), 1.0),  # as good as fp32: never worth keeping in float
        Probe(("d",), 0.5),
        Probe(("e",), 0.5),  # a tie keeps the graph order
    ]
    ranked = rank_probes(probes, harmless=1.0)
    assert [p.nodes for p in ranked] == [("b",), ("d",), ("e",), ("a",)]
    assert [p.nodes for p in rank_probes(probes)][-1] == ("c",)  # without a threshold, all of them


def test_the_budget_allows_a_quarter_of_the_nodes_and_at_least_one() -> None:
    budget = MixedBudget()
    assert budget.max_float_nodes(8) == 2
    assert budget.max_float_nodes(3) == 1
    assert budget.max_float_nodes(40) == 10
    assert MixedBudget(max_float_share=0.5).max_float_nodes(8) == 4


def _evaluator(passes_with: set[str], calls: list[tuple[str, ...]]):  # type: ignore[no-untyped-def]
    """A fake validation: passes once every node of ``passes_with`` is in float."""

    def evaluate(kept: tuple[str, ...]) -> Trial:
        calls.append(kept)
        return Trial(kept, score=float(len(passes_with & set(kept))), passed=passes_with <= set(kept))

    return evaluate


def test_greedy_keeps_the_fewest_nodes_in_float_in_ranking_order() -> None:
    ranking = [Probe((n,), s) for n, s in [("b", -3.0), ("d", 0.1), ("a", 0.5), ("e", 0.7)]]
    calls: list[tuple[str, ...]] = []
    selection = select_float_nodes(ranking, _evaluator({"b", "d"}, calls), max_trials=8, max_float_nodes=3)
    assert calls == [("b",), ("b", "d")]  # cumulative, worst first, stops at the first pass
    assert selection.passed and selection.best == Trial(("b", "d"), 2.0, True)
    assert selection.reason == "passed with 2 nodes in float"


def test_greedy_adds_whole_blocks() -> None:
    ranking = [Probe(("a", "b"), -1.0), Probe(("c", "d"), 0.0)]
    calls: list[tuple[str, ...]] = []
    selection = select_float_nodes(ranking, _evaluator({"c"}, calls), max_trials=8, max_float_nodes=4)
    assert calls == [("a", "b"), ("a", "b", "c", "d")] and selection.passed


@pytest.mark.parametrize(
    ("max_trials", "max_float_nodes", "tries", "reason"),
    [
        (2, 10, 2, "the budget of 2 re-quantizations ran out"),
        (10, 3, 3, "the budget of 3 float nodes would be exceeded"),
        (10, 10, 5, "every harmful node is in float and the metric still misses"),
    ],
)
def test_when_the_budget_runs_out_the_best_trial_is_kept_and_the_selection_fails(
    max_trials: int, max_float_nodes: int, tries: int, reason: str
) -> None:
    ranking = [Probe((n,), float(i)) for i, n in enumerate("abcde")]
    calls: list[tuple[str, ...]] = []
    selection = select_float_nodes(
        ranking, _evaluator({"z"}, calls), max_trials=max_trials, max_float_nodes=max_float_nodes
    )
    assert not selection.passed and len(calls) == tries and selection.reason == reason
    assert selection.best is not None and selection.best.float_nodes == ("a",)  # the scores tie: the first


def test_the_best_failing_trial_is_the_highest_scoring_one() -> None:
    trials = (Trial(("a",), -0.5, False), Trial(("a", "b"), -0.1, False), Trial(("a", "b", "c"), -0.3, False))
    assert Selection(trials, "budget").best == trials[1]
    assert Selection((), "nothing").best is None


def test_out_of_time_stops_before_the_next_trial() -> None:
    ranking = [Probe((n,), 0.0) for n in "abc"]
    calls: list[tuple[str, ...]] = []
    clock = iter([False, True])
    selection = select_float_nodes(
        ranking, _evaluator({"c"}, calls), max_trials=8, max_float_nodes=8, out_of_time=lambda: next(clock)
    )
    assert calls == [("a",)] and selection.reason == "the time budget ran out"


def test_nothing_to_rank_means_nothing_is_tried() -> None:
    calls: list[tuple[str, ...]] = []
    selection = select_float_nodes([], _evaluator(set(), calls), max_trials=8, max_float_nodes=2)
    assert calls == [] and not selection.passed and selection.best is None
    assert "no node hurt the metric" in selection.reason


def test_the_note_names_the_float_nodes_and_why_the_search_stopped() -> None:
    passed = Selection(
        (Trial(("fc4",), 0.2, False), Trial(("fc4", "fc5"), 0.5, True)), "passed with 2 nodes in float"
    )
    assert describe(["fc4", "fc5"], 8, passed, 8, 32) == (
        "int8 mixed precision passed: 2 of 8 quantizable nodes kept in float: fc4, fc5 "
        "(8 sensitivity runs on 32 calibration samples, 2 re-quantizations; passed with 2 nodes in float)"
    )
    failed = Selection((), "no node hurt the metric when quantized alone on the calibration subset")
    assert describe([], 8, failed, 8, 32).startswith(
        "int8 mixed precision no mix passed: none of 8 quantizable nodes kept in float"
    )
