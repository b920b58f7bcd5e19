"""The workflow: compose the passes, walk each profile's fallback chain, write the report.

For each profile the attempts of its plan run in order (export → quantize → validate) until one
passes; that one is benchmarked and packaged. A failed build or a missed tolerance is recorded
and the next attempt runs. When an export fails outright (an operator the format cannot lower)
and the profile allows other formats, the profile is re-planned with the next format. When
every static int8 attempt of a format misses (or fails to build), the int8 of the profile's other
formats is tried before any float precision: int8 is most of what a Pi or an x86 box gains. When
nothing passes, the profile fails with a clear error, unless ``allow_degraded`` packages the
closest attempt and marks it degraded.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter.context import AttemptState, ConversionContext, TargetState
from converter.errors import ConversionError
from converter.metrics import MetricError, MetricSpec, load_hook, parse_metric_spec, parse_tolerance_spec
from converter.packaging import PackageConfig, PackagePass
from converter.passes import (
    BenchmarkConfig,
    BenchmarkPass,
    ExportConfig,
    ExportPass,
    LoadConfig,
    LoadPass,
    MetricsPass,
    Pass,
    PlanConfig,
    PlanPass,
    QuantizeConfig,
    QuantizePass,
    ValidateConfig,
    ValidatePass,
    metric_error,
    plan_summary,
    with_toolchain_notes,
)
from converter.planning import Attempt, CalibrationMethod, TargetPlan, plan_target
from converter.progress import NullProgress, Progress
from converter.report import AttemptRecord, ConversionReport, ProfileResult
from converter.signature import parse_input_spec, parse_state_pairs
from hw_profiles.schema import ModelFormat, Precision, Tolerance
from models.bundle.manifest import Preprocessing, TensorSpec

WORK_DIR = "artifacts"
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")  # as Manifest.name


class ConversionFailed(ConversionError):
    """At least one profile got no bundle; ``report`` says what happened to every profile."""

    def __init__(self, first: ConversionError, report: ConversionReport) -> None:
        failed = [p.profile for p in report.profiles if p.status == "failed"]
        super().__init__(
            f"{len(failed)} of {len(report.profiles)} profile(s) failed "
            f"({', '.join(failed)}): {first.headline()}",
            step=first.step,
            hint=first.hint,
            format=first.format,
            profile=first.profile,
        )
        self.first = first
        self.report = report


@dataclass
class Workflow:
    """Passes in three groups: once (load, plan), per attempt (export, quantize, validate), per chosen."""

    prepare: list[Pass[Any]]
    build: list[Pass[Any]]
    finish: list[Pass[Any]]
    allow_degraded: bool = False
    formats: list[ModelFormat] | None = None
    precisions: list[Precision] | None = None
    calibrations: list[CalibrationMethod] | None = None
    mixed_precision: bool = False
    errors: list[ConversionError] = field(default_factory=list)

    def run(self, ctx: ConversionContext) -> list[ProfileResult]:
        for step in self.prepare:
            step.run(ctx)
        for line in plan_summary([t.require_plan() for t in ctx.targets]):
            ctx.progress.log(f"plan {line}")
        results = []
        for target in ctx.targets:
            ctx.target = target
            results.append(self._run_target(ctx, target))
        ctx.target = None
        return results

    def _run_target(self, ctx: ConversionContext, target: TargetState) -> ProfileResult:
        notes: list[str] = []
        try:
            self._walk_chain(ctx, target, notes)
            for step in self.finish:
                step.run(ctx)
        except ConversionError as exc:
            if exc.profile is None:
                exc.profile = target.profile.name
            self.errors.append(exc)
            ctx.progress.log(exc.headline(), level="error")
            return _result(target, notes, error=exc)
        chosen = target.chosen
        assert chosen is not None
        verdict = "degraded" if target.degraded else "packaged"
        ctx.progress.log(
            f"{verdict} {target.profile.name}: {chosen.attempt.format.value} {chosen.attempt.label}",
            level="warn" if target.degraded else "ok",
        )
        return _result(target, notes)

    def _walk_chain(self, ctx: ConversionContext, target: TargetState, notes: list[str]) -> None:
        looked_elsewhere = False
        plans: dict[ModelFormat, TargetPlan] = {}  # each format tried, for packaging its attempt
        while True:
            plan = target.require_plan()
            plans[plan.format] = plan
            notes.extend(n for n in plan.notes if n not in notes)
            try:
                for attempt in plan.attempts:
                    if not looked_elsewhere and _int8_done(target, attempt):
                        looked_elsewhere = True
                        if self._int8_in_other_formats(ctx, target, notes, plans):
                            return
                    state = AttemptState(attempt)
                    target.attempts.append(state)
                    if self._try(ctx, state) and state.passed:
                        target.chosen = state
                        return
                break
            except ConversionError as exc:  # the format's fp32 export failed: nothing else can work
                if exc.step != "export" or not self._replan(ctx, target, exc, notes):
                    raise
        if (
            not looked_elsewhere
            and _int8_done(target, None)
            and self._int8_in_other_formats(ctx, target, notes, plans)
        ):
            return
        self._settle_without_pass(target, plans)

    def _int8_in_other_formats(
        self,
        ctx: ConversionContext,
        target: TargetState,
        notes: list[str],
        plans: dict[ModelFormat, TargetPlan],
    ) -> bool:
        """Every int8 attempt of the plan's format missed or failed: try the int8 of the profile's
        other formats before any float one (on a Pi, ONNX Runtime's int8 before TFLite's fp16).
        True when one passed; it is chosen, and its format's plan becomes the target's."""
        plan = target.require_plan()
        tried = {state.attempt.format for state in target.attempts}
        for fmt in [f for f in self.formats or target.profile.formats if f not in tried]:
            try:
                other = with_toolchain_notes(
                    target.profile,
                    plan_target(
                        target.profile,
                        ctx.require_source().facts(),
                        formats=[fmt],
                        precisions=[Precision.INT8],
                        calibrations=self.calibrations,
                        mixed_precision=self.mixed_precision,
                    ),
                )
            except ConversionError:
                continue
            target.plan = plans[fmt] = other
            try:
                # The plan adds its float fallbacks even to int8 alone; those come after this format's.
                for attempt in [a for a in other.attempts if a.precision is Precision.INT8]:
                    state = AttemptState(attempt)
                    target.attempts.append(state)
                    if self._try(ctx, state) and state.passed:
                        target.chosen = state
                        notes.append(f"{plan.format.value} int8 missed; {fmt.value} int8 passed")
                        return True
            except ConversionError as exc:
                notes.append(f"{fmt.value} int8 not built: its export failed ({exc.message})")
            target.plan = plan
        return False

    def _try(self, ctx: ConversionContext, state: AttemptState) -> bool:
        try:
            for step in self.build:
                step.run(ctx)
        except ConversionError as exc:
            state.finished = time.perf_counter()
            state.error = exc.to_dict()
            if exc.step == "export":
                raise
            ctx.progress.log(
                f"failed {state.attempt.format.value} {state.attempt.label}: {exc.message}", level="warn"
            )
            return False
        state.finished = time.perf_counter()
        assert state.verdict is not None
        if not state.passed:
            ctx.progress.log(
                f"missed {ctx.require_target().profile.name} {state.attempt.format.value} "
                f"{state.attempt.label}: {'; '.join(state.verdict.failures)}",
                level="warn",
            )
        return True

    def _replan(
        self, ctx: ConversionContext, target: TargetState, exc: ConversionError, notes: list[str]
    ) -> bool:
        """Move on to the next format the profile allows after an export failure; False when none is left."""
        plan = target.require_plan()
        order = self.formats or target.profile.formats
        remaining = order[order.index(plan.format) + 1 :] if plan.format in order else []
        if not remaining:
            return False
        try:
            target.plan = with_toolchain_notes(
                target.profile,
                plan_target(
                    target.profile,
                    ctx.require_source().facts(),
                    formats=remaining,
                    precisions=self.precisions,
                    calibrations=self.calibrations,
                    mixed_precision=self.mixed_precision,
                ),
            )
        except ConversionError:
            return False
        notes.append(
            f"{plan.format.value} export failed ({exc.message}); fell back to {target.plan.format.value}"
        )
        ctx.progress.log(f"fallback {target.profile.name}: {notes[-1]}", level="warn")
        return True

    def _settle_without_pass(self, target: TargetState, plans: dict[ModelFormat, TargetPlan]) -> None:
        validated = [s for s in target.attempts if s.metrics is not None and s.outputs is not None]
        summary = "; ".join(
            f"{s.attempt.label}: "
            + ("; ".join(s.verdict.failures) if s.verdict else str((s.error or {}).get("message")))
            for s in target.attempts
        )
        if self.allow_degraded and validated:
            target.chosen = max(validated, key=_closeness)
            target.degraded = True
            # Packaging follows the plan: the one of the chosen attempt's format.
            target.plan = plans.get(target.chosen.attempt.format, target.plan)
            return
        raise ConversionError(
            f"no attempt met the tolerance of {target.profile.name} ({summary})",
            step="validate",
            format=target.require_plan().format.value,
            profile=target.profile.name,
            hint="give a larger, more representative calibration set, relax the profile's tolerance, "
            "allow a wider --precision, or pass --allow-degraded to package the closest attempt anyway",
        )


def _closeness(state: AttemptState) -> tuple[float, float]:
    metrics = state.metrics
    assert metrics is not None
    agreement = metrics.top1_agreement if metrics.top1_agreement is not None else 1.0
    return agreement, metrics.cosine


def _int8_done(target: TargetState, upcoming: Attempt | None) -> bool:
    """Static int8 has been tried, none passed, and what comes next (if anything) is not static int8."""
    tried_int8 = any(state.attempt.precision is Precision.INT8 for state in target.attempts)
    return tried_int8 and (upcoming is None or upcoming.precision is not Precision.INT8)


def _result(target: TargetState, notes: list[str], error: ConversionError | None = None) -> ProfileResult:
    plan = target.plan
    records = [_record(target, state) for state in target.attempts]
    status = "failed" if error else ("degraded" if target.degraded else "packaged")
    return ProfileResult(
        profile=target.profile.name,
        status=status,
        format=plan.format if plan else None,
        runtime=plan.runtime if plan else None,
        plan_notes=notes,
        attempts=records,
        bundle=target.bundle if not error else None,
        error=error.to_dict() if error else None,
    )


def _record(target: TargetState, state: AttemptState) -> AttemptRecord:
    chosen = state is target.chosen
    if chosen and target.bundle is not None:
        decision = "degraded" if target.degraded else "packaged"
    elif state.error is not None or state.verdict is None:
        decision = "failed"
    else:
        decision = "rejected"
    reasons = list(state.verdict.failures) if state.verdict else []
    if state.error is not None:
        reasons.append(str(state.error.get("message", "")).splitlines()[0])
    artifact = state.artifact
    return AttemptRecord(
        format=state.attempt.format,
        precision=state.attempt.precision,
        calibration=state.attempt.calibration,
        mixed=state.attempt.mixed,
        decision=decision,
        reasons=reasons,
        metrics=state.metrics,
        checks=state.verdict.checks if state.verdict else [],
        size_bytes=artifact.size_bytes if artifact and artifact.model_path.exists() else None,
        sha256=artifact.sha256() if artifact and artifact.model_path.exists() else {},
        provider=state.provider,
        runtime_notes=state.runtime_notes,
        float_nodes=list(artifact.float_nodes) if artifact else [],
        benchmark=state.benchmark,
        seconds=round(state.seconds, 3),
        error=state.error,
    )


def convert(
    source: Any,
    profiles: Sequence[Any],
    calib: Path | str,
    eval: Path | str,
    out_dir: Path | str,
    key: Path | str,
    *,
    formats: Sequence[ModelFormat | str] | None = None,
    precisions: Sequence[Precision | str] | None = None,
    calibrations: Sequence[CalibrationMethod | str] | None = None,
    mixed_precision: bool | None = None,
    allow_degraded: bool = False,
    progress: Progress | None = None,
    inputs: Sequence[TensorSpec | str] | None = None,
    output_names: Sequence[str] | None = None,
    states: Sequence[str] | Mapping[str, str] | None = None,
    name: str | None = None,
    version: str = "1.0.0",
    preprocessing: Preprocessing | None = None,
    tolerance: Tolerance | None = None,
    benchmark_iterations: int = 100,
    metrics: Sequence[MetricSpec | str] | None = None,
    tolerances: Mapping[str, float] | Sequence[str] | None = None,
) -> ConversionReport:
    """Convert ``source`` for each profile into a signed bundle in ``out_dir``; return the report.

    ``source``: an ``nn.Module``, ``package.module:attr`` (an instance or a factory), or a path to
    a ``.pt2``, TorchScript ``.pt`` or ``.onnx`` file. ``profiles``: names, YAML paths or
    ``HardwareProfile`` objects. ``calib``/``eval``: ``.npz`` files with one array per input
    (``eval`` may add ``labels``). ``key``: the Ed25519 private key that signs the bundles.
    ``formats``/``precisions`` override the profiles' preferences; ``calibrations`` narrows (and
    orders) the static int8 calibration methods tried (``minmax``, ``entropy``, ``percentile``, ...);
    ``mixed_precision`` ends static int8 with ``int8/mixed`` (ONNX and TFLite: the nodes or ops that hurt
    the metric most kept in float; None, the default, tries it unless ``calibrations`` narrowed them);
    ``inputs`` (``TensorSpec`` or ``name:1x3x224x224:float32``) describe a PyTorch model's inputs when
    the data cannot (``state:2xNx128:float32`` puts the batch on axis 1, ``sr::int64`` is a scalar);
    ``states`` (``["stateN=state"]`` or ``{"stateN": "state"}``) pair an output with the input it
    feeds on the next call, for recurrent models: validation then runs the data as a stream.

    ``metrics`` choose how each output is judged (``MetricSpec`` or ``"iou:0.3"``,
    ``"maps=iou:0.3"``, ``"logits=topk:5"``, ``"probs=mymodule:score"``; docs/converter.md,
    "Choosing the metric"); ``tolerances`` set thresholds over the profiles' (``{"iou": 0.9}`` or
    ``["iou=0.9", "mymodule:score=0.8"]``).

    Writes ``<name>-<version>-<profile>.efb`` per profile, ``report.json`` and ``report.md``.
    Raises ``ConversionError`` for bad input (before anything is built), and ``ConversionFailed``
    (carrying the report, which is written first) when some profile got no bundle.
    """
    out = Path(out_dir)
    progress = progress or NullProgress()
    specs = [parse_input_spec(i) if isinstance(i, str) else i for i in inputs] if inputs else None
    fmt_list = [ModelFormat(f) for f in formats] if formats else None
    precision_list = [Precision(p) for p in precisions] if precisions else None
    calibration_list = [CalibrationMethod(c) for c in calibrations] if calibrations else None
    mixed = calibration_list is None if mixed_precision is None else mixed_precision
    ctx = ConversionContext(out_dir=out, work_dir=out / WORK_DIR, progress=progress)
    if ctx.work_dir.exists():
        shutil.rmtree(ctx.work_dir)
    _check_package_inputs(version, Path(key))
    if name is not None:
        _check_name(name)
    metric_specs, tolerance_overrides = _metric_options(metrics, tolerances)
    choice = {"metrics": metric_specs, "tolerance": tolerance, "tolerances": tolerance_overrides}
    workflow = Workflow(
        prepare=[
            LoadPass(
                LoadConfig(
                    source=source,
                    calibration=Path(calib),
                    evaluation=Path(eval),
                    inputs=specs,
                    output_names=output_names,
                    states=parse_state_pairs(states),
                )
            ),
            PlanPass(
                PlanConfig(
                    profiles=list(profiles),
                    formats=fmt_list,
                    precisions=precision_list,
                    calibrations=calibration_list,
                    mixed_precision=mixed,
                )
            ),
            MetricsPass(ValidateConfig(**choice)),
        ],
        build=[
            ExportPass(ExportConfig()),
            QuantizePass(QuantizeConfig(**choice)),
            ValidatePass(ValidateConfig(**choice)),
        ],
        finish=[
            BenchmarkPass(
                BenchmarkConfig(iterations=benchmark_iterations, warmup=min(10, benchmark_iterations))
            ),
            PackagePass(
                PackageConfig(
                    name=name,
                    version=version,
                    key=Path(key),
                    preprocessing=preprocessing or Preprocessing(),
                )
            ),
        ],
        allow_degraded=allow_degraded,
        formats=fmt_list,
        precisions=precision_list,
        calibrations=calibration_list,
        mixed_precision=mixed,
    )
    results = workflow.run(ctx)
    report = build_report(ctx, results, name=name or ctx.require_source().name, version=version)
    report.write(out)
    if workflow.errors:
        raise ConversionFailed(workflow.errors[0], report)
    return report


def _metric_options(
    metrics: Sequence[MetricSpec | str] | None, tolerances: Mapping[str, float] | Sequence[str] | None
) -> tuple[list[MetricSpec] | None, dict[str, float] | None]:
    """Parse ``metrics`` and ``tolerances`` and import the users' functions, before anything runs."""
    try:
        specs = [parse_metric_spec(m) if isinstance(m, str) else m for m in metrics] if metrics else None
        if tolerances is None:
            overrides = None
        elif isinstance(tolerances, Mapping):
            overrides = dict(parse_tolerance_spec(f"{k}={v}") for k, v in tolerances.items())
        else:
            overrides = dict(parse_tolerance_spec(t) for t in tolerances)
        for spec in specs or []:
            if spec.is_hook:
                load_hook(spec.name)
    except MetricError as exc:
        raise metric_error(exc) from exc
    return specs, overrides or None


def _check_package_inputs(version: str, key: Path) -> None:
    """Fail before any model is built when the bundle could not be written anyway."""
    from models.bundle import BundleError, load_private_key
    from models.versioning import VersionError, parse_version

    try:
        parse_version(version)
    except VersionError as exc:
        raise ConversionError(str(exc), step="package", hint="use a semantic version such as 1.0.0") from exc
    if not key.is_file():
        raise ConversionError(
            f"signing key {key} does not exist",
            step="package",
            hint="create one with `edgefleet keys generate`, or pass --key with the right path",
        )
    try:
        load_private_key(key)
    except BundleError as exc:
        raise ConversionError(
            f"cannot use the signing key {key}: {exc.message}", step="package", hint=exc.hint or ""
        ) from exc


def _check_name(name: str) -> None:
    if not _MODEL_NAME.fullmatch(name) or len(name) > 128:
        raise ConversionError(
            f"model name {name!r} is not allowed in a bundle",
            step="package",
            hint="use lower-case letters, digits, '.', '_' and '-' (pass --name)",
        )


def build_report(
    ctx: ConversionContext, results: list[ProfileResult], *, name: str, version: str
) -> ConversionReport:
    """The report of a finished workflow run (written by the caller)."""
    from converter.benchmark import host_info
    from converter.metrics import compute_metrics

    calibration, evaluation, reference = ctx.require_data()
    return ConversionReport(
        name=name,
        version=version,
        source=ctx.require_source().description,
        out_dir=str(ctx.out_dir),
        host=host_info(),
        calibration_samples=calibration.size,
        evaluation_samples=evaluation.size,
        reference_accuracy=compute_metrics(reference, reference, evaluation.labels).accuracy,
        profiles=results,
    )
