"""Task metrics (top-k, sequence, map IoU/F1, SNR, hooks), their default choice and the spec parsers."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pytest

from converter.metrics import (
    SNR_CAP_DB,
    MetricError,
    MetricSpec,
    choose_metrics,
    classifier_outputs,
    compute_metrics,
    cosine,
    default_metric,
    judge,
    load_hook,
    map_f1,
    map_iou,
    metric_function,
    metric_limit,
    parse_metric_spec,
    parse_tolerance_spec,
    sequence_agreement,
    snr_db,
    split_tolerances,
    top1_agreement,
    topk_agreement,
)
from hw_profiles.schema import Tolerance
from models.bundle.manifest import TensorSpec
from tests.support import metric_hooks

HOOK = "tests.support.metric_hooks:mean_abs_closeness"


# --- the metrics, by hand ----------------------------------------------------------------------


def test_top1_agreement_counts_matching_argmax_and_ties_pick_the_lowest_class() -> None:
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5], [0.3, 0.7]])
    got = np.array([[0.2, 0.8], [0.4, 0.6], [0.5, 0.5], [0.7, 0.3]])
    assert top1_agreement(ref, got) == pytest.approx(0.5)  # rows 0 and 2 (a tie on both sides)
    assert top1_agreement(np.zeros((3, 4)), np.zeros((3, 4))) == 1.0  # all equal: class 0 everywhere


def test_topk_agreement_asks_for_the_reference_class_among_the_candidates_k_best() -> None:
    ref = np.array([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    got = np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]])
    assert topk_agreement(ref, got, k=1) == 0.0
    assert topk_agreement(ref, got, k=3) == pytest.approx(
        0.5
    )  # class 2 is third in row 0; class 0 last in row 1
    assert topk_agreement(ref, got, k=4) == 1.0
    assert topk_agreement(ref, got, k=99) == 1.0  # k beyond the classes is all of them
    # Ties rank the lower index first, as argmax does: all-equal candidate rows hold classes 0..k-1.
    assert topk_agreement(ref, np.zeros((2, 4)), k=2) == pytest.approx(0.5)


def test_sequence_agreement_is_per_position_over_the_class_axis() -> None:
    ref = np.zeros((2, 3, 4))
    ref[0, :, 1] = 1  # sample 0: class 1 at every step
    ref[1, :, 2] = 1
    got = ref.copy()
    got[1, 0] = [0, 0, 0, 5]  # one position of six changes
    assert sequence_agreement(ref, got) == pytest.approx(5 / 6)
    assert sequence_agreement(ref, ref) == 1.0


def test_map_iou_and_f1_pool_over_samples_with_threshold() -> None:
    ref = np.zeros((2, 1, 2, 2))
    got = np.zeros((2, 1, 2, 2))
    ref[0, 0, 0, :] = 0.9  # 2 pixels
    got[0, 0, 0, 0] = 0.9  # 1 of them
    got[1, 0, 1, 1] = 0.6  # 1 extra pixel where the reference is empty
    # Pooled: intersection 1, union 3; F1 = 2*1 / (2 + 2).
    assert map_iou(ref, got) == pytest.approx(1 / 3)
    assert map_f1(ref, got) == pytest.approx(0.5)
    # A higher threshold drops the 0.6 pixel: intersection 1, union 2.
    assert map_iou(ref, got, threshold=0.7) == pytest.approx(0.5)
    # Exactly at the threshold counts as foreground.
    assert map_iou(np.full((1, 4), 0.5), np.full((1, 4), 0.5), threshold=0.5) == 1.0


def test_empty_masks_agree_and_an_empty_against_a_full_one_does_not() -> None:
    empty, full = np.zeros((3, 1, 4, 4)), np.ones((3, 1, 4, 4))
    assert map_iou(empty, empty) == 1.0 and map_f1(empty, empty) == 1.0
    assert map_iou(empty, full) == 0.0 and map_f1(full, empty) == 0.0


def test_snr_is_in_decibels_and_capped() -> None:
    ref = np.array([[3.0, 4.0]])  # signal energy 25
    assert snr_db(ref, ref + np.array([[0.5, 0.0]])) == pytest.approx(10 * math.log10(25 / 0.25))  # 20 dB
    assert snr_db(ref, ref) == SNR_CAP_DB
    assert snr_db(np.zeros((1, 2)), np.ones((1, 2))) == -SNR_CAP_DB


def test_cosine_is_the_mean_over_samples() -> None:
    ref = np.array([[1.0, 0.0], [1.0, 0.0]])
    got = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert cosine(ref, got) == pytest.approx(0.5)
    assert cosine(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def test_shapes_that_differ_in_size_are_refused() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        map_iou(np.zeros((2, 4)), np.zeros((2, 5)))


# --- default choice by shape -------------------------------------------------------------------

RNG = np.random.default_rng(7)


@pytest.mark.parametrize(
    ("values", "label"),
    [
        (RNG.normal(size=(8, 10)), "top1"),
        (RNG.normal(size=(8, 25, 37)), "sequence"),  # CTC logits [N, T, C]
        (np.log(np.full((8, 25, 37), 1 / 37)), "sequence"),  # log-softmax
        (np.full((8, 25, 4), 0.25), "sequence"),  # softmax: in [0, 1] but sums to 1 per position
        (RNG.uniform(size=(8, 1, 16, 16)), "iou:0.5"),
        (RNG.uniform(size=(8, 16, 16, 1)), "iou:0.5"),
        (RNG.uniform(size=(8, 16, 16)), "iou:0.5"),
        (RNG.normal(size=(8, 1, 16, 16)), "cosine"),  # a logit map: not probabilities
        (RNG.normal(size=(8, 1)), "cosine"),
        (RNG.normal(size=(8,)), "cosine"),
        (RNG.normal(size=(8, 3, 16, 16)), "cosine"),
    ],
)
def test_default_metric_by_shape(values: np.ndarray, label: str) -> None:
    assert default_metric(values.astype(np.float32)).label == label


def test_user_choices_override_defaults_per_output() -> None:
    reference = {"logits": RNG.normal(size=(4, 10)), "maps": RNG.uniform(size=(4, 1, 8, 8))}
    chosen = choose_metrics(reference, [])
    assert {k: v.label for k, v in chosen.items()} == {"logits": "top1", "maps": "iou:0.5"}
    chosen = choose_metrics(reference, [parse_metric_spec("maps=f1:0.3")])
    assert {k: v.label for k, v in chosen.items()} == {"logits": "top1", "maps": "f1:0.3"}
    chosen = choose_metrics(reference, [parse_metric_spec("snr"), parse_metric_spec("logits=topk:3")])
    assert {k: v.label for k, v in chosen.items()} == {"logits": "topk:3", "maps": "snr"}


def test_choices_naming_a_missing_output_or_twice_the_same_are_refused() -> None:
    reference = {"logits": RNG.normal(size=(4, 10))}
    with pytest.raises(MetricError, match=r"'probs'.*its outputs: logits"):
        choose_metrics(reference, [parse_metric_spec("probs=top1")])
    with pytest.raises(MetricError, match="two metrics"):
        choose_metrics(reference, [parse_metric_spec("logits=top1"), parse_metric_spec("logits=topk")])
    with pytest.raises(MetricError, match="more than one metric for every output"):
        choose_metrics(reference, [parse_metric_spec("top1"), parse_metric_spec("cosine")])


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "param", "output"),
    [
        ("iou", "iou", None, None),
        ("maps=iou:0.3", "iou", 0.3, "maps"),
        ("logits=topk:5", "topk", 5.0, "logits"),
        (" f1:0.25 ", "f1", 0.25, None),
        ("probs=tests.support.metric_hooks:mean_abs_closeness", HOOK, None, "probs"),
        (HOOK, HOOK, None, None),
    ],
)
def test_metric_specs_parse(text: str, name: str, param: float | None, output: str | None) -> None:
    assert parse_metric_spec(text) == MetricSpec(name=name, param=param, output=output)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ioux", "unknown metric 'ioux'; use one of top1, topk"),
        ("=iou", "names no output"),
        ("maps=", "names no metric"),
        ("top1:3", "top1 takes no parameter"),
        ("iou:high", "threshold must be a number, not 'high'"),
        ("iou:nan", "must be finite"),
        ("topk:2.5", "whole number"),
        ("topk:0", "whole number"),
        ("my-module:score", "not a Python module:function"),
        ("mymodule:", "written module:function"),
        ("a:b:c", "written module:function"),
    ],
)
def test_bad_metric_specs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(MetricError, match=message.replace("(", r"\(")):
        parse_metric_spec(text)


def test_tolerance_specs_map_to_profile_fields_or_hooks() -> None:
    assert parse_tolerance_spec("iou=0.9") == ("min_iou", 0.9)
    assert parse_tolerance_spec("min_iou=0.8") == ("min_iou", 0.8)
    assert parse_tolerance_spec("snr=25") == ("min_snr_db", 25.0)
    assert parse_tolerance_spec("accuracy_drop=2") == ("max_accuracy_drop", 2.0)
    assert parse_tolerance_spec(f"{HOOK}=0.5") == (HOOK, 0.5)
    for text, message in [
        ("iou", "not NAME=VALUE"),
        ("=0.9", "not NAME=VALUE"),
        ("iou=high", "must be a number"),
        ("iou=inf", "must be finite"),
        ("jaccard=0.9", "unknown tolerance 'jaccard'"),
    ]:
        with pytest.raises(MetricError, match=message):
            parse_tolerance_spec(text)


def test_tolerance_overrides_apply_on_top_of_the_profile_and_are_validated() -> None:
    merged, hooks = split_tolerances(Tolerance(min_cosine=0.95), {"min_iou": 0.8, HOOK: 0.5})
    assert merged.min_iou == 0.8 and merged.min_cosine == 0.95 and hooks == {HOOK: 0.5}
    with pytest.raises(MetricError, match="min_iou"):
        split_tolerances(Tolerance(), {"min_iou": 1.5})


def test_old_profiles_without_the_new_fields_keep_their_defaults() -> None:
    tolerance = Tolerance.model_validate(
        {"max_accuracy_drop": 1.0, "min_top1_agreement": 0.98, "min_cosine": 0.99}
    )
    assert (
        tolerance.min_iou == 0.9 and tolerance.min_sequence_agreement == 0.98 and tolerance.min_snr_db == 20.0
    )


# --- judging with task metrics -----------------------------------------------------------------


def _map_pair() -> tuple[np.ndarray, np.ndarray]:
    """A probability map and a candidate whose values drift (low cosine) but keep the same mask."""
    rng = np.random.default_rng(3)
    ref = rng.uniform(size=(16, 1, 8, 8)).astype(np.float32)
    got = np.where(ref >= 0.5, 0.5 + 0.5 * rng.uniform(size=ref.shape), 0.49 * rng.uniform(size=ref.shape))
    return ref, got.astype(np.float32)


def test_a_map_is_judged_by_iou_not_cosine() -> None:
    ref, got = _map_pair()
    metrics = compute_metrics({"maps": ref}, {"maps": got})
    assert metrics.cosine < 0.99  # cosine alone would refuse it
    verdict = judge(metrics, Tolerance())
    assert verdict.passed
    assert [(c.name, c.output, c.metric) for c in verdict.checks] == [("iou", "maps", "iou:0.5")]
    assert verdict.deciding is not None and verdict.deciding.name == "iou" and verdict.deciding.value == 1.0
    # The user can still ask for cosine, and then it decides.
    verdict = judge(
        compute_metrics({"maps": ref}, {"maps": got}, metrics=[parse_metric_spec("cosine")]), Tolerance()
    )
    assert not verdict.passed and verdict.deciding is not None and verdict.deciding.name == "cosine"


def test_a_classifier_keeps_its_cosine_guard_and_accuracy_drop() -> None:
    logits = RNG.normal(size=(50, 5)).astype(np.float32)
    labels = np.argmax(logits, axis=1)
    metrics = compute_metrics({"logits": logits}, {"logits": logits * 0.5 + 3}, labels)
    verdict = judge(metrics, Tolerance(min_cosine=0.999))
    assert [c.name for c in verdict.checks] == ["top1_agreement", "cosine", "accuracy_drop"]
    assert [c.name for c in verdict.checks if not c.passed] == ["cosine"]
    assert verdict.deciding is not None and verdict.deciding.name == "cosine"
    # top-k, chosen by the user, drops the guard: it is the user's notion of close enough.
    loose = compute_metrics(
        {"logits": logits}, {"logits": logits * 0.5 + 3}, labels, metrics=[parse_metric_spec("topk:2")]
    )
    verdict = judge(loose, Tolerance(min_cosine=0.999))
    assert [c.name for c in verdict.checks] == ["topk_agreement", "accuracy_drop"] and verdict.passed


def test_sequence_output_is_judged_per_position() -> None:
    ref = RNG.normal(size=(6, 10, 5)).astype(np.float32)
    got = ref.copy()
    got[0, :3] = -got[0, :3]  # three of sixty positions flip (almost surely)
    metrics = compute_metrics({"ctc": ref}, {"ctc": got})
    [score] = metrics.outputs
    assert score.metric == "sequence" and score.value == pytest.approx(57 / 60)
    assert not judge(metrics, Tolerance()).passed
    assert judge(metrics, Tolerance(min_sequence_agreement=0.95)).passed


def test_a_hook_scores_with_labels_and_needs_a_threshold() -> None:
    metric_hooks.CALLS.clear()
    ref = np.ones((4, 3), np.float32)
    metrics = compute_metrics(
        {"y": ref}, {"y": ref * 0.9}, np.zeros(4, np.int64), metrics=[parse_metric_spec(HOOK)]
    )
    assert metric_hooks.CALLS == [((4, 3), True)]
    [score] = metrics.outputs
    assert score.metric == HOOK and score.value == pytest.approx(0.9)
    verdict = judge(metrics, Tolerance(), hook_limits={HOOK: 0.95})
    assert not verdict.passed and verdict.deciding is not None and verdict.deciding.name == HOOK
    assert verdict.failures == [f"{HOOK}[y] 0.9 (needs >= 0.95): MISSED"]
    with pytest.raises(MetricError, match=f"--tolerance {HOOK}=VALUE"):
        judge(metrics, Tolerance())


def test_a_two_argument_hook_gets_no_labels_and_a_non_number_is_refused() -> None:
    ref = np.ones((2, 2))
    two = metric_function(parse_metric_spec("tests.support.metric_hooks:always_low"))
    assert two(ref, ref, np.zeros(2, np.int64)) == 0.0
    bad = metric_function(parse_metric_spec("tests.support.metric_hooks:not_a_number"))
    with pytest.raises(MetricError, match="returned 'high', not a number"):
        bad(ref, ref, None)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("tests.support.no_such_module:score", "cannot import module 'tests.support.no_such_module'"),
        ("tests.support.broken_hook_module:score", "broken on purpose"),
        ("tests.support.metric_hooks:missing", "metric_hooks.missing does not exist"),
        ("tests.support.metric_hooks:NOT_CALLABLE", "is not callable"),
    ],
)
def test_an_unimportable_hook_names_the_module_or_function(ref: str, message: str) -> None:
    with pytest.raises(MetricError, match=message):
        load_hook(ref)


def test_builtin_limits_come_from_the_tolerance() -> None:
    tolerance = Tolerance(min_iou=0.7, min_snr_db=30)
    assert metric_limit(parse_metric_spec("iou:0.2"), tolerance) == 0.7
    assert metric_limit(parse_metric_spec("snr"), tolerance) == 30


# --- NNCF accuracy control scores with the same checks ------------------------------------------


def test_control_score_is_one_for_a_copy_zero_at_the_threshold_and_negative_below() -> None:
    from converter.metrics import control_score

    ref = {"maps": np.zeros((1, 1, 1, 10))}
    ref["maps"][..., :10] = 0.9
    chosen = {"maps": parse_metric_spec("iou")}
    tolerance = Tolerance(min_iou=0.8)
    assert control_score(ref, ref, None, chosen, tolerance) == pytest.approx(1.0)
    at_limit = {"maps": ref["maps"].copy()}
    at_limit["maps"][..., :2] = 0.1  # IoU 8/10: exactly the threshold
    assert control_score(ref, at_limit, None, chosen, tolerance) == pytest.approx(0.0)
    below = {"maps": ref["maps"].copy()}
    below["maps"][..., :4] = 0.1  # IoU 0.6
    assert control_score(ref, below, None, chosen, tolerance) == pytest.approx(-1.0)
    # A classifier's score is the worse of top-1 and its cosine guard, each scaled to its own threshold.
    logits = {"y": np.array([[2.0, 1.0], [1.0, 2.0]])}
    flipped = {"y": np.array([[2.0, 1.0], [2.0, 1.0]])}
    score = control_score(
        logits, flipped, None, {"y": parse_metric_spec("top1")}, Tolerance(min_top1_agreement=0.5)
    )
    assert score == pytest.approx(min((0.5 - 0.5) / 0.5, (0.9 - 0.99) / 0.01))


def test_nncf_validation_function_scores_the_items_it_is_given() -> None:
    from converter.data import Dataset
    from converter.exporters.openvino_export import _validation_fn
    from converter.passes import _control_scorer

    rng = np.random.default_rng(5)
    reference = {"maps": rng.uniform(size=(6, 1, 4, 4)).astype(np.float32)}
    evaluation = Dataset("eval", {"image": np.zeros((6, 1, 4, 4), np.float32)})
    outputs = [TensorSpec(name="maps", dtype="float32", shape=[-1, 1, 4, 4])]
    _, scorer, max_drop = _control_scorer(evaluation, reference, outputs, Tolerance(min_iou=0.5), None, None)
    assert max_drop == pytest.approx(1.0)

    class Port:
        def get_any_name(self) -> str:
            return "maps"

    class Compiled:
        """Returns the reference rows of the samples it is fed (by their row, carried in the input)."""

        outputs: ClassVar[list[Port]] = [Port()]

        def __call__(self, feeds: dict[str, np.ndarray]) -> dict[Port, np.ndarray]:
            rows = feeds["image"][:, 0, 0, 0].astype(int)
            got = reference["maps"][rows].copy()
            got[rows == 3] = 1 - got[rows == 3]  # sample 3 comes out inverted
            return {self.outputs[0]: got}

    items = [((row, row + 1), {"image": np.full((1, 1, 4, 4), row, np.float32)}) for row in range(6)]
    overall, per_item = _validation_fn(scorer)(Compiled(), items)
    assert (
        len(per_item) == 6
        and per_item[3] < 0
        and all(v == pytest.approx(1.0) for i, v in enumerate(per_item) if i != 3)
    )
    assert per_item[0] > overall > per_item[3]
    # A subset NNCF picks is scored against the same rows of the reference.
    subset, _ = _validation_fn(scorer)(Compiled(), [items[1], items[4]])
    assert subset == pytest.approx(1.0)


def test_class_histograms_follow_the_metric_that_judged_each_output() -> None:
    """An ``[N, C]`` output judged by cosine (an embedding) is not a classifier for the drift
    reference; one judged by top-1/top-k is, and a hook or no task metric leaves it to the shape."""
    rng = np.random.default_rng(0)
    outputs = {
        "scores": rng.random((6, 5)),
        "embedding": rng.random((6, 384)),
        "map": rng.random((6, 1, 4, 4)),
    }
    specs = {"scores": MetricSpec(name="topk", param=3), "embedding": MetricSpec(name="cosine")}
    metrics = compute_metrics(outputs, outputs, metrics={**specs, "map": MetricSpec(name="iou")})
    assert classifier_outputs(outputs, metrics) == {"scores"}
    hooked = compute_metrics(outputs, outputs, metrics={**specs, "embedding": MetricSpec(name=HOOK)})
    assert classifier_outputs(outputs, hooked) == {"scores", "embedding"}
    assert classifier_outputs(outputs, None) == {"scores", "embedding"}
