"""The conversion steps as passes: load → plan → export → quantize → validate → benchmark → package.

Each pass is a small class with a typed (pydantic) config and a ``run`` over the
``ConversionContext``, as in Olive. Load and plan run once; export, quantize and validate run per
attempt of the current target; benchmark and package run once per target, on the attempt the
workflow chose. ``converter.workflow`` composes them.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from converter.artifacts import Artifact
from converter.context import ConversionContext, TargetState
from converter.data import (
    Dataset,
    check_dataset,
    join_batches,
    read_npz,
    run_sequence,
    samples_first,
    spread_initial_states,
    take_samples,
)
from converter.errors import ConversionError, describe_failure
from converter.metrics import (
    MetricError,
    MetricSpec,
    choose_metrics,
    compute_metrics,
    control_score,
    judge,
    load_hook,
    metric_limit,
    split_tolerances,
)
from converter.outputs import settle_outputs
from converter.planning import CalibrationMethod, SourceKind, TargetPlan, plan_target
from converter.quiet import quiet
from converter.signature import OutputDeclaration, batch_first, interface_signature, pair_states
from converter.sources import REFERENCE_BATCH, SourceModel, load_source
from hw_profiles.schema import AcceleratorKind, HardwareProfile, ModelFormat, Precision, Tolerance
from models.bundle.manifest import TensorSpec

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class Pass(ABC, Generic[ConfigT]):
    """A conversion step: ``step`` names it in errors and progress; ``config`` tunes it."""

    step: ClassVar[str]

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    @abstractmethod
    def run(self, ctx: ConversionContext) -> None: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


# --- load ---------------------------------------------------------------------------------------


class LoadConfig(_Config):
    source: Any = Field(description="nn.Module, package.module:attr, or a .pt2/.pt/.onnx path.")
    calibration: Path
    evaluation: Path
    inputs: list[TensorSpec] | None = None
    output_names: list[str] | None = None
    output_specs: list[OutputDeclaration] = Field(
        default_factory=list, description="Outputs declared with a shape (--output name:shape[:dtype])."
    )
    states: dict[str, str] = Field(
        default_factory=dict, description="Recurrent state: output name -> the input it feeds next call."
    )


class LoadPass(Pass[LoadConfig]):
    """Read the data, load the model, check one against the other, and run the fp32 reference."""

    step = "load"

    def run(self, ctx: ConversionContext) -> None:
        cfg = self.config
        calib_arrays = read_npz(Path(cfg.calibration), "calibration")
        eval_arrays = read_npz(Path(cfg.evaluation), "evaluation")
        with ctx.progress.task("load the model"), quiet():
            source = load_source(
                cfg.source, inputs=cfg.inputs, output_names=cfg.output_names, sample_arrays=calib_arrays
            )
        if cfg.states:
            fed = set(cfg.states.values())
            calib_arrays = spread_initial_states(calib_arrays, source.inputs, fed)
            eval_arrays = spread_initial_states(eval_arrays, source.inputs, fed)
        ctx.source = source
        ctx.calibration = check_dataset(
            calib_arrays, source.inputs, role="calibration", source=str(cfg.calibration)
        )
        ctx.evaluation = check_dataset(
            eval_arrays, source.inputs, role="evaluation", source=str(cfg.evaluation)
        )
        with ctx.progress.task("find the outputs' batch axes"), quiet():
            # What the original returns, not what its file declares, says which axis counts samples.
            source.notes.extend(settle_outputs(source, ctx.calibration, cfg.output_specs))
        if cfg.states:
            source.outputs = pair_states(source.inputs, source.outputs, cfg.states)
        with ctx.progress.task("run the fp32 original on the evaluation set", total=1) as advance, quiet():
            if cfg.states:
                # A stream: the samples run in order, each fed the state the previous one returned.
                # The data then holds the states the original saw, so every later step (calibration,
                # validation, golden I/O) can judge each sample on its own.
                ctx.calibration, _ = run_sequence(source.run, ctx.calibration, cfg.states, source.outputs)
                ctx.evaluation, ctx.reference = run_sequence(
                    source.run, ctx.evaluation, cfg.states, source.outputs
                )
            else:
                ctx.reference = reference_outputs(source, ctx.evaluation)
            advance(1)


# --- plan ---------------------------------------------------------------------------------------


class PlanConfig(_Config):
    profiles: list[Any] = Field(
        min_length=1, description="Profile names, YAML paths or HardwareProfile objects."
    )
    formats: list[ModelFormat] | None = None
    precisions: list[Precision] | None = None
    calibrations: list[CalibrationMethod] | None = Field(
        default=None, description="Static int8 calibration methods to try (default: the toolchain's)."
    )
    mixed_precision: bool = Field(
        default=False,
        description="End static int8 with int8/mixed (ONNX, TFLite: harmful nodes in float).",
    )


class PlanPass(Pass[PlanConfig]):
    """Resolve every profile and decide what to build for it (``converter.planning``)."""

    step = "plan"

    def run(self, ctx: ConversionContext) -> None:
        facts = ctx.require_source().facts()
        profiles = [resolve_profile(p) for p in self.config.profiles]
        names = [p.name for p in profiles]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConversionError(
                f"profile {duplicates[0]} is given twice",
                step="plan",
                hint="name each profile once; each gets one bundle",
            )
        ctx.targets = [
            TargetState(
                profile=p,
                plan=with_toolchain_notes(
                    p,
                    plan_target(
                        p,
                        facts,
                        formats=self.config.formats,
                        precisions=self.config.precisions,
                        calibrations=self.config.calibrations,
                        mixed_precision=self.config.mixed_precision,
                    ),
                ),
            )
            for p in profiles
        ]


EDGETPU_COMPILER = "edgetpu_compiler"


def with_toolchain_notes(profile: HardwareProfile, plan: TargetPlan) -> TargetPlan:
    """Say what the bundle cannot do because a vendor compiler is missing on this machine."""
    wants_tpu = any(a.kind is AcceleratorKind.TPU for a in profile.accelerators)
    if not wants_tpu or plan.format is not ModelFormat.TFLITE:
        return plan
    compiler = shutil.which(EDGETPU_COMPILER)
    state = (
        f"found at {compiler}, but not run" if compiler else "not installed (not on PyPI; x86-64 Linux only)"
    )
    note = (
        f"{EDGETPU_COMPILER} {state}: the bundle holds the full-integer model, which runs on the CPU; "
        f"run `{EDGETPU_COMPILER} model.tflite` to map it onto the Edge TPU"
    )
    return plan.model_copy(update={"notes": [*plan.notes, note]})


def resolve_profile(profile: Any) -> HardwareProfile:
    if isinstance(profile, HardwareProfile):
        return profile
    from hw_profiles import ProfileError, load_profile

    try:
        return load_profile(profile)
    except ProfileError as exc:
        raise ConversionError(
            str(exc.message),
            step="plan",
            hint=exc.hint or "list the known profiles with `edgefleet profiles list`",
        ) from exc


# --- export -------------------------------------------------------------------------------------


class ExportConfig(_Config):
    opset: int = Field(default=18, ge=13, description="ONNX opset for the PyTorch exporter.")


class ExportPass(Pass[ExportConfig]):
    """Export the fp32 base of the target's format once (cached across attempts and profiles).

    ONNX starts from the fp32 ONNX model; OpenVINO from an fp32 IR converted from it (or from
    Keras); TFLite from the fp32 TFLite model, which also proves early that every operator lowers.
    """

    step = "export"

    def run(self, ctx: ConversionContext) -> None:
        plan = ctx.require_target().require_plan()
        self.base(ctx, plan.format, plan.batch)

    def base(self, ctx: ConversionContext, fmt: ModelFormat, batch: int | None) -> Path:
        key = (fmt.value, batch)
        if key in ctx.base_exports:
            return ctx.base_exports[key]
        source = ctx.require_source()
        onnx_base = None
        if fmt is ModelFormat.OPENVINO and source.kind not in (SourceKind.KERAS, SourceKind.SAVED_MODEL):
            onnx_base = self.base(ctx, ModelFormat.ONNX, batch)
        directory = ctx.work_dir / "base" / f"{fmt.value}-{_batch_slug(batch)}"
        _fresh(directory)
        with ctx.progress.task(f"export fp32 {fmt.value} ({_batch_slug(batch)})"):
            if fmt is ModelFormat.TFLITE:
                from converter.exporters.tflite_export import export_tflite

                path = export_tflite(source, directory, batch=batch or 1)
            elif fmt is ModelFormat.OPENVINO:
                path = _export_openvino(source, directory, batch, onnx_base)
            else:
                from converter.exporters.onnx_export import export_onnx

                path = export_onnx(source, directory, batch=batch, opset=self.config.opset)
        ctx.base_exports[key] = path
        return path


def _export_openvino(source: SourceModel, directory: Path, batch: int | None, onnx_base: Path | None) -> Path:
    """The fp32 IR: from the ONNX base, or straight from the Keras model or the SavedModel."""
    from converter.exporters.openvino_export import export_openvino
    from converter.exporters.saved_model import resign_saved_model
    from converter.exporters.tflite_export import keras_export_model

    # The IR's tensors are named as the source's (OpenVINO may give a tensor several names).
    inputs, outputs = [s.name for s in source.inputs], [s.name for s in source.outputs]
    if onnx_base is not None:
        return export_openvino(directory, onnx=onnx_base, input_names=inputs, output_names=outputs)
    if source.kind is SourceKind.SAVED_MODEL:
        try:
            with quiet():
                resigned = resign_saved_model(source, directory / "source", batch=batch)
        except Exception as exc:
            raise ConversionError(
                f"the SavedModel could not be re-signed for export: {describe_failure(exc)}",
                step="export",
                format=ModelFormat.OPENVINO.value,
                hint="check that its serving_default signature runs on the calibration inputs",
            ) from exc
        path = export_openvino(directory, saved_model=resigned, input_names=inputs, output_names=outputs)
        shutil.rmtree(directory / "source")  # the IR does not refer to it
        return path
    with quiet():
        wrapped = keras_export_model(source, batch, dict_outputs=False)
    return export_openvino(directory, keras_model=wrapped, input_names=inputs, output_names=outputs)


# --- quantize -----------------------------------------------------------------------------------


class QuantizeConfig(_Config):
    max_calibration_samples: int | None = Field(
        default=None, gt=0, description="Cap on the profile's calibration_samples."
    )
    metrics: list[MetricSpec] | None = Field(
        default=None, description="The metrics validation judges by (for NNCF's accuracy control)."
    )
    tolerance: Tolerance | None = Field(default=None, description="Overrides every profile's tolerance.")
    tolerances: dict[str, float] | None = Field(
        default=None, description="Threshold overrides, as validation's."
    )


class QuantizePass(Pass[QuantizeConfig]):
    """Build the current attempt's artifact (fp32 copy, fp16, int8 with its calibration method)."""

    step = "quantize"

    def run(self, ctx: ConversionContext) -> None:
        target = ctx.require_target()
        plan, state = target.require_plan(), target.current
        attempt, source = state.attempt, ctx.require_source()
        calibration, evaluation, reference = ctx.require_data()
        samples = min(
            plan.calibration_samples, self.config.max_calibration_samples or plan.calibration_samples
        )
        calibration = calibration.take(samples)
        constraints = target.profile.quantization
        directory = ctx.work_dir / target.profile.name / attempt.slug
        _fresh(directory)
        with ctx.progress.task(f"{target.profile.name}: build {attempt.format.value} {attempt.label}"):
            if plan.format is ModelFormat.TFLITE:
                from converter.exporters.tflite_export import build_tflite_variant

                base = ctx.base_exports[(ModelFormat.TFLITE.value, plan.batch)]
                tflite_mixed = self._mixed_check(target, evaluation, ctx, ModelFormat.TFLITE)
                artifact = build_tflite_variant(
                    source,
                    base,
                    attempt,
                    directory,
                    calibration,
                    constraints,
                    batch=plan.batch or 1,
                    mixed=tflite_mixed,
                )
            elif plan.format is ModelFormat.OPENVINO:
                from converter.exporters.openvino_export import build_openvino

                base = ctx.base_exports[(ModelFormat.OPENVINO.value, plan.batch)]
                control = _control_scorer(
                    evaluation,
                    reference,
                    source.outputs,
                    self.config.tolerance or target.profile.tolerance,
                    self.config.metrics,
                    self.config.tolerances,
                )
                artifact = build_openvino(
                    base, attempt, directory, calibration, constraints, accuracy_control=control
                )
            else:
                from converter.exporters.onnx_export import build_onnx_variant
                from converter.int8_kernels import reduce_range_for, unsigned_activations_for

                base = ctx.base_exports[(ModelFormat.ONNX.value, plan.batch)]
                mixed = self._mixed_check(target, evaluation, ctx, ModelFormat.ONNX)
                artifact = build_onnx_variant(
                    base,
                    attempt,
                    directory,
                    calibration,
                    constraints,
                    reduce_range=reduce_range_for(target.profile),
                    unsigned_activations=unsigned_activations_for(target.profile),
                    mixed=mixed,
                )
        state.artifact = artifact
        state.runtime_notes = list(artifact.notes)  # reported even when the artifact fails to load

    def _mixed_check(
        self, target: TargetState, evaluation: Dataset, ctx: ConversionContext, fmt: ModelFormat
    ) -> Any:
        """How the current attempt judges ``int8/mixed`` candidates, or None when it is not mixed."""
        if not target.current.attempt.mixed:
            return None
        return _mixed_check(
            target.profile,
            evaluation,
            ctx.reference_samples_first(),
            self.config.tolerance or target.profile.tolerance,
            self.config.metrics,
            self.config.tolerances,
            fmt=fmt,
            outputs=ctx.require_source().outputs,
        )


def _control_scorer(
    evaluation: Dataset,
    reference: Mapping[str, np.ndarray],
    outputs: Sequence[TensorSpec],
    profile_tolerance: Tolerance,
    metrics: list[MetricSpec] | None,
    tolerances: dict[str, float] | None,
) -> tuple[Dataset, Callable[[Sequence[Mapping[str, np.ndarray]], np.ndarray], float], float]:
    """NNCF accuracy control's (evaluation set, scorer, max drop), from validation's own metrics.

    The scorer takes a candidate's outputs for consecutive batches of evaluation samples and the
    samples' row indices, joins the batches and picks the fp32 reference's rows, each along the
    output's own batch axis (``outputs``), and compares them samples-first
    (``converter.metrics.control_score``); the max drop is the reference's own score, so what NNCF
    accepts is what validation's metric checks accept.
    """
    first = samples_first(reference, outputs)
    chosen = choose_metrics(first, metrics)
    tolerance, hook_limits = split_tolerances(profile_tolerance, tolerances)
    labels = evaluation.labels

    def score(parts: Sequence[Mapping[str, np.ndarray]], rows: np.ndarray) -> float:
        ref = samples_first(take_samples(reference, outputs, rows), outputs)
        joined = join_batches(parts, outputs)
        got = samples_first({name: joined[name] for name in reference}, outputs)
        return control_score(
            ref, got, None if labels is None else labels[rows], chosen, tolerance, hook_limits
        )

    perfect = control_score(first, first, labels, chosen, tolerance, hook_limits)
    return evaluation, score, max(0.0, perfect)


def _mixed_check(
    profile: HardwareProfile,
    evaluation: Dataset,
    reference: Mapping[str, np.ndarray],
    profile_tolerance: Tolerance,
    metrics: list[MetricSpec] | None,
    tolerances: dict[str, float] | None,
    *,
    fmt: ModelFormat = ModelFormat.ONNX,
    outputs: Sequence[TensorSpec] = (),
) -> Any:
    """How ``int8/mixed`` judges its candidates: validation's metrics, in the profile's runtime for ``fmt``.

    ``reference`` has every output's samples on axis 0; ``outputs`` (the source's) say on which
    axis each candidate output counts them. (Batches of 64, as validation: a TFLite session
    splits them into the model's own batch.)
    """
    from converter.benchmark import host_info
    from converter.int8_kernels import host_session_options
    from converter.mixed_precision import MixedCheck
    from edge_agent.runtimes import open_session, options_from_profile

    try:
        chosen = choose_metrics(reference, metrics)
        tolerance, hook_limits = split_tolerances(profile_tolerance, tolerances)
    except MetricError as exc:
        raise metric_error(exc) from exc
    options = options_from_profile(profile, fmt)
    host = host_info()
    extra = {
        **options.extra,
        **host_session_options(fmt, Precision.INT8, profile, host.machine, host.features),
    }

    def open_model(path: Path) -> Any:
        with quiet():
            return open_session(
                path,
                fmt,
                threads=options.threads,
                providers=options.providers,
                devices=options.devices,
                delegates=options.delegates,
                options=extra,
            )

    return MixedCheck(
        evaluation=evaluation,
        reference=reference,
        outputs=outputs,
        metrics=chosen,
        tolerance=tolerance,
        hook_limits=hook_limits,
        open_model=open_model,
    )


# --- validate -----------------------------------------------------------------------------------


class ValidateConfig(_Config):
    batch_size: int = Field(default=64, gt=0, description="Evaluation samples per inference call.")
    tolerance: Tolerance | None = Field(default=None, description="Overrides every profile's tolerance.")
    metrics: list[MetricSpec] | None = Field(
        default=None, description="Metric per output (--metric); the rest get their shape's default."
    )
    tolerances: dict[str, float] | None = Field(
        default=None,
        description="Thresholds over the tolerance (--tolerance): Tolerance fields, or module:function.",
    )


class MetricsPass(Pass[ValidateConfig]):
    """Check the metric choices against the model and profiles once, before anything is built.

    Every output a ``--metric`` names must exist, every user's function must import, and each
    metric needs a threshold; a mistake fails here with a ``ConversionError`` that says which.
    """

    step = "validate"

    def run(self, ctx: ConversionContext) -> None:
        reference = ctx.reference_samples_first()
        try:
            chosen = choose_metrics(reference, self.config.metrics)
            for spec in chosen.values():
                if spec.is_hook:
                    load_hook(spec.name)
            for target in ctx.targets:
                tolerance, hook_limits = split_tolerances(
                    self.config.tolerance or target.profile.tolerance, self.config.tolerances
                )
                for spec in chosen.values():
                    metric_limit(spec, tolerance, hook_limits)
        except MetricError as exc:
            raise metric_error(exc) from exc


def metric_error(exc: MetricError) -> ConversionError:
    return ConversionError(
        str(exc),
        step="validate",
        hint="metrics: top1, topk[:K], sequence, iou[:THRESHOLD], f1[:THRESHOLD], snr, cosine, or "
        "module:function (importable, returning a float, higher is better); per output: "
        "--metric OUTPUT=NAME; thresholds: --tolerance NAME=VALUE",
    )


class ValidatePass(Pass[ValidateConfig]):
    """Run the artifact in its own runtime on the evaluation set and judge it against fp32."""

    step = "validate"

    def run(self, ctx: ConversionContext) -> None:
        target = ctx.require_target()
        state = target.current
        artifact = _require_artifact(state.artifact)
        _, evaluation, reference = ctx.require_data()
        label = f"{target.profile.name}: validate {artifact.attempt.format.value} {artifact.attempt.label}"
        with (
            ctx.progress.task(label, total=evaluation.size) as advance,
            open_artifact(artifact, target.profile, ctx.require_source()) as session,
        ):
            outputs = run_batches(session, evaluation, self.config.batch_size, advance)
            state.provider = session.provider
            state.runtime_notes = [
                *artifact.notes,
                *session.fallbacks,
                *getattr(session, "dtype_notes", []),
                *int8_kernel_notes(artifact, target.profile),
            ]
            tensors = [*session.inputs, *session.outputs]
        full_integer = target.profile.quantization.full_integer_io
        missing = sorted(set(reference) - set(outputs))
        if missing:
            raise ConversionError(
                f"the {artifact.attempt.format.value} model lacks outputs {missing} "
                f"(it has {sorted(outputs)})",
                step="validate",
                format=artifact.attempt.format.value,
                hint="this is a converter bug worth reporting; meanwhile pick another --format",
            )
        state.outputs = outputs
        try:
            tolerance, hook_limits = split_tolerances(
                self.config.tolerance or target.profile.tolerance, self.config.tolerances
            )
            state.metrics = compute_metrics(
                samples_first(reference, ctx.require_source().outputs),
                samples_first({k: outputs[k] for k in reference}, ctx.require_source().outputs),
                evaluation.labels,
                metrics=self.config.metrics,
            )
            state.verdict = judge(
                state.metrics,
                tolerance,
                size_bytes=artifact.size_bytes,
                max_model_mb=target.profile.max_model_mb,
                integer_io=all(t.dtype in ("int8", "uint8") for t in tensors) if full_integer else None,
                hook_limits=hook_limits,
            )
        except MetricError as exc:
            raise metric_error(exc) from exc


def open_artifact(artifact: Artifact, profile: HardwareProfile, source: SourceModel | None = None) -> Any:
    """A runtime session for ``artifact`` with the profile's threads, providers, devices and delegates.

    On this host: with the session entries the host's CPU needs to run the artifact faithfully
    (``converter.int8_kernels``), on top of the profile's own options. With ``source``, the
    session serves the source's dtypes where the format narrowed them (``interface_signature``:
    int64 ids that a TFLite model holds as int32), exactly as the agent will serve the bundle:
    it is opened with that signature, so it casts at its edge and refuses what does not fit.
    """
    from edge_agent.runtimes import RuntimeBackendError, options_from_profile

    fmt = artifact.attempt.format
    options = options_from_profile(profile, fmt)
    host = _host_options(artifact, profile)
    try:
        with quiet():
            session = _open_session(artifact, options, host)
            served = (
                None
                if source is None
                else interface_signature(session.inputs, session.outputs, source.inputs, source.outputs)
            )
            if served is None:
                return session
            session.close()  # reopened as the agent opens the bundle: with its manifest's signature
            return _open_session(artifact, options, host, served)
    except RuntimeBackendError as exc:
        raise ConversionError(
            f"the {fmt.value} runtime cannot load the {artifact.attempt.label} model: {exc}",
            step="validate",
            format=fmt.value,
            hint="the artifact is broken or uses an operator this runtime lacks; "
            "pick another precision or format",
        ) from exc
    except ConversionError:
        raise
    except Exception as exc:  # whatever else a runtime raises on load is a failed attempt, not a crash
        raise ConversionError(
            f"the {fmt.value} runtime cannot load the {artifact.attempt.label} model: "
            f"{describe_failure(exc)}",
            step="validate",
            format=fmt.value,
            hint="the artifact is broken or uses an operator this runtime lacks; "
            "pick another precision or format",
        ) from exc


def _open_session(artifact: Artifact, options: Any, host: dict[str, str], signature: Any = None) -> Any:
    from edge_agent.runtimes import open_session

    return open_session(
        artifact.model_path,
        artifact.attempt.format,
        threads=options.threads,
        providers=options.providers,
        devices=options.devices,
        delegates=options.delegates,
        options={**options.extra, **host},
        signature=signature,
    )


def _host_options(artifact: Artifact, profile: HardwareProfile) -> dict[str, str]:
    from converter.benchmark import host_info
    from converter.int8_kernels import host_session_options

    host = host_info()
    attempt = artifact.attempt
    return host_session_options(attempt.format, attempt.precision, profile, host.machine, host.features)


def int8_kernel_notes(artifact: Artifact, profile: HardwareProfile) -> list[str]:
    """What the report should say about int8 kernels on this host and on the device."""
    from converter.int8_kernels import PRECISE_QUANT_OPTION, reduce_range_for

    attempt = artifact.attempt
    if attempt.format is not ModelFormat.ONNX or attempt.precision not in (
        Precision.INT8,
        Precision.INT8_DYNAMIC,
    ):
        return []
    notes = []
    if reduce_range_for(profile):
        notes.append(
            f"int8 weights use 7 bits (reduce_range): {profile.name} is x86 without VNNI, where "
            "ONNX Runtime's 8-bit kernels saturate"
        )
    if _host_options(artifact, profile):
        notes.append(
            f"validated and timed with {PRECISE_QUANT_OPTION}=1: this host is x86 without VNNI, "
            "whose fast int8 kernels saturate; its int8 latency is pessimistic for the device"
        )
    return notes


def run_batches(
    session: Any, data: Dataset, batch_size: int, advance: Callable[[int], None] | None = None
) -> dict[str, np.ndarray]:
    """Float outputs of ``session`` for every sample of ``data``, in order."""
    from edge_agent.runtimes import RuntimeBackendError

    parts: list[dict[str, np.ndarray]] = []
    try:
        with quiet():
            for (start, stop), feeds in zip(data.spans(batch_size), data.batches(batch_size), strict=True):
                parts.append(session.infer(feeds))
                if advance is not None:
                    advance(stop - start)
    except RuntimeBackendError as exc:
        raise ConversionError(
            f"inference failed: {exc}",
            step="validate",
            hint="the artifact does not run in its runtime; pick another precision or format",
        ) from exc
    return join_batches(parts, getattr(session, "outputs", []))


def reference_outputs(source: SourceModel, data: Dataset) -> dict[str, np.ndarray]:
    """The fp32 original's outputs for every sample of ``data``, joined along their batch axes."""
    if not data.fixed and batch_first(source.inputs):
        return source.run(data.inputs)
    return join_batches([source.run(feeds) for feeds in data.batches(REFERENCE_BATCH)], source.outputs)


# --- benchmark ----------------------------------------------------------------------------------


class BenchmarkConfig(_Config):
    warmup: int = Field(default=10, ge=0)
    iterations: int = Field(default=100, gt=0)


class BenchmarkPass(Pass[BenchmarkConfig]):
    """Time the chosen artifact on this host, one request (of the artifact's batch) at a time."""

    step = "benchmark"

    def run(self, ctx: ConversionContext) -> None:
        import psutil

        from converter.benchmark import benchmark_session

        target = ctx.require_target()
        plan, state = target.require_plan(), _require_chosen(target)
        artifact = _require_artifact(state.artifact)
        _, evaluation, _ = ctx.require_data()
        feeds = next(evaluation.batches(plan.batch or 1))
        baseline = psutil.Process().memory_info().rss
        label = (
            f"{target.profile.name}: benchmark {artifact.attempt.label} ({target.profile.threads} threads)"
        )
        from edge_agent.runtimes import RuntimeBackendError

        with (
            ctx.progress.task(label),
            open_artifact(artifact, target.profile, ctx.require_source()) as session,
        ):
            try:
                state.benchmark = benchmark_session(
                    session,
                    feeds,
                    threads=target.profile.threads,
                    size_bytes=artifact.size_bytes,
                    baseline_rss=baseline,
                    warmup=self.config.warmup,
                    iterations=self.config.iterations,
                )
            except RuntimeBackendError as exc:
                raise ConversionError(
                    f"the {artifact.attempt.label} model failed while being timed: {exc}",
                    step="benchmark",
                    format=artifact.attempt.format.value,
                    hint="it passed validation, so this is likely a runtime resource problem: rerun, "
                    "or pick another precision",
                ) from exc


# --- helpers ------------------------------------------------------------------------------------


def _require_artifact(artifact: Artifact | None) -> Artifact:
    if artifact is None:
        raise RuntimeError("no artifact was built for this attempt (run QuantizePass first)")
    return artifact


def _require_chosen(target: TargetState) -> Any:
    if target.chosen is None:
        raise RuntimeError(f"no attempt was chosen for {target.profile.name}")
    return target.chosen


def _fresh(directory: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def _batch_slug(batch: int | None) -> str:
    return "dynamic-batch" if batch is None else f"batch-{batch}"


def plan_summary(plans: Sequence[TargetPlan]) -> list[str]:
    """One line per profile: its format and attempt chain, for logs."""
    return [f"{p.profile}: {p.format.value} " + " → ".join(a.label for a in p.attempts) for p in plans]
