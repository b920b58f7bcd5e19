"""The hardware profile schema: what the converter plans for and what the agent runs with.

A profile describes one class of device. The converter reads ``formats``, ``precisions`` and
``quantization`` to decide what to build; the agent reads ``runtimes`` and ``threads`` to decide how
to run it. Lists are ordered by preference: the first entry is the default.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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


class Accelerator(_Strict):
    kind: AcceleratorKind
    name: str
    precisions: list[Precision] = Field(min_length=1)
    memory_mb: int | None = Field(default=None, gt=0, description="Dedicated memory; None when shared.")


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

    @model_validator(mode="after")
    def _runtime_matches_format(self) -> RuntimeChoice:
        expected = {
            RuntimeName.ONNXRUNTIME: ModelFormat.ONNX,
            RuntimeName.LITERT: ModelFormat.TFLITE,
            RuntimeName.OPENVINO: ModelFormat.OPENVINO,
        }[self.name]
        if self.format != expected:
            raise ValueError(f"runtime {self.name.value} runs {expected.value} models, not {self.format.value}")
        return self


class QuantizationConstraints(_Strict):
    symmetric_weights: bool = True
    symmetric_activations: bool = False
    per_channel: bool = True
    full_integer_io: bool = Field(
        default=False, description="Inputs and outputs must be integer tensors (the Edge TPU)."
    )
    io_dtypes: list[str] = Field(default_factory=lambda: ["float32"], description="Allowed I/O dtypes.")
    static_shapes: bool = Field(default=False, description="Every dimension fixed, batch included.")
    calibration_samples: int = Field(default=256, gt=0)

    @field_validator("io_dtypes")
    @classmethod
    def _known_dtypes(cls, values: list[str]) -> list[str]:
        known = {"float32", "float16", "int8", "uint8"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown I/O dtype(s) {unknown}; use one of {sorted(known)}")
        return values


class Tolerance(_Strict):
    """How far a converted artifact may stray from the fp32 original before it is refused."""

    max_accuracy_drop: float = Field(
        default=1.0, ge=0, description="Top-1 accuracy points lost against fp32 (when labels exist)."
    )
    min_top1_agreement: float = Field(default=0.98, ge=0, le=1)
    min_cosine: float = Field(default=0.99, ge=-1, le=1)


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

    @model_validator(mode="after")
    def _consistent(self) -> HardwareProfile:
        if self.threads > self.cpu.cores:
            raise ValueError(f"threads ({self.threads}) exceeds cpu.cores ({self.cpu.cores})")
        runtime_formats = {r.format for r in self.runtimes}
        orphans = [f.value for f in self.formats if f not in runtime_formats]
        if orphans:
            raise ValueError(f"formats {orphans} have no runtime in 'runtimes' to run them")
        if self.quantization.full_integer_io and Precision.INT8 not in self.precisions:
            raise ValueError("quantization.full_integer_io needs 'int8' in precisions")
        return self

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
