"""LiteRT backend (``ai_edge_litert``): XNNPACK on the CPU, the Edge TPU delegate when asked and present.

Integer-I/O models (full-integer int8, as the Edge TPU needs) carry their scale and zero point
in the file; the session reads them so a client can keep sending float. A model with a dynamic
batch is resized to each request's batch; one with a static batch of 1 runs a larger batch
sample by sample (``BaseSession``).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.runtimes.errors import ModelLoadFailed, RuntimeConfigError, RuntimeUnavailable
from edge_agent.runtimes.options import ExtraValue
from edge_agent.runtimes.session import BaseSession
from edge_agent.runtimes.signature import Signature, make_spec, reconcile_signature, runtime_dtypes
from hw_profiles.schema import RuntimeName
from models.bundle.manifest import QuantParams, TensorSpec

XNNPACK = "xnnpack"
EDGETPU = "edgetpu"
BUILTIN = "builtin"  # the plain built-in kernels, without XNNPACK: for debugging a delegate issue
EDGETPU_MISSING = "libedgetpu not found: install the Edge TPU runtime, running on CPU with XNNPACK"
_CPU_CHOICES = (XNNPACK, BUILTIN, "cpu")
_DELEGATE_LIBRARY_SUFFIXES = (".so", ".dylib", ".dll")


def edgetpu_library() -> str:
    """The Edge TPU runtime's shared library name on this platform."""
    if sys.platform == "darwin":
        return "libedgetpu.1.dylib"
    if sys.platform == "win32":
        return "edgetpu.dll"
    return "libedgetpu.so.1"


@dataclass
class DelegatePlan:
    """What will run: the loaded delegates, the provider name, whether XNNPACK applies, the notes."""

    delegates: list[Any] = field(default_factory=list)
    provider: str = XNNPACK
    use_xnnpack: bool = True
    notes: list[str] = field(default_factory=list)


def library_loads(library: str) -> bool:
    """Whether the shared library can be loaded (checked first: a failed ``load_delegate`` prints noise)."""
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def plan_delegates(
    requested: Sequence[str],
    load_delegate: Any,
    extra: Mapping[str, ExtraValue],
    library_loads: Callable[[str], bool] = library_loads,
) -> DelegatePlan:
    """Try the requested delegates in order; the first accelerator that loads wins, else the CPU.

    ``requested`` holds ``edgetpu``, ``xnnpack``, ``builtin`` or a path to a delegate library.
    ``load_delegate`` is ``ai_edge_litert.interpreter.load_delegate``; it and ``library_loads``
    are parameters so the planning can be tested without the libraries.
    """
    plan = DelegatePlan()
    for name in requested:
        key = name.lower()
        if key in _CPU_CHOICES:
            # The CPU is always there: the first CPU choice ends the search.
            plan.use_xnnpack = key == XNNPACK or key == "cpu"
            plan.provider = XNNPACK if plan.use_xnnpack else BUILTIN
            return plan
        if key == EDGETPU:
            library, missing_note = edgetpu_library(), EDGETPU_MISSING
            options = {"device": str(extra["edgetpu_device"])} if "edgetpu_device" in extra else None
        elif name.endswith(_DELEGATE_LIBRARY_SUFFIXES):
            library, missing_note = name, f"delegate {name} not found, running on CPU with XNNPACK"
            options = None
        else:
            raise RuntimeConfigError(
                f"unknown LiteRT delegate {name!r}",
                hint=f"use {EDGETPU}, {XNNPACK}, {BUILTIN} or the path of a delegate library (.so)",
            )
        if not library_loads(library):
            plan.notes.append(missing_note)
            continue
        try:
            plan.delegates = [load_delegate(library, options)]
        except (ValueError, OSError, RuntimeError) as exc:
            # The library is there but refused to start, e.g. no Edge TPU plugged in.
            plan.notes.append(f"delegate {library} failed to start ({exc}); running on CPU with XNNPACK")
            continue
        plan.provider = EDGETPU if key == EDGETPU else Path(name).name
        return plan
    return plan


class LiteRTSession(BaseSession):
    runtime = RuntimeName.LITERT

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int | None = None,
        delegates: Sequence[str] = (),
        extra: Mapping[str, ExtraValue] | None = None,
        signature: Signature | None = None,
    ) -> None:
        litert = _import_litert()
        extra = dict(extra or {})
        plan = plan_delegates(delegates, litert.load_delegate, extra)
        notes = plan.notes + [
            f"option {key!r} is not understood by LiteRT and was ignored"
            for key in extra
            if key != "edgetpu_device"
        ]
        resolver = (
            litert.OpResolverType.AUTO
            if plan.use_xnnpack
            else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        threads_used = threads if threads is not None else (os.cpu_count() or 1)
        name = model_path.name
        try:
            interpreter = litert.Interpreter(
                model_path=str(model_path),
                experimental_delegates=plan.delegates or None,
                num_threads=threads_used,
                experimental_op_resolver_type=resolver,
            )
            interpreter.allocate_tensors()
        except Exception as exc:
            raise ModelLoadFailed(f"LiteRT could not load {name}: {exc}", hint=_load_hint(str(exc))) from exc
        input_details = interpreter.get_input_details()
        output_details = interpreter.get_output_details()
        input_names, output_names = _signature_names(interpreter, input_details, output_details)
        model_inputs = [_spec(d, n, name, notes) for d, n in zip(input_details, input_names, strict=True)]
        model_outputs = [_spec(d, n, name, notes) for d, n in zip(output_details, output_names, strict=True)]
        inputs, outputs = reconcile_signature(model_inputs, model_outputs, signature, model=name)
        casts = runtime_dtypes([*model_inputs, *model_outputs], [*inputs, *outputs])
        super().__init__(
            model_path=model_path,
            inputs=inputs,
            outputs=outputs,
            provider=plan.provider,
            fallbacks=notes,
            threads=threads_used,
            runtime_version=_litert_version(),
            runtime_dtypes=casts,
        )
        self._interpreter: Any = interpreter
        self._delegates = plan.delegates  # released with the interpreter on close()
        self._input_index = {n: d["index"] for d, n in zip(input_details, input_names, strict=True)}
        self._output_index = {n: d["index"] for d, n in zip(output_details, output_names, strict=True)}
        self._shapes = {
            n: tuple(int(x) for x in d["shape"]) for d, n in zip(input_details, input_names, strict=True)
        }
        self._resizable = {
            n: bool(np.any(np.asarray(d["shape_signature"]) == -1))
            for d, n in zip(input_details, input_names, strict=True)
        }

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interpreter = self._interpreter
        resized = {
            name: value.shape
            for name, value in feeds.items()
            if self._resizable[name] and self._shapes.get(name) != value.shape
        }
        if resized:
            try:
                for name, shape in resized.items():
                    interpreter.resize_tensor_input(self._input_index[name], list(shape), strict=True)
                interpreter.allocate_tensors()
            except Exception:
                for name in resized:  # unknown state: resize again on the next call
                    self._shapes.pop(name, None)
                raise
            self._shapes.update(resized)
        for name, value in feeds.items():
            interpreter.set_tensor(self._input_index[name], value)
        interpreter.invoke()
        return {name: interpreter.get_tensor(index) for name, index in self._output_index.items()}

    def _release(self) -> None:
        self._interpreter = None
        self._delegates = []


def _import_litert() -> Any:
    try:
        from ai_edge_litert import interpreter
    except ImportError as exc:
        raise RuntimeUnavailable(
            "ai-edge-litert is not installed, so TFLite models cannot run here",
            hint="pip install 'edgefleet[tflite]'",
        ) from exc
    return interpreter


def _litert_version() -> str:
    import ai_edge_litert

    return str(getattr(ai_edge_litert, "__version__", "unknown"))


def _load_hint(message: str) -> str:
    if "edgetpu-custom-op" in message:
        return (
            "this model was compiled for the Edge TPU: install the Edge TPU runtime (libedgetpu) "
            "and ask for the edgetpu delegate, or deploy the CPU build of the model"
        )
    return "check the file is a complete .tflite model built for this LiteRT version"


def _signature_names(
    interpreter: Any, input_details: list[dict[str, Any]], output_details: list[dict[str, Any]]
) -> tuple[list[str], list[str]]:
    """The names a client should use: the signature's when the model has exactly one, else the tensors'.

    Tensor names from converters are internal (``serving_default_input:0``); signature names are
    the ones the model's author chose (``input``).
    """
    tensor_names = ([d["name"] for d in input_details], [d["name"] for d in output_details])
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        return tensor_names
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    by_index_in = {d["index"]: n for n, d in runner.get_input_details().items()}
    by_index_out = {d["index"]: n for n, d in runner.get_output_details().items()}
    names_in = [by_index_in.get(d["index"]) for d in input_details]
    names_out = [by_index_out.get(d["index"]) for d in output_details]
    chosen = [n for n in names_in + names_out if n is not None]
    if len(chosen) != len(names_in) + len(names_out) or len(set(chosen)) != len(chosen):
        return tensor_names  # the signature does not cover subgraph 0's I/O one to one
    return [str(n) for n in names_in], [str(n) for n in names_out]


def _spec(details: Mapping[str, Any], name: str, model: str, notes: list[str]) -> TensorSpec:
    dtype = np.dtype(details["dtype"]).name
    shape = [int(d) for d in details["shape_signature"]] or [int(d) for d in details["shape"]]
    return make_spec(name, dtype, shape, quantization=_quantization(details, name, dtype, notes), model=model)


def _quantization(details: Mapping[str, Any], name: str, dtype: str, notes: list[str]) -> QuantParams | None:
    params = details.get("quantization_parameters", {})
    scales = np.asarray(params.get("scales", []), dtype=np.float64)
    zero_points = np.asarray(params.get("zero_points", []), dtype=np.int64)
    if dtype not in ("int8", "uint8", "int16") or scales.size == 0:
        return None
    if scales.size > 1:
        notes.append(f"tensor {name!r} is quantized per axis: it is served as raw {dtype} values")
        return None
    return QuantParams(scale=float(scales[0]), zero_point=int(zero_points[0]), dtype=dtype)
