"""OpenVINO backend: the devices in order of preference (NPU, GPU, CPU), falling back to the CPU.

On the CPU the plugin may infer in bf16 on CPUs that have it (BRIEF.md §7), so the session pins
``INFERENCE_PRECISION_HINT=f32`` unless the options say otherwise: a converted model must be
validated against the precision it was converted to, not a lower one picked behind our back.

Every session compiles through one ``ov.Core`` that lives as long as the process (``shared_core``),
and every call that may create OpenVINO's CPU plugin runs under ``preserved_signal_stack``. The
plugin points the thread that creates it at an alternate signal stack in its own memory and frees
that memory when its Core goes, on whatever thread that happens: an OTA update that unloaded on
its worker thread a model loaded at start left the main thread's alternate stack dangling, and the
next SIGTERM (Python's handlers run on the alternate stack) killed the agent with SIGSEGV.
``edge_agent.runtimes.signal_stack`` explains; one Core is also what OpenVINO recommends.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.runtimes.errors import ModelLoadFailed, RuntimeUnavailable
from edge_agent.runtimes.options import ExtraValue
from edge_agent.runtimes.session import BaseSession
from edge_agent.runtimes.signal_stack import preserved_signal_stack
from edge_agent.runtimes.signature import Signature, make_spec, reconcile_signature, runtime_dtypes
from hw_profiles.schema import RuntimeName
from models.bundle.manifest import TensorSpec

CPU = "CPU"
# Devices that schedule other devices: OpenVINO resolves them itself, so they are always "available".
_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
# Devices whose plugins compile static shapes only: a dynamic batch is fixed to 1 there.
_STATIC_SHAPE_DEVICES = ("NPU",)

_OV_DTYPES: Mapping[str, str] = {
    "f32": "float32",
    "f16": "float16",
    "i8": "int8",
    "u8": "uint8",
    "i16": "int16",
    "i32": "int32",
    "i64": "int64",
    "boolean": "bool",
}


def plan_devices(requested: Sequence[str], available: Sequence[str]) -> tuple[list[str], list[str]]:
    """The devices to try, in order (the CPU last), and a note for each requested one that is absent.

    ``GPU`` matches ``GPU.0``; ``AUTO``, ``MULTI:...`` and ``HETERO:...`` are passed to OpenVINO as they are.
    """
    candidates: list[str] = []
    notes: list[str] = []
    for device in dict.fromkeys(name.upper() for name in requested):
        family = device.split(":")[0].split(".")[0]
        present = family in _VIRTUAL_DEVICES or any(
            seen == device or seen.startswith(device + ".") for seen in available
        )
        if present:
            candidates.append(device)
        else:
            notes.append(
                f"OpenVINO device {device} was requested but is not present "
                f"(available: {', '.join(available) or 'none'}); install its driver to use it"
            )
    if CPU not in candidates:
        candidates.append(CPU)
    if notes and candidates[0] == CPU:
        notes.append("running on CPU")
    return candidates, notes


def compile_config(device: str, threads: int | None, extra: Mapping[str, ExtraValue]) -> dict[str, Any]:
    """OpenVINO properties for ``device``: f32 precision and the thread count on the CPU, plus the extras.

    Extras are OpenVINO property names (upper case, e.g. ``PERFORMANCE_HINT``); ``extra`` wins.
    """
    config: dict[str, Any] = {}
    if device == CPU:
        config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
    config.update({key: value for key, value in extra.items() if key.isupper()})
    return config


class OpenVINOSession(BaseSession):
    runtime = RuntimeName.OPENVINO

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int | None = None,
        devices: Sequence[str] = (),
        extra: Mapping[str, ExtraValue] | None = None,
        signature: Signature | None = None,
    ) -> None:
        ov = _import_openvino()
        extra = dict(extra or {})
        name = model_path.name
        weights = model_path.with_suffix(".bin")
        if model_path.suffix == ".xml" and not weights.exists():
            raise ModelLoadFailed(
                f"{name} has no weights file {weights.name} beside it",
                hint="an OpenVINO IR is a pair: keep the .xml and the .bin in the same folder",
            )
        with preserved_signal_stack():  # listing devices and compiling create plugins
            core = shared_core()
            candidates, notes = plan_devices(devices, core.available_devices)
            notes += [
                f"option {key!r} is not an OpenVINO property (those are upper case) and was ignored"
                for key in extra
                if not key.isupper()
            ]
            compiled, device = self._compile(core, model_path, candidates, threads, extra, notes)
        # The manifest's names pick among a port's names (see port_name).
        wanted_in = {s.name for s in signature[0]} if signature else set()
        wanted_out = {s.name for s in signature[1]} if signature else set()
        model_inputs = [_spec(port, f"input_{i}", name, wanted_in) for i, port in enumerate(compiled.inputs)]
        model_outputs = [
            _spec(port, f"output_{i}", name, wanted_out) for i, port in enumerate(compiled.outputs)
        ]
        inputs, outputs = reconcile_signature(model_inputs, model_outputs, signature, model=name)
        casts = runtime_dtypes([*model_inputs, *model_outputs], [*inputs, *outputs])
        super().__init__(
            model_path=model_path,
            inputs=inputs,
            outputs=outputs,
            provider=_execution_devices(compiled, device),
            fallbacks=notes,
            threads=threads,
            runtime_version=str(ov.__version__),
            runtime_dtypes=casts,
        )
        self._compiled: Any = compiled
        self._request: Any = compiled.create_infer_request()
        self._input_index = {spec.name: i for i, spec in enumerate(model_inputs)}
        self._output_index = {spec.name: i for i, spec in enumerate(model_outputs)}

    @staticmethod
    def _compile(
        core: Any,
        model_path: Path,
        candidates: list[str],
        threads: int | None,
        extra: Mapping[str, ExtraValue],
        notes: list[str],
    ) -> tuple[Any, str]:
        """Compile on the first candidate that accepts the model; record why the others did not."""
        for device in candidates:
            try:
                model = core.read_model(str(model_path))
            except Exception as exc:
                raise ModelLoadFailed(
                    f"OpenVINO could not read {model_path.name}: {exc}",
                    hint="check the .xml and .bin are a complete OpenVINO IR from the same conversion",
                ) from exc
            if device.startswith(_STATIC_SHAPE_DEVICES) and _fix_dynamic_batch(model):
                notes.append(f"{device} needs static shapes: the batch is fixed to 1 and larger batches loop")
            try:
                return core.compile_model(model, device, compile_config(device, threads, extra)), device
            except Exception as exc:
                if device == candidates[-1]:
                    raise ModelLoadFailed(
                        f"OpenVINO could not compile {model_path.name} for {device}: {exc}",
                        hint="check the model converts and runs with `edgefleet convert` for this profile",
                    ) from exc
                notes.append(
                    f"OpenVINO could not compile the model for {device} ({exc}); trying the next device"
                )
        raise AssertionError("plan_devices always ends with the CPU")  # pragma: no cover

    def execution_property(self, name: str) -> Any:
        """A property of the compiled model, e.g. ``INFERENCE_PRECISION_HINT`` or ``EXECUTION_DEVICES``."""
        return self._compiled.get_property(name)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # The feeds are contiguous arrays in the model's dtypes (prepare_feeds) and the call is
        # synchronous, so OpenVINO may read them in place: copying them costs 15-20 µs a call,
        # 3-4% of a 0.5 ms model.
        self._request.infer(
            {self._input_index[name]: value for name, value in feeds.items()},
            share_inputs=True,
            share_outputs=True,
        )
        # The request reuses its output buffers on the next call: hand out copies.
        return {
            name: np.array(self._request.get_output_tensor(index).data, copy=True)
            for name, index in self._output_index.items()
        }

    def _release(self) -> None:
        self._request = None
        self._compiled = None


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise RuntimeUnavailable(
            "openvino is not installed, so OpenVINO IR models cannot run here",
            hint="pip install 'edgefleet[openvino]'",
        ) from exc
    return openvino


_core: Any = None
_core_lock = threading.Lock()


def shared_core() -> Any:
    """The process's one ``ov.Core`` (see the module docstring for why it is never released)."""
    global _core
    with _core_lock:
        if _core is None:
            _core = _import_openvino().Core()
        return _core


def _fix_dynamic_batch(model: Any) -> bool:
    """Reshape inputs whose batch is dynamic to batch 1; True when anything changed."""
    new_shapes = {}
    for port in model.inputs:
        shape = port.get_partial_shape()
        if shape.rank.is_static and len(shape) > 0 and shape[0].is_dynamic:
            dims = [1] + [d.get_length() if d.is_static else -1 for d in list(shape)[1:]]
            new_shapes[port] = dims
    if new_shapes:
        model.reshape(new_shapes)
    return bool(new_shapes)


def _execution_devices(compiled: Any, device: str) -> str:
    try:
        return ",".join(compiled.get_property("EXECUTION_DEVICES")) or device
    except Exception:
        return device


def port_name(port: Any, fallback_name: str, wanted: AbstractSet[str] = frozenset()) -> str:
    """The name clients use for ``port``: the one of its names the manifest declares, if any.

    OpenVINO gives a tensor every name it had in the source graph (an ONNX input that feeds a
    Cast is also called after the Cast's output), and ``get_any_name`` may pick one no client
    knows; IRs from older converters still name them so.
    """
    declared = sorted(set(port.get_names()) & wanted)
    if declared:
        return declared[0]
    try:
        return str(port.get_any_name())
    except RuntimeError:
        return fallback_name  # an unnamed tensor: clients address it by position-derived name


def _spec(port: Any, fallback_name: str, model: str, wanted: AbstractSet[str] = frozenset()) -> TensorSpec:
    name = port_name(port, fallback_name, wanted)
    element = port.get_element_type().get_type_name()
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        raise ModelLoadFailed(
            f"{model}: tensor {name!r} has a dynamic rank, which edgefleet cannot serve",
            hint="convert the model with a fixed rank (ov.convert_model(..., input=[shape]))",
        )
    dims = [d.get_length() if d.is_static else -1 for d in shape]
    return make_spec(name, _OV_DTYPES.get(element, element), dims, model=model)
