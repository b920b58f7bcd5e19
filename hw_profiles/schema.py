"""The hardware profile schema: what the converter plans for and what the agent runs with.

A profile describes one class of device. The converter reads ``formats``, ``precisions`` and
``quantization`` to decide what to build; the agent reads ``runtimes`` and ``threads`` to decide how
to run it. Lists are ordered by preference: the first entry is the default.
"""

from __future__ import annotations

import difflib
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class Architecture(StrEnum):
    ARM64 = "arm64"
    ARMV7 = "armv7"
    X86_64 = "x86_64"


class ModelFormat(StrEnum):
    ONNX = "onnx"
    TFLITE = "tflite"
    OPENVINO = "openvino"


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # static (calibrated) int8 weights and activations
    INT8_DYNAMIC = "int8-dynamic"  # int8 weights, activations quantized at run time


class RuntimeName(StrEnum):
    ONNXRUNTIME = "onnxruntime"
    LITERT = "litert"
    OPENVINO = "openvino"


class AcceleratorKind(StrEnum):
    GPU = "gpu"
    NPU = "npu"
    TPU = "tpu"
    DSP = "dsp"


# The ISA features that change how a model should be built or run. A closed vocabulary, because a
# typo ("dot-prod") would otherwise silently switch a fast path off. Names follow the usual compiler
# spelling; docs/hw-profiles.md maps them to the flags in /proc/cpuinfo.
ARM_CPU_FEATURES: frozenset[str] = frozenset({"neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2"})
X86_CPU_FEATURES: frozenset[str] = frozenset(
    {
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "avx_vnni",
        "amx_int8",
        "amx_bf16",
    }
)
CPU_FEATURES: frozenset[str] = ARM_CPU_FEATURES | X86_CPU_FEATURES

# Each runtime runs exactly one artifact format.
RUNTIME_FORMATS: dict[RuntimeName, ModelFormat] = {
    RuntimeName.ONNXRUNTIME: ModelFormat.ONNX,
    RuntimeName.LITERT: ModelFormat.TFLITE,
    RuntimeName.OPENVINO: ModelFormat.OPENVINO,
}


def _no_duplicates(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} lists {value!r} twice; each entry appears once, in order of preference")
        seen.add(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cpu(_Strict):
    model: str = Field(description="Core name, for example 'Cortex-A76'.")
    cores: int = Field(gt=0)
    max_ghz: float | None = Field(default=None, gt=0)
    features: list[str] = Field(
        default_factory=list,
        description="ISA features that matter to inference: neon, dotprod, fp16, avx2, avx512_vnni, ...",
    )

    @field_validator("features")
    @classmethod
    def _known_features(cls, features: list[str]) -> list[str]:
        for feature in features:
            if feature not in CPU_FEATURES:
                close = difflib.get_close_matches(feature, sorted(CPU_FEATURES), n=1)
                guess = f"did you mean {close[0]!r}? " if close else ""
                known = ", ".join(sorted(CPU_FEATURES))
                raise ValueError(f"unknown CPU feature {feature!r}; {guess}known features: {known}")
        _no_duplicates(features, "features")
        return features

    def has(self, feature: str) -> bool:
        """Whether the CPU has ``feature`` (one of ``CPU_FEATURES``), e.g. ``cpu.has("dotprod")``."""
        return feature in self.features


class Accelerator(_Strict):
    kind: AcceleratorKind
    name: str
    precisions: list[Precision] = Field(min_length=1)
    memory_mb: int | None = Field(default=None, gt=0, description="Dedicated memory; None when shared.")
    peak_tops: float | None = Field(
        default=None,
        gt=0,
        description="Vendor-quoted peak tera-operations per second at its fastest precision (see notes).",
    )


class RuntimeChoice(_Strict):
    """One runtime and how to drive it, in the profile's order of preference."""

    name: RuntimeName
    format: ModelFormat
    execution_providers: list[str] = Field(
        default_factory=list,
        description="ONNX Runtime providers in order, e.g. TensorrtExecutionProvider first.",
    )
    devices: list[str] = Field(default_factory=list, description="OpenVINO devices in order: NPU, GPU, CPU.")
    delegates: list[str] = Field(default_factory=list, description="LiteRT delegates: xnnpack, edgetpu.")
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)

    # Field validators (not one model validator) so that an error names the field it is about.
    @field_validator("format")
    @classmethod
    def _runtime_matches_format(cls, fmt: ModelFormat, info: ValidationInfo) -> ModelFormat:
        name = info.data.get("name")
        if name is not None and RUNTIME_FORMATS[name] != fmt:
            expected = RUNTIME_FORMATS[name]
            raise ValueError(f"runtime {name.value} runs {expected.value} models, not {fmt.value}")
        return fmt

    @field_validator("execution_providers", "devices", "delegates")
    @classmethod
    def _options_belong_to_runtime(cls, values: list[str], info: ValidationInfo) -> list[str]:
        owner = {
            "execution_providers": RuntimeName.ONNXRUNTIME,
            "devices": RuntimeName.OPENVINO,
            "delegates": RuntimeName.LITERT,
        }[str(info.field_name)]
        name = info.data.get("name")
        if values and name is not None and name != owner:
            raise ValueError(f"{info.field_name} apply to the {owner.value} runtime only, not {name.value}")
        _no_duplicates(values, str(info.field_name))
        return values


class QuantizationConstraints(_Strict):
    symmetric_weights: bool = True
    symmetric_activations: bool = False
    per_channel: bool = True
    full_integer_io: bool = Field(
        default=False, description="Inputs and outputs must be integer tensors (the Edge TPU)."
    )
    io_dtypes: list[str] = Field(
        default_factory=lambda: ["float32"], min_length=1, description="Allowed I/O dtypes, preferred first."
    )
    static_shapes: bool = Field(default=False, description="Every dimension fixed, batch included.")
    calibration_samples: int = Field(default=256, gt=0)

    @field_validator("io_dtypes")
    @classmethod
    def _known_dtypes(cls, values: list[str], info: ValidationInfo) -> list[str]:
        known = {"float32", "float16", "int8", "uint8"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown I/O dtype(s) {unknown}; use one of {sorted(known)}")
        if info.data.get("full_integer_io") and not set(values) <= {"int8", "uint8"}:
            raise ValueError(f"full_integer_io allows only int8 or uint8 I/O, not {values}")
        _no_duplicates(values, "io_dtypes")
        return values


class Tolerance(_Strict):
    """How far a converted artifact may stray from the fp32 original before it is refused."""

    max_accuracy_drop: float = Field(
        default=1.0, ge=0, description="Top-1 accuracy points lost against fp32 (when labels exist)."
    )
    min_top1_agreement: float = Field(default=0.98, ge=0, le=1)
    min_cosine: float = Field(default=0.99, ge=-1, le=1)
    # Task metrics (converter.metrics): each output is judged by one of them, chosen by its shape or
    # by the user (``--metric``); the threshold of the metric that judges it comes from here.
    min_topk_agreement: float = Field(
        default=0.99, ge=0, le=1, description="Share of samples whose fp32 top-1 class is in the top k."
    )
    min_sequence_agreement: float = Field(
        default=0.98, ge=0, le=1, description="Share of sequence positions ([N, T, C]) whose arg-max agrees."
    )
    min_iou: float = Field(
        default=0.9, ge=0, le=1, description="IoU of thresholded maps, pooled over samples."
    )
    min_f1: float = Field(default=0.95, ge=0, le=1, description="F1 (Dice) of thresholded maps.")
    min_snr_db: float = Field(default=20.0, description="Signal-to-noise ratio of the outputs, in dB.")


class HardwareProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str
    architecture: Architecture
    cpu: Cpu
    memory_mb: int = Field(gt=0)
    accelerators: list[Accelerator] = Field(default_factory=list)
    runtimes: list[RuntimeChoice] = Field(min_length=1, description="Order of preference.")
    formats: list[ModelFormat] = Field(min_length=1, description="Artifact formats, order of preference.")
    precisions: list[Precision] = Field(min_length=1, description="Allowed precisions, order of preference.")
    quantization: QuantizationConstraints = Field(default_factory=QuantizationConstraints)
    threads: int = Field(gt=0, description="Intra-op threads the runtime should use.")
    max_model_mb: float = Field(gt=0, description="Largest model file the device should receive.")
    tolerance: Tolerance = Field(default_factory=Tolerance)
    notes: list[str] = Field(default_factory=list)

    # Cross-field checks are field validators on the later field (pydantic validates in declaration
    # order), so that an error names the field to fix: "threads: ...", not "(profile): ...".
    @field_validator("cpu")
    @classmethod
    def _features_match_architecture(cls, cpu: Cpu, info: ValidationInfo) -> Cpu:
        architecture = info.data.get("architecture")
        if architecture is None:
            return cpu
        family = X86_CPU_FEATURES if architecture == Architecture.X86_64 else ARM_CPU_FEATURES
        foreign = [f for f in cpu.features if f not in family]
        if foreign:
            raise ValueError(f"features {foreign} do not exist on {architecture.value} CPUs")
        return cpu

    @field_validator("runtimes")
    @classmethod
    def _runtimes_once(cls, runtimes: list[RuntimeChoice]) -> list[RuntimeChoice]:
        _no_duplicates([r.name.value for r in runtimes], "runtimes")
        return runtimes

    @field_validator("formats")
    @classmethod
    def _formats_have_runtimes(cls, formats: list[ModelFormat], info: ValidationInfo) -> list[ModelFormat]:
        _no_duplicates([f.value for f in formats], "formats")
        runtimes: list[RuntimeChoice] | None = info.data.get("runtimes")
        if runtimes is None:  # runtimes itself failed; that error is reported already
            return formats
        runtime_formats = {r.format for r in runtimes}
        orphans = [f.value for f in formats if f not in runtime_formats]
        if orphans:
            raise ValueError(f"formats {orphans} have no runtime in 'runtimes' to run them")
        return formats

    @field_validator("precisions")
    @classmethod
    def _precisions_once(cls, precisions: list[Precision]) -> list[Precision]:
        _no_duplicates([p.value for p in precisions], "precisions")
        return precisions

    @field_validator("quantization")
    @classmethod
    def _full_integer_needs_int8(
        cls, quantization: QuantizationConstraints, info: ValidationInfo
    ) -> QuantizationConstraints:
        precisions: list[Precision] | None = info.data.get("precisions")
        if quantization.full_integer_io and precisions is not None and Precision.INT8 not in precisions:
            raise ValueError("full_integer_io needs 'int8' in precisions")
        return quantization

    @field_validator("threads")
    @classmethod
    def _threads_fit_cores(cls, threads: int, info: ValidationInfo) -> int:
        cpu: Cpu | None = info.data.get("cpu")
        if cpu is not None and threads > cpu.cores:
            raise ValueError(f"threads ({threads}) exceeds cpu.cores ({cpu.cores})")
        return threads

    @field_validator("max_model_mb")
    @classmethod
    def _model_fits_memory(cls, max_model_mb: float, info: ValidationInfo) -> float:
        memory_mb: int | None = info.data.get("memory_mb")
        if memory_mb is not None and max_model_mb > memory_mb:
            raise ValueError(f"max_model_mb ({max_model_mb:g}) exceeds memory_mb ({memory_mb})")
        return max_model_mb

    @property
    def default_format(self) -> ModelFormat:
        return self.formats[0]

    @property
    def default_precision(self) -> Precision:
        return self.precisions[0]

    def runtime_for(self, fmt: ModelFormat) -> RuntimeChoice:
        """The preferred runtime that runs ``fmt`` on this profile."""
        for runtime in self.runtimes:
            if runtime.format == fmt:
                return runtime
        raise KeyError(f"profile {self.name} has no runtime for {fmt.value}")
