"""Mixed precision for ONNX Runtime and TFLite: int8 with the fewest harmful nodes kept in float.

When plain static int8 misses the task metric's tolerance, the ``int8/mixed`` attempt recovers
it the way NNCF's accuracy control does for OpenVINO:

1. Rank. Each quantizable node (Conv, MatMul, Gemm, ...; contiguous blocks of them when the model
   has more than ``MixedBudget.max_probes``) is quantized alone, every other quantizable node kept
   in float, and the candidate is scored against the fp32 model on a small calibration subset
   with validation's own metrics (``converter.metrics.control_score``: higher is better, 0 is the
   threshold, 1 the fp32 model). The lower its score, the more harmful the node. (Quantizing one
   node alone, rather than all but one, catches a tensor that hurts wherever it is quantized:
   an activation with an outlier range is quantized as the output of the node before it and the
   input of the node after it, and keeping only one of the two in float does not help.)
2. Select. Greedy over the ranking: keep the worst node in float, re-quantize, validate on the
   evaluation set with validation's checks (``compute_metrics`` and ``judge``); then the worst two,
   and so on, until the checks pass or the budget (re-quantizations, share of the nodes, seconds)
   runs out. Then the attempt carries its best candidate, which validation rejects, and the
   chain moves on to fp16.

The ranking and the greedy selection are pure functions over measured numbers (``rank_probes``,
``select_float_nodes``); ONNX Runtime runs only in ``build_mixed``, the shell around them.

TFLite uses the same core and shell: ``converter.exporters.tflite_quantize.MixedQuantizer``
calibrates once with ai-edge-quantizer and re-quantizes with a per-op recipe (the float ops'
``no_quantize`` rules), and ``MixedCheck.open_model`` opens the candidates in LiteRT.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converter.data import Dataset, join_batches, samples_first
from converter.metrics import MetricSpec, compute_metrics, control_score, judge
from hw_profiles.schema import Tolerance
from models.bundle.manifest import TensorSpec

# --- the functional core --------------------------------------------------------------------------


@dataclass(frozen=True)
class MixedBudget:
    """What bounds the search, so that a conversion stays bounded however large the model is."""

    max_trials: int = 8  # re-quantizations validated on the evaluation set
    max_float_share: float = 0.25  # at most this share of the quantizable nodes stays in float
    max_probes: int = 32  # sensitivity runs; more nodes than this are ranked in contiguous blocks
    ranking_samples: int = 32  # calibration samples each sensitivity run scores
    max_seconds: float = 300.0  # the whole search; the ranking stops probing at half of it

    def max_float_nodes(self, node_count: int) -> int:
        """How many nodes may stay in float: the share of ``node_count``, at least one."""
        return max(1, math.floor(self.max_float_share * node_count))


@dataclass(frozen=True)
class Probe:
    """One sensitivity run: these nodes quantized, the other quantizable nodes float, the score."""

    nodes: tuple[str, ...]
    score: float


@dataclass(frozen=True)
class Trial:
    """One re-quantization validated on the evaluation set."""

    float_nodes: tuple[str, ...]
    score: float
    passed: bool


@dataclass(frozen=True)
class Selection:
    """The greedy search's outcome: every trial, in order, and why it stopped."""

    trials: tuple[Trial, ...]
    reason: str

    @property
    def passed(self) -> bool:
        return any(t.passed for t in self.trials)

    @property
    def best(self) -> Trial | None:
        """The first trial that passed (the fewest float nodes), else the best-scoring one."""
        passing = [t for t in self.trials if t.passed]
        if passing:
            return passing[0]
        return max(self.trials, key=lambda t: t.score, default=None)


def probe_groups(nodes: Sequence[str], max_probes: int) -> list[tuple[str, ...]]:
    """One group per node, or ``max_probes`` contiguous blocks (graph order) when there are more."""
    if len(nodes) <= max_probes:
        return [(n,) for n in nodes]
    size = math.ceil(len(nodes) / max_probes)
    return [tuple(nodes[i : i + size]) for i in range(0, len(nodes), size)]


def rank_probes(probes: Sequence[Probe], harmless: float | None = None) -> list[Probe]:
    """The probes, the most harmful first: the lowest score when quantized alone.

    Ties keep the graph order, so the ranking is deterministic. With ``harmless`` (the score a
    probe needs to count as harmless: the fp32 model's own), probes that reach it are left out:
    keeping them in float would cost speed and size for nothing.
    """
    kept = [p for p in probes if harmless is None or p.score < harmless]
    return sorted(kept, key=lambda p: p.score)


def select_float_nodes(
    ranking: Sequence[Probe],
    evaluate: Callable[[tuple[str, ...]], Trial],
    *,
    max_trials: int,
    max_float_nodes: int,
    out_of_time: Callable[[], bool] = lambda: False,
) -> Selection:
    """Greedy: keep the top group in float, then the top two, ... until a trial passes.

    ``evaluate`` re-quantizes with the given nodes in float and validates the result (the I/O);
    the search stops at the first pass, after ``max_trials`` trials, before it would keep more than
    ``max_float_nodes`` nodes in float, or when ``out_of_time`` says so.
    """
    if not ranking:
        return Selection((), "no node hurt the metric when quantized alone on the calibration subset")
    trials: list[Trial] = []
    kept: tuple[str, ...] = ()
    for probe in ranking:
        if len(trials) >= max_trials:
            return Selection(tuple(trials), f"the budget of {max_trials} re-quantizations ran out")
        if len(kept) + len(probe.nodes) > max_float_nodes:
            return Selection(tuple(trials), f"the budget of {max_float_nodes} float nodes would be exceeded")
        if out_of_time():
            return Selection(tuple(trials), "the time budget ran out")
        kept = (*kept, *probe.nodes)
        trial = evaluate(kept)
        trials.append(trial)
        if trial.passed:
            return Selection(tuple(trials), f"passed with {len(kept)} nodes in float")
    return Selection(tuple(trials), "every harmful node is in float and the metric still misses")


# --- the shell: ONNX Runtime ----------------------------------------------------------------------


@dataclass(frozen=True)
class MixedCheck:
    """What a candidate is judged by: validation's data, metrics and thresholds, and its runtime."""

    evaluation: Dataset
    reference: Mapping[str, np.ndarray]
    metrics: Mapping[str, MetricSpec]  # each output's chosen spec (``choose_metrics``)
    tolerance: Tolerance
    hook_limits: Mapping[str, float]
    open_model: Callable[[Path], Any]  # a runtime session (``infer``, ``close``) for an .onnx file
    batch_size: int = 64
    # The source's outputs: the axis each counts samples on in a session's outputs. ``reference``
    # and every candidate's outputs are compared with their samples on axis 0.
    outputs: Sequence[TensorSpec] = ()


@dataclass
class MixedOutcome:
    """What ``build_mixed`` leaves for the artifact and the report."""

    float_nodes: list[str]
    node_count: int
    selection: Selection
    ranking: list[Probe] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def build_mixed(
    quantizer: Any,
    out: Path,
    calibration: Dataset,
    check: MixedCheck,
    budget: MixedBudget = MixedBudget(),
    clock: Callable[[], float] = time.monotonic,
    *,
    suffix: str = ".onnx",
) -> MixedOutcome:
    """Rank ``quantizer``'s nodes, select the float ones, and write the chosen model to ``out``.

    ``quantizer`` is an ``onnx_export.StaticQuantizer`` (calibrated once): its fp32 ``base``, its
    ``nodes`` and ``quantize(path, exclude)``; or a ``tflite_quantize.MixedQuantizer``, with
    ``suffix`` ``.tflite`` for the candidates' files.
    """
    started = clock()
    deadline = started + budget.max_seconds
    ranking_deadline = started + budget.max_seconds / 2  # leave the selection its half
    nodes: list[str] = list(quantizer.nodes)
    work = out.parent / "mixed"
    work.mkdir(parents=True, exist_ok=True)
    subset = calibration.take(min(budget.ranking_samples, calibration.size))
    try:
        fp32 = _run(check, quantizer.base, subset)

        def probe_score(group: tuple[str, ...]) -> float:
            path = work / f"probe{suffix}"
            quantizer.quantize(path, [n for n in nodes if n not in group])
            got = _run(check, path, subset)
            return control_score(fp32, got, None, check.metrics, check.tolerance, check.hook_limits)

        harmless = control_score(fp32, fp32, None, check.metrics, check.tolerance, check.hook_limits)
        probes = []
        for group in probe_groups(nodes, budget.max_probes):
            if clock() > ranking_deadline:
                break
            probes.append(Probe(group, probe_score(group)))
        ranking = rank_probes(probes, harmless)

        paths: dict[tuple[str, ...], Path] = {}

        def evaluate(exclude: tuple[str, ...]) -> Trial:
            path = work / f"trial-{len(paths)}{suffix}"
            quantizer.quantize(path, exclude)
            paths[exclude] = path
            outputs = _run(check, path, check.evaluation)
            metrics = compute_metrics(
                check.reference,
                {k: outputs[k] for k in check.reference},
                check.evaluation.labels,
                metrics=check.metrics,
            )
            verdict = judge(metrics, check.tolerance, hook_limits=check.hook_limits)
            score = control_score(
                check.reference,
                outputs,
                check.evaluation.labels,
                check.metrics,
                check.tolerance,
                check.hook_limits,
            )
            return Trial(exclude, score, verdict.passed)

        selection = select_float_nodes(
            ranking,
            evaluate,
            max_trials=budget.max_trials,
            max_float_nodes=budget.max_float_nodes(len(nodes)),
            out_of_time=lambda: clock() > deadline,
        )
        best = selection.best
        if best is None:  # nothing to keep in float: the artifact is plain int8, which missed before
            quantizer.quantize(out, ())
            float_nodes: list[str] = []
        else:
            shutil.copyfile(paths[best.float_nodes], out)
            float_nodes = list(best.float_nodes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return MixedOutcome(
        float_nodes=float_nodes,
        node_count=len(nodes),
        selection=selection,
        ranking=ranking,
        notes=[describe(float_nodes, len(nodes), selection, len(probes), subset.size)],
    )


def describe(
    float_nodes: Sequence[str], node_count: int, selection: Selection, probes: int, samples: int
) -> str:
    """The report's note on the search: what stayed in float, and why the search stopped."""
    ranked = f"{probes} sensitivity runs on {samples} calibration samples"
    trials = f"{len(selection.trials)} re-quantization{'s' if len(selection.trials) != 1 else ''}"
    kept = (
        f"{len(float_nodes)} of {node_count} quantizable nodes kept in float: {', '.join(float_nodes)}"
        if float_nodes
        else f"none of {node_count} quantizable nodes kept in float"
    )
    outcome = "passed" if selection.passed else "no mix passed"
    return f"int8 mixed precision {outcome}: {kept} ({ranked}, {trials}; {selection.reason})"


def _run(check: MixedCheck, path: Path, data: Dataset) -> dict[str, np.ndarray]:
    with _session(check, path) as session:
        parts = [session.infer(feeds) for feeds in data.batches(check.batch_size)]
    return samples_first(join_batches(parts, check.outputs), check.outputs)


@contextmanager
def _session(check: MixedCheck, path: Path) -> Iterator[Any]:
    session = check.open_model(path)
    try:
        yield session
    finally:
        session.close()
