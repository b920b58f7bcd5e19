"""ONNX Runtime backend: execution providers in order of preference, falling back to the CPU.

``onnxruntime`` is imported when a session opens, never at module import, so the agent carries
only the runtime its bundle needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_agent.runtimes.errors import ModelLoadFailed, RuntimeConfigError, RuntimeUnavailable
from edge_agent.runtimes.options import ExtraValue
from edge_agent.runtimes.session import BaseSession
from edge_agent.runtimes.signature import Signature, make_spec, reconcile_signature, runtime_dtypes
from hw_profiles.schema import RuntimeName
from models.bundle.manifest import TensorSpec

CPU_PROVIDER = "CPUExecutionProvider"

PROVIDER_ALIASES: Mapping[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": CPU_PROVIDER,
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
}

# Which onnxruntime package brings a provider: the next step to give in a fallback note.
_PACKAGE_FOR_PROVIDER: Mapping[str, str] = {
    "TensorrtExecutionProvider": "onnxruntime-gpu with TensorRT",
    "CUDAExecutionProvider": "onnxruntime-gpu and the CUDA libraries",
    "OpenVINOExecutionProvider": "onnxruntime-openvino",
    "DmlExecutionProvider": "onnxruntime-directml",
    "QNNExecutionProvider": "onnxruntime-qnn",
}

_ORT_DTYPES: Mapping[str, str] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}

_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def normalise_provider(name: str, known: Sequence[str]) -> str:
    """``cuda`` → ``CUDAExecutionProvider``; a full name passes; an unknown name is a config error."""
    canonical = PROVIDER_ALIASES.get(name.lower(), name)
    if canonical not in known:
        raise RuntimeConfigError(
            f"unknown ONNX Runtime execution provider {name!r}",
            hint=f"use one of {', '.join(known)} (or an alias: {', '.join(sorted(PROVIDER_ALIASES))})",
        )
    return canonical


def plan_providers(
    requested: Sequence[str], available: Sequence[str], known: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The providers to ask ONNX Runtime for, in order, and a note for each one dropped.

    The CPU provider always closes the list: ONNX Runtime places on it every node the
    accelerators cannot take, and it is what runs when none of them is present.
    """
    wanted = [normalise_provider(name, known) for name in requested] or [CPU_PROVIDER]
    chosen: list[str] = []
    notes: list[str] = []
    for provider in dict.fromkeys(wanted):
        if provider in available:
            chosen.append(provider)
            continue
        package = _PACKAGE_FOR_PROVIDER.get(provider, "an onnxruntime build that includes it")
        notes.append(
            f"{provider} was requested but this onnxruntime does not have it "
            f"(available: {', '.join(available)}); install {package} to use it"
        )
    if CPU_PROVIDER not in chosen:
        chosen.append(CPU_PROVIDER)
    if notes and chosen[0] == CPU_PROVIDER:
        notes.append(f"running on {CPU_PROVIDER}")
    return chosen, notes


class OnnxRuntimeSession(BaseSession):
    runtime = RuntimeName.ONNXRUNTIME
    thread_safe: ClassVar[bool] = True

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int | None = None,
        providers: Sequence[str] = (),
        extra: Mapping[str, ExtraValue] | None = None,
        signature: Signature | None = None,
    ) -> None:
        ort = _import_onnxruntime()
        chosen, notes = plan_providers(providers, ort.get_available_providers(), ort.get_all_providers())
        options, extra_notes = _session_options(ort, threads, extra or {})
        try:
            session = ort.InferenceSession(str(model_path), sess_options=options, providers=chosen)
        except Exception as exc:
            raise ModelLoadFailed(
                f"onnxruntime could not load {model_path.name}: {exc}",
                hint="check the file is a complete ONNX model (with its .onnx.data sidecar if it has one)",
            ) from exc
        running = session.get_providers()
        notes += [
            f"{provider} is installed but failed to start (check its drivers and libraries); "
            f"onnxruntime fell back to {running[0]}"
            for provider in chosen
            if provider not in running
        ]
        name = model_path.name
        model_inputs = [_spec(arg, name) for arg in session.get_inputs()]
        model_outputs = [_spec(arg, name) for arg in session.get_outputs()]
        inputs, outputs = reconcile_signature(model_inputs, model_outputs, signature, model=name)
        casts = runtime_dtypes([*model_inputs, *model_outputs], [*inputs, *outputs])
        super().__init__(
            model_path=model_path,
            inputs=inputs,
            outputs=outputs,
            provider=running[0],
            fallbacks=notes + extra_notes,
            threads=threads,
            runtime_version=str(ort.__version__),
            runtime_dtypes=casts,
        )
        self._session: Any = session
        self._output_names = [spec.name for spec in outputs]

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, values, strict=True))

    def _release(self) -> None:
        self._session = None


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeUnavailable(
            "onnxruntime is not installed, so ONNX models cannot run here",
            hint="pip install 'edgefleet[onnx]'",
        ) from exc
    return onnxruntime


def _session_options(ort: Any, threads: int | None, extra: Mapping[str, ExtraValue]) -> tuple[Any, list[str]]:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: fallbacks are reported through ``fallbacks``
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    notes: list[str] = []
    for key, value in extra.items():
        if key == "graph_optimization_level":
            options.graph_optimization_level = _optimization_level(ort, str(value))
        elif key == "inter_op_threads":
            options.inter_op_num_threads = int(value)
        elif "." in key:  # a session config entry, e.g. session.intra_op.allow_spinning
            options.add_session_config_entry(
                key, str(value).lower() if isinstance(value, bool) else str(value)
            )
        else:
            notes.append(f"option {key!r} is not understood by onnxruntime and was ignored")
    return options, notes


def _optimization_level(ort: Any, level: str) -> Any:
    if level not in _OPTIMIZATION_LEVELS:
        raise RuntimeConfigError(
            f"graph_optimization_level {level!r} is not one of {list(_OPTIMIZATION_LEVELS)}",
            hint="fix the runtime options",
        )
    levels = ort.GraphOptimizationLevel
    return {
        "disable": levels.ORT_DISABLE_ALL,
        "basic": levels.ORT_ENABLE_BASIC,
        "extended": levels.ORT_ENABLE_EXTENDED,
        "all": levels.ORT_ENABLE_ALL,
    }[level]


def _spec(arg: Any, model: str) -> TensorSpec:
    dtype = _ORT_DTYPES.get(arg.type, arg.type)
    return make_spec(arg.name, dtype, arg.shape or [], model=model)
