"""TFLite from PyTorch or ONNX (litert-torch) or TensorFlow (TFLiteConverter): fp32, fp16, int8.

Every route wraps the model so the TFLite signature carries the model's own input and output
names (``input`` → ``logits``) instead of ``args_0``/``output_0``. From PyTorch, static int8
``minmax`` quantizes the fp32 TFLite model with ai-edge-quantizer
(``converter.exporters.tflite_quantize``: float I/O, or int8 I/O for full-integer profiles), and
``histogram`` uses PT2E (``prepare_pt2e``, calibrate, ``convert_pt2e``), which gives int8 weights,
activations, inputs and outputs but fails on ops litert-torch cannot lower quantized; the session
dequantizes int8 outputs for float clients. An ONNX model takes the same routes once onnx2torch
has made a PyTorch module of it (``converter.exporters.onnx_to_torch``). Every static int8 model
is scanned for ops left in float (``converter.exporters.tflite_scan``): an error for a
full-integer profile (the Edge TPU), a warning in the report elsewhere.
From Keras (``from_keras_model``) or a SavedModel (``from_saved_model``, re-signed with the
planned batch), static int8 is TFLiteConverter's post-training quantization with a
representative dataset (float I/O, or int8 I/O when the profile needs full-integer models).
fp16 and dynamic int8 rewrite the fp32 model's weights with ai-edge-quantizer, whatever the source.
Every model is then rewritten with its repeated constant vectors stored once
(``converter.exporters.tflite_compact``).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from converter.artifacts import Artifact
from converter.data import Dataset
from converter.errors import ConversionError, describe_failure, unsupported_operator
from converter.exporters.tflite_compact import share_constant_vectors
from converter.mixed_precision import MixedCheck
from converter.planning import (
    AEQ_CALIBRATIONS,
    TENSORFLOW_SOURCES,
    Attempt,
    CalibrationMethod,
    SourceKind,
)
from converter.quiet import quiet
from converter.signature import concrete_shape, with_batch
from converter.sources import SourceModel
from hw_profiles.schema import ModelFormat, Precision, QuantizationConstraints

MODEL_FILE = "model.tflite"
_FORMAT = ModelFormat.TFLITE.value


def export_tflite(source: SourceModel, directory: Path, *, batch: int) -> Path:
    """Write the fp32 ``directory/model.tflite``: the base for fp16 and int8-dynamic (and an op check).

    For a SavedModel, the re-signed SavedModel it was converted from stays beside it
    (``directory/saved_model``), for the int8 attempts to calibrate from.
    """
    _require_buildable(source)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / MODEL_FILE
    if source.kind is SourceKind.SAVED_MODEL:
        from converter.exporters.saved_model import resign_saved_model

        def convert_saved_model() -> None:
            _tf_to_tflite(
                source, _from_saved_model(resign_saved_model(source, directory, batch=batch)), out, batch
            )

        _run_step("export", "fp32", convert_saved_model)
    elif source.kind is SourceKind.KERAS:
        _run_step("export", "fp32", lambda: _tf_to_tflite(source, _from_keras(source, batch), out, batch))
    else:

        def convert_torch() -> None:
            torch_source = torch_view(source, batch)
            _export_float(torch_source, _sample(torch_source, batch), out)

        _run_step("export", "fp32", convert_torch)
    share_constant_vectors(out)
    return out


def build_tflite_variant(
    source: SourceModel,
    base: Path,
    attempt: Attempt,
    directory: Path,
    calibration: Dataset,
    constraints: QuantizationConstraints,
    *,
    batch: int,
    mixed: MixedCheck | None = None,
) -> Artifact:
    """The TFLite artifact for ``attempt``: static int8 comes from the source, the rest from ``base``.

    ``int8/mixed`` quantizes ``base`` with ai-edge-quantizer, the ops that hurt the metric most
    left in float (``converter.mixed_precision``); ``mixed`` is how it judges its candidates.
    """
    _require_buildable(source)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / MODEL_FILE
    mixed_notes: list[str] = []
    float_nodes: list[str] = []
    if attempt.precision is Precision.INT8 and attempt.mixed:

        def quantize_mixed() -> None:
            notes, kept = _quantize_mixed(base, out, calibration, constraints, mixed, batch=batch)
            mixed_notes.extend(notes)
            float_nodes.extend(kept)

        _run_step("quantize", attempt.label, quantize_mixed, tool="ai-edge-quantizer")
    elif attempt.precision is Precision.INT8 and source.kind in TENSORFLOW_SOURCES:

        def quantize_tf() -> None:
            from converter.exporters.saved_model import DIRECTORY

            converter = (
                _from_saved_model(base.parent / DIRECTORY)
                if source.kind is SourceKind.SAVED_MODEL
                else _from_keras(source, batch)
            )
            _tf_to_tflite(source, converter, out, batch, calibration=calibration, constraints=constraints)

        _run_step("quantize", attempt.label, quantize_tf)
    elif attempt.precision is Precision.INT8 and attempt.calibration in AEQ_CALIBRATIONS:
        from converter.exporters.tflite_quantize import quantize_static_int8

        _run_step(
            "quantize",
            attempt.label,
            lambda: quantize_static_int8(base, out, calibration, constraints, batch=batch),
            tool="ai-edge-quantizer",
        )
    elif attempt.precision is Precision.INT8:

        def quantize_torch() -> None:
            torch_source = torch_view(source, batch)
            sample = _sample(torch_source, batch)
            _export_pt2e_int8(
                torch_source, sample, out, calibration, attempt.calibration, constraints, batch=batch
            )

        _run_step("quantize", attempt.label, quantize_torch)
    elif attempt.precision is Precision.FP32:
        shutil.copyfile(base, out)
    else:
        _run_step("quantize", attempt.label, lambda: _rewrite_weights(base, out, attempt.precision))
    if attempt.precision is not Precision.FP32:  # the fp32 base is compact already
        share_constant_vectors(out)
    notes = (
        _require_full_integer(out, attempt, constraints, kept_in_float=float_nodes)
        if attempt.precision is Precision.INT8
        else []
    )
    return Artifact(
        attempt=attempt,
        directory=directory,
        model_file=MODEL_FILE,
        files={MODEL_FILE: "model"},
        notes=[*mixed_notes, *notes],
        float_nodes=float_nodes,
    )


def _quantize_mixed(
    base: Path,
    out: Path,
    calibration: Dataset,
    constraints: QuantizationConstraints,
    mixed: MixedCheck | None,
    *,
    batch: int,
) -> tuple[list[str], list[str]]:
    """int8 with the fewest harmful ops in float (ai-edge-quantizer per-op recipe); the notes and the ops."""
    from converter.exporters.tflite_quantize import MixedQuantizer
    from converter.mixed_precision import build_mixed

    if mixed is None:
        raise ConversionError(
            "mixed-precision int8 needs the evaluation set and the metrics to judge its candidates",
            step="quantize",
            format=_FORMAT,
            hint="pass --eval, or pick another calibration method",
        )
    quantizer = MixedQuantizer(base, calibration, constraints, batch=batch)
    try:
        outcome = build_mixed(quantizer, out, calibration, mixed, suffix=".tflite")
    finally:
        quantizer.close()
    return [*quantizer.notes, *outcome.notes], outcome.float_nodes


def _require_full_integer(
    model: Path,
    attempt: Attempt,
    constraints: QuantizationConstraints,
    *,
    kept_in_float: list[str] | None = None,
) -> list[str]:
    """Scan a static int8 model for float ops: an error for a full-integer profile, else a warning note.

    ``kept_in_float``: the ops an ``int8/mixed`` model keeps in float on purpose (``FULLY_CONNECTED_6``):
    those, and the QUANTIZE/DEQUANTIZE around them, are a note, not a warning; only the rest warns.
    """
    from converter.exporters.tflite_scan import scan_tflite

    scan = scan_tflite(model, float_io=not constraints.full_integer_io)
    if scan.full_integer:
        return []
    if kept_in_float and not constraints.full_integer_io:
        return _mixed_scan_notes(scan, kept_in_float)
    found = scan.describe()
    if constraints.full_integer_io:
        raise ConversionError(
            f"the {attempt.label} model is not full-integer: {found}",
            step="quantize",
            format=_FORMAT,
            hint="the Edge TPU runs only full-integer models: replace those layers with ones that have "
            "int8 kernels (e.g. LeakyReLU with ReLU or PReLU), or pick a profile that runs float",
        )
    return [f"warning: the int8 model is not full-integer: {found} (they run on the CPU in float)"]


def _mixed_scan_notes(scan: Any, kept_in_float: list[str]) -> list[str]:
    """The scan of an ``int8/mixed`` model: the deliberate float ops as a note, anything else as a warning."""
    from collections import Counter

    from converter.exporters.tflite_scan import IntegerScan

    deliberate = Counter(name.rsplit("_", 1)[0] for name in kept_in_float)
    unexpected: list[str] = []
    for op in scan.float_ops:
        if deliberate[op] > 0:
            deliberate[op] -= 1
        else:
            unexpected.append(op)
    conversions, them = len(scan.conversions), "them" if len(kept_in_float) > 1 else "it"
    notes = [
        f"{', '.join(kept_in_float)} kept in float on purpose (int8/mixed), with {conversions} "
        f"QUANTIZE/DEQUANTIZE op{'s' if conversions != 1 else ''} around {them}; "
        f"{them} run{'s' if them == 'it' else ''} on the CPU in float"
    ]
    if unexpected:
        rest = IntegerScan(float_ops=tuple(unexpected)).describe()
        notes.append(f"warning: the int8 model is not full-integer: {rest} (they run on the CPU in float)")
    return notes


def _require_buildable(source: SourceModel) -> None:
    buildable = (
        source.onnx_path is not None
        if source.kind is SourceKind.ONNX
        else (source.kind is SourceKind.TORCH or source.kind in TENSORFLOW_SOURCES)
        and source.module is not None
    )
    if not buildable:
        raise ConversionError(
            f"TFLite is built from PyTorch, ONNX, Keras or a SavedModel, and this source is {source.kind}",
            step="export",
            format=_FORMAT,
            hint="give the model as one of those, or pick --format onnx",
        )


def torch_view(source: SourceModel, batch: int) -> SourceModel:
    """``source`` as a PyTorch model: itself, or (for ONNX) onnx2torch's module with ``batch`` fixed."""
    if source.kind is not SourceKind.ONNX or source.onnx_path is None:
        return source
    from converter.exporters.onnx_to_torch import torch_module_from_onnx

    with quiet():
        module = torch_module_from_onnx(source.onnx_path, batch)
    return SourceModel(
        kind=SourceKind.TORCH,
        name=source.name,
        description=f"{source.description} (through onnx2torch)",
        inputs=[with_batch(s, batch) for s in source.inputs],
        outputs=[with_batch(s, batch) for s in source.outputs],
        module=module,
        has_conv=source.has_conv,
    )


def _sample(source: SourceModel, batch: int) -> dict[str, np.ndarray]:
    return {s.name: np.zeros(concrete_shape(s, batch), s.dtype) for s in source.inputs}


def _run_step(step: str, label: str, action: Callable[[], None], *, tool: str = "litert-torch") -> None:
    with quiet() as captured:
        try:
            action()
        except ConversionError:
            raise
        except Exception as exc:
            op = unsupported_operator(str(exc) + captured.text())
            message = (
                f"{tool} has no TFLite lowering for {op}"
                if op
                else f"{tool} could not build {label}: {describe_failure(exc)}"
            )
            raise ConversionError(
                message,
                step=step,
                format=_FORMAT,
                hint=(
                    "pick --format onnx for this profile, or rewrite that layer with supported operators"
                    if step == "export"
                    else "try another precision with --precision, or a different calibration set"
                ),
            ) from exc


def named_io(source: SourceModel) -> Any:
    """The model wrapped so keyword inputs and dict outputs name the TFLite signature's tensors."""
    import torch

    inner = source.module
    input_names = [s.name for s in source.inputs]
    output_names = [s.name for s in source.outputs]

    class NamedIO(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, **feeds: Any) -> dict[str, Any]:
            result = self.inner(*(feeds[name] for name in input_names))
            if isinstance(result, dict):
                result = tuple(result.values())
            values = result if isinstance(result, (tuple, list)) else (result,)
            return dict(zip(output_names, values, strict=True))

    wrapper = NamedIO()
    # Only the wrapper itself: the inner model is in eval mode already, and a module unflattened
    # from an ExportedProgram (.pt2) refuses train()/eval() calls.
    wrapper.training = False
    return wrapper


def _torch_feeds(sample: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    return {name: torch.from_numpy(value) for name, value in sample.items()}


def _litert() -> Any:
    import litert_torch

    litert_torch.config.show_progress = False
    return litert_torch


def _export_float(source: SourceModel, sample: dict[str, np.ndarray], out: Path) -> None:
    litert_torch = _litert()
    feeds = _torch_feeds(sample)
    module = _without_unit_clamps(named_io(source), feeds)
    edge_model = litert_torch.convert(module, sample_kwargs=feeds)
    edge_model.export(str(out))


def _without_unit_clamps(module: Any, feeds: dict[str, Any]) -> Any:
    """``module`` with every ``clamp(x, 0, 1)`` written as ``relu6(6 * x) / 6``; itself when it has none.

    litert-torch lowers ``clamp(x, 0, 1)`` (a HardSigmoid with ONNX's alpha 0.2, as PaddlePaddle
    exports it; a gate) to TFLite's ``RELU_0_TO_1``, which ai-edge-quantizer leaves in float, so
    the model could never be full-integer. The same values as ``relu6(6x) / 6`` lower to a RELU6
    fused into the op before it and a MUL, which it quantizes.
    """
    import torch

    aten = torch.ops.aten
    try:
        graph_module = torch.export.export(module, (), feeds, strict=False).module()
    except Exception:  # litert-torch exports it its own way (and reports what fails): leave it to that
        return module
    graph = graph_module.graph
    changed = False
    for node in list(graph.nodes):
        bounds = _clamp_bounds(node, aten)
        if bounds != (0.0, 1.0):
            continue
        with graph.inserting_before(node):
            scaled = graph.call_function(aten.mul.Tensor, (node.args[0], 6.0))
            clipped = graph.call_function(aten.hardtanh.default, (scaled, 0.0, 6.0))
            gate = graph.call_function(aten.div.Tensor, (clipped, 6.0))
        node.replace_all_uses_with(gate)
        graph.erase_node(node)
        changed = True
    if not changed:
        return module
    graph.lint()
    graph_module.recompile()
    return graph_module


def _clamp_bounds(node: Any, aten: Any) -> tuple[float, float] | None:
    """The (min, max) of a scalar ``clamp``/``clip``/``hardtanh`` node, else None."""
    clamps = (aten.clamp.default, aten.clip.default)
    if node.op != "call_function" or node.target not in (*clamps, aten.hardtanh.default):
        return None
    args = list(node.args[1:3])
    if node.target in clamps:
        args = [
            node.kwargs.get("min", args[0] if args else None),
            node.kwargs.get("max", args[1] if len(args) > 1 else None),
        ]
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        return None
    return float(args[0]), float(args[1])


def _export_pt2e_int8(
    source: SourceModel,
    sample: dict[str, np.ndarray],
    out: Path,
    calibration: Dataset,
    method: CalibrationMethod | None,
    constraints: QuantizationConstraints,
    *,
    batch: int,
) -> None:
    import torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    litert_torch = _litert()
    feeds = _torch_feeds(sample)
    program = torch.export.export(named_io(source), (), feeds).module()
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(_pt2e_config(method, constraints))
    prepared = quantize_pt2e.prepare_pt2e(program, quantizer)
    move_exported_model_to_eval(prepared)
    with torch.no_grad():
        for batch_feeds in calibration.full_batches(batch):
            prepared(**{k: torch.from_numpy(np.asarray(v)) for k, v in batch_feeds.items()})
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    move_exported_model_to_eval(quantized)
    edge_model = litert_torch.convert(
        quantized, sample_kwargs=feeds, quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer)
    )
    edge_model.export(str(out))


def _pt2e_config(method: CalibrationMethod | None, constraints: QuantizationConstraints) -> Any:
    from litert_torch.quantize import pt2e_quantizer
    from torchao.quantization.pt2e.observer import MinMaxObserver

    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=constraints.per_channel)
    if method in (None, CalibrationMethod.HISTOGRAM):
        return config
    if method is not CalibrationMethod.MINMAX:
        raise ConversionError(
            f"PT2E has no {method} calibration",
            step="quantize",
            format=_FORMAT,
            hint="use histogram or minmax",
        )
    activation = dataclasses.replace(
        config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12)
    )
    return dataclasses.replace(config, input_activation=activation, output_activation=activation)


def _rewrite_weights(fp32: Path, out: Path, precision: Precision) -> None:
    from ai_edge_quantizer import quantizer, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName

    if precision is Precision.FP16:
        manager = recipe_manager.RecipeManager()
        manager.add_weight_only_config(
            regex=".*",
            operation_name=TFLOperationName.ALL_SUPPORTED,
            num_bits=16,
            algorithm_key=AlgorithmName.FLOAT_CASTING,
        )
        chosen = manager.get_quantization_recipe()
    else:  # int8-dynamic: int8 weights, activations quantized on the fly by the kernels
        chosen = recipe.dynamic_wi8_afp32()
    result = quantizer.Quantizer(str(fp32), chosen).quantize(enable_progress_report=False)
    out.write_bytes(bytes(result.quantized_model))


# --- Keras --------------------------------------------------------------------------------------


def keras_export_model(source: SourceModel, batch: int | None, *, dict_outputs: bool = True) -> Any:
    """The Keras model wrapped for export: named inputs with the planned batch, outputs by name.

    ``dict_outputs`` names the outputs through a dict (TFLiteConverter turns the keys into the
    signature's names); without it they stay a list, in ``source.outputs`` order, for converters
    that name outputs afterwards.

    The wrapper's fixed name matters: Keras numbers anonymous models, and the number ends up in
    the converted file, which would make two conversions in one process differ.
    """
    import keras

    inputs = [
        keras.Input(
            batch_shape=(batch, *(None if d == -1 else d for d in s.shape[1:])), name=s.name, dtype=s.dtype
        )
        for s in source.inputs
    ]
    result = source.module(inputs if len(inputs) > 1 else inputs[0], training=False)
    values = list(result.values()) if isinstance(result, dict) else result
    values = values if isinstance(values, (list, tuple)) else [values]
    outputs = (
        dict(zip((s.name for s in source.outputs), values, strict=True)) if dict_outputs else list(values)
    )
    return keras.Model(inputs, outputs, name="edgefleet_export")


def _from_keras(source: SourceModel, batch: int) -> Any:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(keras_export_model(source, batch))


def _from_saved_model(directory: Path) -> Any:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(directory))


def _tf_to_tflite(
    source: SourceModel,
    converter: Any,
    out: Path,
    batch: int,
    *,
    calibration: Dataset | None = None,
    constraints: QuantizationConstraints | None = None,
) -> None:
    """Run a TFLiteConverter: fp32, or (with ``calibration``) post-training int8."""
    import tensorflow as tf

    if calibration is not None:
        names = [s.name for s in source.inputs]

        def representative() -> Any:
            # Keyed by input name: a signature-based converter (SavedModel) matches them by name.
            for feeds in calibration.full_batches(batch):
                yield {n: feeds[n] for n in names}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        if constraints is not None and constraints.full_integer_io:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    out.write_bytes(converter.convert())
