"""Loading the trained model: PyTorch (module, factory, .pt2, TorchScript), ONNX, Keras or a SavedModel.

The loader only reads: it finds the model, its input and output signature and the facts that
planning needs, and it runs the fp32 original to give the reference every artifact is judged
against. torch, onnx, onnxruntime and tensorflow are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import ConversionError, describe_failure
from converter.planning import ModelFacts, SourceKind
from converter.signature import batch_first, concrete_shape, guess_layout, spec_from_array
from models.bundle.manifest import TensorSpec

TORCHSCRIPT_SUFFIXES = frozenset({".pt", ".pth", ".ts", ".torchscript", ".jit"})
KERAS_SUFFIXES = frozenset({".keras", ".h5", ".hdf5"})
_MODULE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
REFERENCE_BATCH = 64
SERVING_SIGNATURE = "serving_default"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_GENERIC_FACTORY_NAMES = frozenset(
    {"model", "trained_model", "build", "build_model", "create", "create_model", "get_model", "load_model"}
)


@dataclass
class SourceModel:
    """The loaded original: what it is, its signature, and how to run it in fp32."""

    kind: SourceKind
    name: str
    description: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    module: Any = None  # torch.nn.Module, keras.Model, or the loaded SavedModel object
    onnx_path: Path | None = None
    saved_model_dir: Path | None = None
    # The names the source itself gives its outputs, in order, where ``outputs`` renames them
    # (a SavedModel's signature keys under --output names).
    output_keys: list[str] | None = None
    has_conv: bool = False
    notes: list[str] = field(default_factory=list)

    def facts(self) -> ModelFacts:
        fixed = {b for spec in self.inputs if (b := spec.batch_size) is not None and b != -1}
        batch = min(fixed) if fixed else None
        if batch is None and not batch_first([*self.inputs, *self.outputs]):
            # The exporters make axis 0 dynamic: a batch elsewhere, a scalar or a fixed shape is
            # built for one sample and looped over (per tensor, along its own batch axis).
            batch = 1
        return ModelFacts(source_kind=self.kind, batch=batch, has_conv=self.has_conv)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The fp32 original's outputs for ``feeds`` (any number of samples)."""
        if self.kind is SourceKind.ONNX:
            return _run_onnx(self, feeds)
        if self.kind is SourceKind.KERAS:
            return _run_keras(self, feeds)
        if self.kind is SourceKind.SAVED_MODEL:
            return _run_saved_model(self, feeds)
        return _run_torch(self, feeds)

    def native_output_names(self) -> list[str]:
        """The outputs' names as the source itself calls them, in order."""
        return list(self.output_keys) if self.output_keys else [s.name for s in self.outputs]


def load_source(
    source: Any,
    *,
    inputs: Sequence[TensorSpec] | None = None,
    output_names: Sequence[str] | None = None,
    sample_arrays: Mapping[str, np.ndarray] | None = None,
) -> SourceModel:
    """Load ``source``: a model object, ``package.module:attr``, or a .pt2/.pt/.onnx/.keras path.

    A model object (or what ``package.module:attr`` names, or its zero-argument factory returns)
    is a ``torch.nn.Module`` or a ``keras.Model``; a directory holding ``saved_model.pb`` is a
    TensorFlow SavedModel (its ``serving_default`` signature). ``inputs`` (from ``--input``) fix
    names, shapes and dtypes; without them, a PyTorch model's inputs are read from
    ``sample_arrays`` (the calibration set) and its ``forward`` signature.
    """
    if not isinstance(source, (str, Path)):
        return _from_model_object(source, "model", "in-memory model", inputs, output_names, sample_arrays)
    text = str(source)
    path = Path(text).expanduser()
    if not path.exists() and _MODULE_SPEC.match(text):
        model, name = _import_module_spec(text)
        return _from_model_object(model, name, text, inputs, output_names, sample_arrays)
    if not path.exists():
        raise ConversionError(
            f"model {text} does not exist",
            step="load",
            hint="give a file (.onnx, .pt2, TorchScript .pt, .keras), a SavedModel directory, "
            "or a model as package.module:attr",
        )
    if path.is_dir() and any((path / name).is_file() for name in SAVED_MODEL_FILES):
        return _from_saved_model(path, inputs, output_names)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _from_onnx(path, inputs)
    if suffix == ".pt2":
        return _from_exported_program(path, inputs, output_names, sample_arrays)
    if suffix in TORCHSCRIPT_SUFFIXES:
        return _from_torchscript(path, inputs, output_names, sample_arrays)
    if suffix in KERAS_SUFFIXES:
        return _from_keras_file(path, inputs, output_names)
    if suffix == ".tflite" or (path / "model.xml").exists():
        raise ConversionError(
            f"{path.name} is already a deployable model",
            step="load",
            hint="edgefleet convert takes the trained original (PyTorch, Keras or ONNX), "
            "so it can validate against fp32",
        )
    raise ConversionError(
        f"do not know how to load {path.name}",
        step="load",
        hint="supported sources: .onnx, .pt2 (torch.export.save), TorchScript .pt, .keras, "
        "a SavedModel directory (with saved_model.pb), or package.module:attr",
    )


# --- PyTorch ------------------------------------------------------------------------------------


def _import_module_spec(spec: str) -> tuple[Any, str]:
    """The model ``package.module:attr`` names (calling it when it is a factory), and a name for it."""
    module_name, attr_path = spec.split(":", 1)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConversionError(
            f"cannot import {module_name!r}: {exc}",
            step="load",
            hint="check the module path and that its package is installed in this environment",
        ) from exc
    for attr in attr_path.split("."):
        if not hasattr(target, attr):
            raise ConversionError(
                f"{module_name} has no attribute {attr_path!r}",
                step="load",
                hint="name a module-level model instance or a function that returns one",
            )
        target = getattr(target, attr)
    if callable(target) and _framework(target) is None:
        try:
            target = target()
        except Exception as exc:
            raise ConversionError(
                f"the factory {spec} failed: {type(exc).__name__}: {exc}",
                step="load",
                hint="the factory must build the model without arguments",
            ) from exc
    if _framework(target) is None:
        raise ConversionError(
            f"{spec} is a {type(target).__name__}, not a torch.nn.Module or keras.Model",
            step="load",
            hint="name a model, or a function without arguments that returns one",
        )
    attr = attr_path.split(".")[-1]
    # A factory called "trained_model" says less about the model than its module does.
    return target, module_name.split(".")[-1] if attr in _GENERIC_FACTORY_NAMES else attr


def _framework(obj: Any) -> str | None:
    """ "torch" or "keras" for a model object, None otherwise (without importing either framework)."""
    if "torch" in sys.modules and isinstance(obj, sys.modules["torch"].nn.Module):
        return "torch"
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(obj, keras.Model):
        return "keras"
    return None


def _from_model_object(
    model: Any,
    name: str,
    description: str,
    inputs: Sequence[TensorSpec] | None,
    output_names: Sequence[str] | None,
    sample_arrays: Mapping[str, np.ndarray] | None,
) -> SourceModel:
    if _framework(model) == "keras":
        return _from_keras(model, name, description, inputs, output_names)
    return _from_torch_module(model, name, description, inputs, output_names, sample_arrays)


def _from_torch_module(
    module: Any,
    name: str,
    description: str,
    inputs: Sequence[TensorSpec] | None,
    output_names: Sequence[str] | None,
    sample_arrays: Mapping[str, np.ndarray] | None,
) -> SourceModel:
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ConversionError(
            f"the source is a {type(module).__name__}, not a torch.nn.Module",
            step="load",
            hint="pass an nn.Module, a file path, or package.module:attr",
        )
    module = module.eval()
    specs = list(inputs) if inputs else _inputs_from_data(_forward_params(module), sample_arrays, name)
    return _finish_torch(SourceKind.TORCH, module, name, description, specs, output_names)


def _from_exported_program(
    path: Path,
    inputs: Sequence[TensorSpec] | None,
    output_names: Sequence[str] | None,
    sample_arrays: Mapping[str, np.ndarray] | None,
) -> SourceModel:
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ConversionError(
            f"{path.name} is not a loadable ExportedProgram: {exc}",
            step="load",
            hint="write it with torch.export.save(torch.export.export(model, args), 'model.pt2')",
        ) from exc
    specs = list(inputs) if inputs else _inputs_from_program(program)
    if not specs:
        specs = _inputs_from_data([], sample_arrays, path.stem)
    return _finish_torch(SourceKind.TORCH, program.module(), path.stem, str(path), specs, output_names)


def _from_torchscript(
    path: Path,
    inputs: Sequence[TensorSpec] | None,
    output_names: Sequence[str] | None,
    sample_arrays: Mapping[str, np.ndarray] | None,
) -> SourceModel:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ConversionError(
            f"{path.name} is not a TorchScript file: {str(exc).splitlines()[0]}",
            step="load",
            hint="save it with torch.jit.save(torch.jit.script(model), path); for a state dict, "
            "give the model's factory as package.module:attr instead",
        ) from exc
    params = [a.name for a in module.forward.schema.arguments[1:]]
    specs = list(inputs) if inputs else _inputs_from_data(params, sample_arrays, path.stem)
    return _finish_torch(SourceKind.TORCHSCRIPT, module.eval(), path.stem, str(path), specs, output_names)


def _forward_params(module: Any) -> list[str]:
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]


def _inputs_from_program(program: Any) -> list[TensorSpec]:
    user_inputs = set(program.graph_signature.user_inputs)
    specs: list[TensorSpec] = []
    for node in program.graph.nodes:
        value = node.meta.get("val")
        if node.op != "placeholder" or node.name not in user_inputs or value is None:
            continue
        shape = [d if isinstance(d, int) else -1 for d in value.shape]
        dtype = str(value.dtype).removeprefix("torch.")
        specs.append(TensorSpec(name=node.name, shape=shape, dtype=dtype, layout=guess_layout(shape)))
    return specs


def _inputs_from_data(
    params: list[str], arrays: Mapping[str, np.ndarray] | None, name: str
) -> list[TensorSpec]:
    """Read a PyTorch model's inputs from the calibration arrays, matched to ``forward``'s parameters."""
    hint = "describe each input with --input name:1x3x224x224:float32 (in forward's argument order)"
    data = {k: v for k, v in (arrays or {}).items() if k != "labels"}
    if not data:
        raise ConversionError(
            f"cannot tell the inputs of {name}: a PyTorch model does not record them",
            step="load",
            hint=hint,
        )
    if len(data) == 1 and len(params) <= 1:
        key, array = next(iter(data.items()))
        return [spec_from_array(key, array)]
    missing = [p for p in params if p not in data]
    if not params or missing:
        raise ConversionError(
            f"cannot match the calibration arrays {sorted(data)} to {name}'s inputs {params}",
            step="load",
            hint=hint + ", or name each array after its forward() argument",
        )
    return [spec_from_array(p, data[p]) for p in params]


def _finish_torch(
    kind: SourceKind,
    module: Any,
    name: str,
    description: str,
    inputs: list[TensorSpec],
    output_names: Sequence[str] | None,
) -> SourceModel:
    import torch

    sample = {s.name: _zeros(s, batch=_probe_batch(s)) for s in inputs}
    try:
        with torch.no_grad():
            raw = module(*(torch.from_numpy(v) for v in sample.values()))
    except Exception as exc:
        shapes = ", ".join(f"{s.name} {s.shape} {s.dtype}" for s in inputs)
        raise ConversionError(
            f"{name} fails on an input of {shapes}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            step="load",
            hint="check the input shapes and dtypes (--input name:shape:dtype) against the model",
        ) from exc
    tensors = _flatten_outputs(raw)
    names = list(output_names) if output_names else _default_output_names(raw, len(tensors))
    if len(names) != len(tensors):
        raise ConversionError(
            f"{name} has {len(tensors)} outputs, but {len(names)} output names were given",
            step="load",
            hint="give one --output name per model output, in order",
        )
    if batch_first(inputs):
        outputs = [
            TensorSpec(
                name=n,
                shape=[
                    -1 if inputs[0].shape and inputs[0].shape[0] == -1 and i == 0 else d
                    for i, d in enumerate(t.shape)
                ],
                dtype=str(t.dtype).removeprefix("torch."),
            )
            for n, t in zip(names, tensors, strict=True)
        ]
    else:
        outputs = _torch_outputs_by_probing(module, inputs, names, tensors)
    return SourceModel(
        kind=kind,
        name=_slug(name),
        description=description,
        inputs=inputs,
        outputs=outputs,
        module=module,
        has_conv=_torch_has_conv(module),
    )


def _probe_batch(spec: TensorSpec, dynamic: int = 2) -> int:
    # Batch 2 when dynamic, so a model that squeezes the batch axis is caught here, not in export.
    batch = spec.batch_size
    return dynamic if batch == -1 else (batch or 1)


def _torch_outputs_by_probing(
    module: Any, inputs: list[TensorSpec], names: list[str], tensors: list[Any]
) -> list[TensorSpec]:
    """Outputs of a model whose inputs do not all count samples on axis 0.

    With a dynamic batch, a second run at batch 3 shows which axis of each output follows it (the
    batch axis; none if no axis moved). With a static one, an output's batch axis is 0 when some
    input has a batch axis, none otherwise.
    """
    import torch

    dynamic = any(spec.has_dynamic_batch for spec in inputs)
    if dynamic:
        with torch.no_grad():
            again = _flatten_outputs(
                module(*(torch.from_numpy(_zeros(s, batch=_probe_batch(s, 3))) for s in inputs))
            )
    outputs = []
    for i, (n, t) in enumerate(zip(names, tensors, strict=True)):
        shape = [int(d) for d in t.shape]
        if dynamic:
            moved = [a for a, (d, e) in enumerate(zip(shape, again[i].shape, strict=True)) if d != int(e)]
            axis = moved[0] if moved else None
            shape = [-1 if a == axis else d for a, d in enumerate(shape)]
        else:
            axis = 0 if shape and any(s.batch_axis is not None for s in inputs) else None
        dtype = str(t.dtype).removeprefix("torch.")
        outputs.append(TensorSpec(name=n, shape=shape, dtype=dtype, batch_axis=axis))
    return outputs


def _flatten_outputs(raw: Any) -> list[Any]:
    if isinstance(raw, Mapping):
        return list(raw.values())
    if isinstance(raw, (tuple, list)):
        return list(raw)
    return [raw]


def _default_output_names(raw: Any, count: int) -> list[str]:
    if isinstance(raw, Mapping):
        return [str(k) for k in raw]
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _torch_has_conv(module: Any) -> bool:
    if any("Conv" in type(m).__name__ or "Conv" in getattr(m, "original_name", "") for m in module.modules()):
        return True
    graph = getattr(module, "graph", None)
    return graph is not None and "conv" in str(graph).lower()


def _run_torch(source: SourceModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    if not batch_first(source.inputs):  # the caller batched the feeds (``Dataset.batches``)
        with torch.no_grad():
            args = [torch.from_numpy(np.asarray(feeds[s.name], order="C")) for s in source.inputs]
            raw = _flatten_outputs(source.module(*args))
        return {spec.name: t.detach().numpy() for spec, t in zip(source.outputs, raw, strict=True)}
    batches: list[list[np.ndarray]] = []
    count = len(next(iter(feeds.values())))
    step = REFERENCE_BATCH if source.inputs[0].shape[:1] == [-1] else (source.inputs[0].shape[0] or 1)
    with torch.no_grad():
        for start in range(0, count, step):
            args = [
                torch.from_numpy(np.ascontiguousarray(feeds[s.name][start : start + step]))
                for s in source.inputs
            ]
            batches.append([t.detach().numpy() for t in _flatten_outputs(source.module(*args))])
    return _join(source, batches)


# --- ONNX ---------------------------------------------------------------------------------------


def _from_onnx(path: Path, overrides: Sequence[TensorSpec] | None) -> SourceModel:
    import onnx

    try:
        # Load with the weights so a broken external-data reference fails here, not mid-export.
        model = onnx.load(str(path), load_external_data=True)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ConversionError(
            f"{path.name} is not a valid ONNX model: {str(exc).splitlines()[0]}",
            step="load",
            hint="check the file is complete and that any external-data files (.onnx.data) sit next to it",
        ) from exc
    initializers = {i.name for i in model.graph.initializer}
    inputs = [_onnx_spec(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_onnx_spec(v) for v in model.graph.output]
    if overrides:
        inputs = _apply_overrides(inputs, overrides, path.name)
    if not batch_first(inputs):
        outputs = _onnx_output_batch_axes(model, inputs, outputs)
    has_conv = any(
        node.op_type in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv") for node in model.graph.node
    )
    return SourceModel(
        kind=SourceKind.ONNX,
        name=_slug(path.stem),
        description=str(path),
        inputs=inputs,
        outputs=outputs,
        onnx_path=path,
        has_conv=has_conv,
    )


def _onnx_spec(value: Any) -> TensorSpec:
    import onnx

    tensor_type = value.type.tensor_type
    shape = [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor_type.shape.dim
    ]
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
    return TensorSpec(name=value.name, shape=shape, dtype=dtype, layout=guess_layout(shape))


def _onnx_output_batch_axes(
    model: Any, inputs: list[TensorSpec], outputs: list[TensorSpec]
) -> list[TensorSpec]:
    """Outputs' batch axes where the inputs' are not all axis 0: the axis named like an input's batch.

    ONNX names dynamic dimensions (``dim_param``): an output axis with the name an input's batch
    axis has is the output's batch axis. Without such a name, a dynamic first axis is the batch,
    and an output with neither has none (``--state`` gives a state output its input's).
    """
    graph_inputs = {v.name: v for v in model.graph.input}
    names = set()
    for spec in inputs:
        value = graph_inputs.get(spec.name)
        dims = value.type.tensor_type.shape.dim if value is not None else []
        if spec.batch_axis is not None and spec.batch_axis < len(dims) and dims[spec.batch_axis].dim_param:
            names.add(dims[spec.batch_axis].dim_param)
    result = []
    for spec, value in zip(outputs, model.graph.output, strict=True):
        params = [d.dim_param for d in value.type.tensor_type.shape.dim]
        named = [axis for axis, param in enumerate(params) if param and param in names]
        axis = named[0] if named else (0 if spec.shape[:1] == [-1] else None)
        result.append(spec.model_copy(update={"batch_axis": axis}))
    return result


def _apply_overrides(
    inputs: list[TensorSpec], overrides: Sequence[TensorSpec], model: str
) -> list[TensorSpec]:
    known = {s.name: s for s in inputs}
    for spec in overrides:
        if spec.name not in known:
            raise ConversionError(
                f"--input names {spec.name!r}, but {model} has inputs {sorted(known)}",
                step="load",
                hint="use the ONNX input names (netron or onnx.load(...).graph.input show them)",
            )
        known[spec.name] = spec
    return [known[s.name] for s in inputs]


def _run_onnx(source: SourceModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(source.onnx_path), options, providers=["CPUExecutionProvider"])
    if not batch_first(source.inputs):  # the caller batched the feeds (``Dataset.batches``)
        names = [o.name for o in source.outputs]
        feed = {s.name: np.asarray(feeds[s.name], order="C") for s in source.inputs}
        return {name: np.asarray(a) for name, a in zip(names, session.run(names, feed), strict=True)}
    count = len(next(iter(feeds.values())))
    step = REFERENCE_BATCH if source.inputs[0].shape[:1] == [-1] else (source.inputs[0].shape[0] or 1)
    names = [o.name for o in source.outputs]
    parts: list[list[np.ndarray]] = []
    for start in range(0, count, step):
        feed = {s.name: feeds[s.name][start : start + step] for s in source.inputs}
        parts.append([np.asarray(a) for a in session.run(names, feed)])
    return _join(source, parts)


# --- Keras --------------------------------------------------------------------------------------


def _from_keras_file(
    path: Path, inputs: Sequence[TensorSpec] | None, output_names: Sequence[str] | None
) -> SourceModel:
    import keras

    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise ConversionError(
            f"{path.name} is not a loadable Keras model: {describe_failure(exc)}",
            step="load",
            hint="save it with model.save('model.keras'); custom layers must be importable here",
        ) from exc
    return _from_keras(model, path.stem, str(path), inputs, output_names)


def _from_keras(
    model: Any,
    name: str,
    description: str,
    overrides: Sequence[TensorSpec] | None,
    output_names: Sequence[str] | None,
) -> SourceModel:
    inputs = [_keras_spec(t.name, t) for t in model.inputs]
    if overrides:
        inputs = _apply_overrides(inputs, overrides, name)
    names = list(output_names) if output_names else [str(n) for n in getattr(model, "output_names", [])]
    if len(names) != len(model.outputs):
        names = ["output"] if len(model.outputs) == 1 else [f"output_{i}" for i in range(len(model.outputs))]
    outputs = [_keras_spec(n, t) for n, t in zip(names, model.outputs, strict=True)]
    has_conv = any("Conv" in type(layer).__name__ for layer in _keras_layers(model))
    return SourceModel(
        kind=SourceKind.KERAS,
        name=_slug(name),
        description=description,
        inputs=inputs,
        outputs=outputs,
        module=model,
        has_conv=has_conv,
    )


def _keras_layers(model: Any) -> Iterator[Any]:
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _keras_layers(layer)


def _keras_spec(name: str, tensor: Any) -> TensorSpec:
    shape = [-1 if d is None else int(d) for d in tensor.shape]
    dtype = str(getattr(tensor.dtype, "name", tensor.dtype))
    return TensorSpec(name=name, shape=shape, dtype=dtype, layout=guess_layout(shape))


def _run_keras(source: SourceModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    count = len(next(iter(feeds.values())))
    parts: list[list[np.ndarray]] = []
    for start in range(0, count, REFERENCE_BATCH):
        args = [feeds[s.name][start : start + REFERENCE_BATCH] for s in source.inputs]
        result = source.module(args if len(args) > 1 else args[0], training=False)
        parts.append([np.asarray(r) for r in _flatten_outputs(result)])
    return _join(source, parts)


# --- TensorFlow SavedModel ----------------------------------------------------------------------


def _from_saved_model(
    path: Path, overrides: Sequence[TensorSpec] | None, output_names: Sequence[str] | None
) -> SourceModel:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ConversionError(
            f"{path.name} is not a loadable SavedModel: {describe_failure(exc)}",
            step="load",
            hint="write it with tf.saved_model.save(module, dir, signatures=...) or Keras model.export(dir)",
        ) from exc
    signatures = dict(getattr(loaded, "signatures", {}))
    if SERVING_SIGNATURE not in signatures:
        raise ConversionError(
            f"SavedModel {path.name} has no {SERVING_SIGNATURE!r} signature "
            f"(it has {sorted(signatures) or 'none'})",
            step="load",
            hint="save it with signatures={'serving_default': function}; Keras model.export(dir) adds one",
        )
    function = signatures[SERVING_SIGNATURE]
    _, keyword_specs = function.structured_input_signature
    inputs = [_tf_spec(name, spec, path.name) for name, spec in keyword_specs.items()]
    if overrides:
        inputs = _apply_overrides(inputs, overrides, path.name)
    keys = list(function.structured_outputs)
    names = list(output_names) if output_names else keys
    if len(names) != len(keys):
        raise ConversionError(
            f"SavedModel {path.name} has {len(keys)} outputs ({', '.join(keys)}), "
            f"but {len(names)} output names were given",
            step="load",
            hint="give one --output name per signature output, in the order listed",
        )
    outputs = [
        _tf_spec(name, function.structured_outputs[key], path.name)
        for name, key in zip(names, keys, strict=True)
    ]
    return SourceModel(
        kind=SourceKind.SAVED_MODEL,
        name=_slug(path.name),
        description=str(path),
        inputs=inputs,
        outputs=outputs,
        module=loaded,
        saved_model_dir=path,
        output_keys=keys if names != keys else None,
        has_conv=_tf_has_conv(function),
    )


def _tf_spec(name: str, spec: Any, model: str) -> TensorSpec:
    if spec.shape.rank is None:
        raise ConversionError(
            f"SavedModel {model}: tensor {name!r} has an unknown rank",
            step="load",
            hint="save the signature with a TensorSpec of known rank, e.g. [None, 224, 224, 3]",
        )
    shape = [-1 if d is None else int(d) for d in spec.shape.as_list()]
    return TensorSpec(name=name, shape=shape, dtype=spec.dtype.name, layout=guess_layout(shape))


def _tf_has_conv(function: Any) -> bool:
    """Whether the signature's graph (or a function it calls) holds a convolution."""
    graph = function.graph.as_graph_def()
    ops = {node.op for node in graph.node}
    ops |= {node.op for library_function in graph.library.function for node in library_function.node_def}
    return any("Conv" in op for op in ops)


def _run_saved_model(source: SourceModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tensorflow as tf

    function = source.module.signatures[SERVING_SIGNATURE]
    keys = source.native_output_names()
    count = len(next(iter(feeds.values())))
    parts: list[list[np.ndarray]] = []
    for start in range(0, count, REFERENCE_BATCH):
        result = function(
            **{s.name: tf.constant(feeds[s.name][start : start + REFERENCE_BATCH]) for s in source.inputs}
        )
        parts.append([np.asarray(result[key]) for key in keys])
    return _join(source, parts)


# --- helpers ------------------------------------------------------------------------------------


def _join(source: SourceModel, parts: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
    """The outputs of consecutive chunks of samples, joined along each output's own batch axis."""
    from converter.data import join_batches

    named = [{spec.name: values[i] for i, spec in enumerate(source.outputs)} for values in parts]
    return join_batches(named, source.outputs)


def _zeros(spec: TensorSpec, *, batch: int) -> np.ndarray:
    return np.zeros(concrete_shape(spec, batch), dtype=spec.dtype)


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-._")
    return slug or "model"
