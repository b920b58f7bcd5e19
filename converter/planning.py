"""Planning: which format, precision and calibration each profile gets, and the fallback chain.

This is the functional core of the converter: a pure function over a hardware profile and a few
facts about the model, with no I/O, tested exhaustively. The shell (``converter.workflow``) walks
the returned attempts in order and stops at the first artifact that passes validation.

The rules, in order:

1. Format: the first of the requested formats (``--format``, else the profile's ``formats``) that
   the source can reach. TFLite is built from PyTorch (litert-torch, which needs torch.export),
   from ONNX (onnx2torch, then litert-torch) or from Keras and SavedModels (TFLiteConverter); ONNX
   from PyTorch or ONNX (no TensorFlow → ONNX converter is installed); OpenVINO IR from every source.
2. Precision: the first of the requested precisions (``--precision``, else the profile's
   ``precisions``) that the format supports. Dynamic int8 ONNX of a convolutional model is refused
   when asked for (ONNX Runtime would run ``ConvInteger``, slower than fp32) and skipped when it
   only comes from the profile.
3. Fallbacks: a static int8 attempt is expanded into one attempt per calibration method the format
   offers (or the ones ``calibrations`` names), and for ONNX and TFLite (not full-integer
   profiles), with ``mixed_precision``, ends with
   ``int8/mixed`` (the nodes that hurt the metric most kept in float; ``convert`` asks for it
   unless the methods were narrowed); after the primary precision come the wider
   precisions the profile allows, narrowest first (int8 → int8-dynamic → fp16 → fp32). A profile
   that demands integer I/O (the Edge TPU) never falls back to float, because a float model would
   not run there at all.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from converter.errors import ConversionError
from hw_profiles.schema import HardwareProfile, ModelFormat, Precision, RuntimeName


class SourceKind(StrEnum):
    """Where the model comes from; it decides which formats are reachable."""

    TORCH = "torch"  # an eager nn.Module or a .pt2 ExportedProgram: torch.export works on it
    TORCHSCRIPT = "torchscript"  # a scripted/traced module: only the legacy ONNX exporter takes it
    ONNX = "onnx"
    KERAS = "keras"  # a Keras 3 model (.keras, .h5, or a factory)
    SAVED_MODEL = "saved-model"  # a TensorFlow SavedModel directory (tf.saved_model, keras export)


class CalibrationMethod(StrEnum):
    """How activation ranges are chosen for static int8, per toolchain."""

    MINMAX = "minmax"  # observed min/max (ONNX Runtime, NNCF, ai-edge-quantizer for TFLite)
    ENTROPY = "entropy"  # KL-divergence threshold (ONNX Runtime)
    PERCENTILE = "percentile"  # clip outliers at a high percentile (ONNX Runtime, NNCF quantiles)
    HISTOGRAM = "histogram"  # PT2E HistogramObserver, litert-torch's default
    CONVERTER = "converter"  # TFLiteConverter's own calibration (Keras sources)
    ACCURACY_CONTROL = "accuracy-control"  # NNCF keeps the layers that hurt accuracy in float


# Width orders fallbacks: a fallback is always wider (more faithful, bigger) than what failed.
PRECISION_WIDTH: dict[Precision, int] = {
    Precision.INT8: 0,
    Precision.INT8_DYNAMIC: 1,
    Precision.FP16: 2,
    Precision.FP32: 3,
}

# What each exporter can build. Static int8 lists its calibration methods in the order to try them.
FORMAT_PRECISIONS: dict[ModelFormat, tuple[Precision, ...]] = {
    ModelFormat.ONNX: (Precision.FP32, Precision.FP16, Precision.INT8, Precision.INT8_DYNAMIC),
    ModelFormat.OPENVINO: (Precision.FP32, Precision.FP16, Precision.INT8, Precision.INT8_DYNAMIC),
    ModelFormat.TFLITE: (Precision.FP32, Precision.FP16, Precision.INT8, Precision.INT8_DYNAMIC),
}
CALIBRATION_METHODS: dict[ModelFormat, tuple[CalibrationMethod, ...]] = {
    ModelFormat.ONNX: (CalibrationMethod.MINMAX, CalibrationMethod.ENTROPY, CalibrationMethod.PERCENTILE),
    ModelFormat.OPENVINO: (
        CalibrationMethod.MINMAX,
        CalibrationMethod.PERCENTILE,
        CalibrationMethod.ACCURACY_CONTROL,
    ),
    # minmax: ai-edge-quantizer on the fp32 TFLite model (any model that exports); histogram: PT2E,
    # tried second (it fails on ops litert-torch cannot lower quantized, such as aten.mul.Tensor).
    ModelFormat.TFLITE: (CalibrationMethod.MINMAX, CalibrationMethod.HISTOGRAM),
}
# The TFLite calibrations that ai-edge-quantizer runs (PyTorch and ONNX sources); the others are PT2E's.
AEQ_CALIBRATIONS: frozenset[CalibrationMethod] = frozenset({CalibrationMethod.MINMAX})
# TensorFlow sources (Keras, SavedModel) calibrate with TFLiteConverter, which has one method of its own.
TENSORFLOW_SOURCES: frozenset[SourceKind] = frozenset({SourceKind.KERAS, SourceKind.SAVED_MODEL})
KERAS_CALIBRATION_METHODS: dict[ModelFormat, tuple[CalibrationMethod, ...]] = {
    ModelFormat.TFLITE: (CalibrationMethod.CONVERTER,),
}
FORMAT_SOURCES: dict[ModelFormat, frozenset[SourceKind]] = {
    # Keras and SavedModels reach ONNX through tf2onnx.
    ModelFormat.ONNX: frozenset(SourceKind),
    ModelFormat.OPENVINO: frozenset(SourceKind),
    # ONNX reaches TFLite through onnx2torch and litert-torch; TorchScript has no torch.export.
    ModelFormat.TFLITE: frozenset(
        {SourceKind.TORCH, SourceKind.ONNX, SourceKind.KERAS, SourceKind.SAVED_MODEL}
    ),
}
# Mixed-precision int8 (converter.mixed_precision): MinMax int8 with the nodes that hurt the task
# metric most kept in float, tried after the plain calibrations. ONNX Runtime, and TFLite through
# an ai-edge-quantizer per-op recipe (not for full-integer profiles: float ops break the Edge TPU).
# OpenVINO has NNCF's accuracy control, a calibration method of its own.
MIXED_PRECISION_FORMATS: frozenset[ModelFormat] = frozenset({ModelFormat.ONNX, ModelFormat.TFLITE})
MIXED_LABEL = "mixed"
# Only TFLite (PT2E, or TFLiteConverter with int8 I/O) gives integer input and output tensors.
INTEGER_IO_FORMATS: frozenset[ModelFormat] = frozenset({ModelFormat.TFLITE})


class ModelFacts(BaseModel):
    """What planning needs to know about the model: nothing more, so tests can state it in a line."""

    model_config = ConfigDict(frozen=True)

    source_kind: SourceKind
    batch: int | None = Field(
        default=None, gt=0, description="The source's fixed batch size; None when any works."
    )
    has_conv: bool = Field(default=False, description="Convolutions make dynamic int8 a poor choice.")


class Attempt(BaseModel):
    """One artifact to build and validate: a format, a precision and (for int8) a calibration."""

    model_config = ConfigDict(frozen=True)

    format: ModelFormat
    precision: Precision
    calibration: CalibrationMethod | None = None
    mixed: bool = Field(
        default=False,
        description="int8 with the nodes that hurt the metric most kept in float (converter.mixed_precision).",
    )

    @property
    def label(self) -> str:
        """``int8/minmax``, ``int8/mixed``, ``fp16``: short enough for a table cell."""
        if self.mixed:
            return f"{self.precision.value}/{MIXED_LABEL}"
        return (
            f"{self.precision.value}/{self.calibration.value}" if self.calibration else self.precision.value
        )

    @property
    def slug(self) -> str:
        """A file-system-safe name for the attempt's working directory."""
        return f"{self.format.value}-{self.label.replace('/', '-')}"


class TargetPlan(BaseModel):
    """Everything decided for one profile before any model is built."""

    model_config = ConfigDict(frozen=True)

    profile: str
    format: ModelFormat
    runtime: RuntimeName
    attempts: list[Attempt] = Field(min_length=1, description="Primary first, then the fallback chain.")
    batch: int | None = Field(description="Fixed batch size of the artifact; None keeps it dynamic.")
    calibration_samples: int = Field(gt=0)
    notes: list[str] = Field(default_factory=list, description="Why the plan looks the way it does.")

    @property
    def primary(self) -> Attempt:
        return self.attempts[0]


def plan_target(
    profile: HardwareProfile,
    facts: ModelFacts,
    *,
    formats: list[ModelFormat] | None = None,
    precisions: list[Precision] | None = None,
    calibrations: list[CalibrationMethod] | None = None,
    mixed_precision: bool = False,
) -> TargetPlan:
    """Decide what to build for ``profile``. Raises ``ConversionError(step="plan")`` when nothing fits.

    ``calibrations`` narrows (and orders) the static int8 calibration methods to try.
    ``mixed_precision``: static int8 ends with an ``int8/mixed`` attempt (ONNX, and TFLite unless
    the profile needs full-integer models; ``convert``
    asks for it unless ``calibrations`` narrowed the methods).
    """
    notes: list[str] = []
    fmt = _choose_format(profile, facts, formats, notes)
    chain = _precision_chain(profile, facts, fmt, precisions, notes)
    methods = _calibrations(profile, fmt, facts.source_kind, calibrations, chain, notes)
    mixed = _mixed(fmt, chain, mixed_precision, notes, full_integer=profile.quantization.full_integer_io)
    attempts = [attempt for precision in chain for attempt in _expand(fmt, precision, methods, mixed)]
    return TargetPlan(
        profile=profile.name,
        format=fmt,
        runtime=profile.runtime_for(fmt).name,
        attempts=attempts,
        batch=_batch(profile, facts, fmt, notes),
        calibration_samples=profile.quantization.calibration_samples,
        notes=notes,
    )


def _choose_format(
    profile: HardwareProfile,
    facts: ModelFacts,
    requested: list[ModelFormat] | None,
    notes: list[str],
) -> ModelFormat:
    runnable = [r.format for r in profile.runtimes]
    if requested:
        foreign = [f for f in requested if f not in runnable]
        if foreign:
            raise ConversionError(
                f"profile {profile.name} has no runtime for {_names(foreign)}",
                step="plan",
                format=foreign[0].value,
                profile=profile.name,
                hint=f"pick a format this profile runs: {_names(_unique(runnable))}",
            )
    candidates = requested or profile.formats
    for fmt in candidates:
        if facts.source_kind not in FORMAT_SOURCES[fmt]:
            why = f"it cannot be built from a {facts.source_kind} source"
            notes.append(f"{fmt.value} skipped: {why}")
            continue
        if profile.quantization.full_integer_io and fmt not in INTEGER_IO_FORMATS:
            notes.append(f"{fmt.value} skipped: the profile needs integer I/O, which only tflite gives")
            continue
        return fmt
    others = _names(_unique(runnable))
    raise ConversionError(
        f"none of the formats {_names(candidates)} can be built from a {facts.source_kind} source"
        + (" with integer I/O" if profile.quantization.full_integer_io else ""),
        step="plan",
        format=candidates[0].value,
        profile=profile.name,
        hint=(
            "tflite is built from PyTorch (package.module:attr or .pt2), ONNX, Keras or a SavedModel; "
            "onnx and openvino from any source (TorchScript too): give such a source, or pick another "
            "format with --format "
            f"({others})"
        ),
    )


def _precision_chain(
    profile: HardwareProfile,
    facts: ModelFacts,
    fmt: ModelFormat,
    requested: list[Precision] | None,
    notes: list[str],
) -> list[Precision]:
    supported = FORMAT_PRECISIONS[fmt]
    if requested:
        refused = [p for p in requested if p not in profile.precisions]
        if refused:
            raise ConversionError(
                f"profile {profile.name} does not allow {_names(refused)}",
                step="plan",
                format=fmt.value,
                profile=profile.name,
                hint=f"pick one of the profile's precisions: {_names(profile.precisions)}",
            )
    wanted = requested or profile.precisions
    usable = [p for p in wanted if p in supported]
    for precision in wanted:
        if precision not in supported:
            notes.append(f"{precision.value} skipped: the {fmt.value} exporter does not build it")
    if fmt is ModelFormat.ONNX and facts.has_conv and usable and usable[0] is Precision.INT8_DYNAMIC:
        # Refused when asked for; skipped with a note when only the profile put it first. (As a
        # fallback it is left out for every convolutional model, below.)
        usable = _without_dynamic_onnx(profile, usable, bool(requested), notes)
    if not usable:
        raise ConversionError(
            f"the {fmt.value} exporter builds none of {_names(wanted)}",
            step="plan",
            format=fmt.value,
            profile=profile.name,
            hint=f"{fmt.value} supports {_names(list(supported))}; "
            "pick one with --precision, or another --format",
        )
    primary = usable[0]
    if profile.quantization.full_integer_io:
        if primary is not Precision.INT8:
            raise ConversionError(
                f"profile {profile.name} needs a full-integer model, not {primary.value}",
                step="plan",
                format=fmt.value,
                profile=profile.name,
                hint="use --precision int8 (with a representative calibration set)",
            )
        notes.append("no float fallback: the profile needs integer I/O")
        return [primary]
    allowed = [p for p in profile.precisions if p in supported]
    fallbacks = {
        p
        for p in [*usable[1:], *allowed]
        if PRECISION_WIDTH[p] > PRECISION_WIDTH[primary]
        # Dynamic int8 only as a fallback where it is fast: not for convolutional models.
        and not (p is Precision.INT8_DYNAMIC and facts.has_conv)
    }
    return [primary, *sorted(fallbacks, key=PRECISION_WIDTH.__getitem__)]


DYNAMIC_CONV_REFUSAL = (
    "dynamic int8 ONNX of a convolutional model runs ConvInteger in ONNX Runtime, which is slower "
    "than fp32 on most CPUs: dynamic int8 is for models without convolutions (MLPs, transformers)"
)


def _without_dynamic_onnx(
    profile: HardwareProfile, usable: list[Precision], refuse: bool, notes: list[str]
) -> list[Precision]:
    """Drop dynamic int8 for a convolutional ONNX model: refused when asked for, skipped otherwise."""
    if refuse:
        raise ConversionError(
            DYNAMIC_CONV_REFUSAL,
            step="plan",
            format=ModelFormat.ONNX.value,
            profile=profile.name,
            hint="use --precision int8 (static QDQ, calibrated on --calib) or fp16 for this model",
        )
    notes.append(f"int8-dynamic skipped: {DYNAMIC_CONV_REFUSAL}")
    return [p for p in usable if p is not Precision.INT8_DYNAMIC]


def calibration_methods(fmt: ModelFormat, source_kind: SourceKind) -> tuple[CalibrationMethod, ...]:
    """The static int8 calibration methods to try, in order, for ``fmt`` built from ``source_kind``."""
    if source_kind in TENSORFLOW_SOURCES and fmt in KERAS_CALIBRATION_METHODS:
        return KERAS_CALIBRATION_METHODS[fmt]
    return CALIBRATION_METHODS[fmt]


def _calibrations(
    profile: HardwareProfile,
    fmt: ModelFormat,
    source_kind: SourceKind,
    requested: list[CalibrationMethod] | None,
    chain: list[Precision],
    notes: list[str],
) -> tuple[CalibrationMethod, ...]:
    """The calibration methods static int8 tries: the toolchain's, or those of them that were asked for."""
    offered = calibration_methods(fmt, source_kind)
    if not requested:
        return offered
    if Precision.INT8 not in chain:
        notes.append("the calibration methods asked for are unused: nothing is quantized to static int8")
        return offered
    chosen = tuple(dict.fromkeys(m for m in requested if m in offered))
    if not chosen:
        raise ConversionError(
            f"the {fmt.value} toolchain has no {_names(list(requested))} calibration "
            f"for a {source_kind} source",
            step="plan",
            format=fmt.value,
            profile=profile.name,
            hint=f"pick one of {_names(list(offered))}",
        )
    skipped = [m for m in requested if m not in offered]
    if skipped:
        notes.append(f"calibration {_names(skipped)} skipped: {fmt.value} offers {_names(list(offered))}")
    return chosen


def _mixed(
    fmt: ModelFormat, chain: list[Precision], requested: bool, notes: list[str], *, full_integer: bool = False
) -> bool:
    """Whether static int8 ends with a mixed-precision attempt: when asked for and the format builds it.

    Not for a full-integer profile (the Edge TPU): a mixed model keeps ops in float on purpose.
    """
    if not requested or Precision.INT8 not in chain:
        return False
    if fmt not in MIXED_PRECISION_FORMATS:
        notes.append(
            f"mixed precision skipped: it is built for onnx and tflite, not {fmt.value}"
            + (" (use the accuracy-control calibration)" if fmt is ModelFormat.OPENVINO else "")
        )
        return False
    if full_integer:
        notes.append(
            "mixed precision skipped: the profile needs full-integer models, "
            "and int8/mixed keeps the ops that hurt the metric in float"
        )
        return False
    return True


def _expand(
    fmt: ModelFormat, precision: Precision, methods: tuple[CalibrationMethod, ...], mixed: bool = False
) -> list[Attempt]:
    if precision is Precision.INT8:
        attempts = [Attempt(format=fmt, precision=precision, calibration=m) for m in methods]
        if mixed:  # MinMax ranges, computed once, with the harmful nodes in float
            attempts.append(
                Attempt(format=fmt, precision=precision, calibration=CalibrationMethod.MINMAX, mixed=True)
            )
        return attempts
    return [Attempt(format=fmt, precision=precision)]


def _batch(profile: HardwareProfile, facts: ModelFacts, fmt: ModelFormat, notes: list[str]) -> int | None:
    if facts.batch is not None:
        return facts.batch
    if profile.quantization.static_shapes:
        notes.append("batch fixed to 1: the profile needs static shapes")
        return 1
    if fmt is ModelFormat.TFLITE:
        notes.append("batch fixed to 1: TFLite models are built for single-sample inference")
        return 1
    return None


def _names(
    values: list[ModelFormat] | list[Precision] | list[RuntimeName] | list[CalibrationMethod],
) -> str:
    return ", ".join(v.value for v in values)


def _unique(values: list[ModelFormat]) -> list[ModelFormat]:
    return list(dict.fromkeys(values))
