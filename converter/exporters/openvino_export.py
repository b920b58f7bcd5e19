"""OpenVINO IR from the fp32 ONNX base (or Keras): fp32, fp16 weights, int8 with NNCF, int8 weights.

``ov.save_model`` compresses weights to fp16 unless told not to, so fp32 asks for
``compress_to_fp16=False`` explicitly. int8 uses ``nncf.quantize`` with an explicit activation
range estimator per calibration method, or ``nncf.quantize_with_accuracy_control``, which keeps
the layers that cost the most accuracy in float until the drop fits the profile's tolerance.

The IR's inputs and outputs carry exactly the source model's names (``name_ports``). OpenVINO
gives a tensor every name it had on the way: an ONNX input that goes straight into a Cast is
named both ``in_cache0`` and ``/encoder/.../Cast_output_0``, and ``get_any_name`` may pick the
Cast's, which no client knows.

Conversion names some nodes with a process-wide counter (``Constant_27877``), so the same model
converted twice in one process would differ byte for byte. ``canonical_names`` renumbers those
names in graph order, which makes the IR a function of its inputs alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converter.artifacts import Artifact
from converter.data import Dataset
from converter.errors import ConversionError, describe_failure
from converter.planning import Attempt, CalibrationMethod
from converter.quiet import quiet
from edge_agent.runtimes.signal_stack import preserved_signal_stack
from hw_profiles.schema import ModelFormat, Precision, QuantizationConstraints

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"
_FORMAT = ModelFormat.OPENVINO.value
_GENERATED_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*_\d+$")

# Scores a candidate's outputs for some evaluation samples (their row indices) against the fp32
# reference, with validation's own metrics: higher is better (``converter.metrics.control_score``).
# Scores a candidate's outputs for consecutive batches of evaluation samples against the fp32
# reference's rows (``converter.passes._control_scorer``), joining them along each output's batch axis.
Scorer = Callable[[Sequence[Mapping[str, np.ndarray]], np.ndarray], float]


def export_openvino(
    directory: Path,
    *,
    onnx: Path | None = None,
    saved_model: Path | None = None,
    keras_model: Any = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
) -> Path:
    """Convert the fp32 ONNX model, SavedModel directory or Keras model to ``directory/model.xml``.

    ``input_names`` and ``output_names`` (the source's, in order) become the IR's tensor names.

    ``ov.convert_model`` (not ``Core.read_model``) also runs the offline graph transformations,
    BatchNorm folding and friends, which gives a smaller, faster model to quantize.
    """
    import openvino as ov

    directory.mkdir(parents=True, exist_ok=True)
    path = onnx if onnx is not None else saved_model
    with quiet():
        try:
            model = ov.convert_model(str(path) if path is not None else keras_model)
        except Exception as exc:
            raise ConversionError(
                f"OpenVINO could not convert the model: {describe_failure(exc)}",
                step="export",
                format=_FORMAT,
                hint="an operator has no OpenVINO translation: pick another --format for this profile",
            ) from exc
        if input_names is not None:
            name_ports(model.inputs, input_names, "inputs")
        if output_names is not None:
            name_ports(model.outputs, output_names, "outputs")
        canonical_names(model)
        ov.save_model(model, str(directory / MODEL_FILE), compress_to_fp16=False)
    _scrub_paths(directory / MODEL_FILE)
    return directory / MODEL_FILE


def build_openvino(
    base: Path,
    attempt: Attempt,
    directory: Path,
    calibration: Dataset,
    constraints: QuantizationConstraints,
    *,
    accuracy_control: tuple[Dataset, Scorer, float] | None = None,
) -> Artifact:
    """Build the IR for ``attempt`` from the fp32 base IR ``base`` (see ``export_openvino``).

    ``accuracy_control`` is (evaluation set, scorer, max drop) for the accuracy-control method.
    """
    import openvino as ov

    directory.mkdir(parents=True, exist_ok=True)
    with quiet():
        try:
            model = ov.Core().read_model(str(base))
            if attempt.precision is Precision.INT8:
                with preserved_signal_stack():  # NNCF compiles on Cores of its own
                    model = _quantize(model, attempt.calibration, calibration, constraints, accuracy_control)
            elif attempt.precision is Precision.INT8_DYNAMIC:
                model = _compress_weights(model, constraints)
            canonical_names(model)
            ov.save_model(
                model, str(directory / MODEL_FILE), compress_to_fp16=attempt.precision is Precision.FP16
            )
        except ConversionError:
            raise
        except Exception as exc:
            raise ConversionError(
                f"building {attempt.label} failed: {describe_failure(exc)}",
                step="quantize",
                format=_FORMAT,
                hint="try another precision with --precision, or a different calibration set",
            ) from exc
    return Artifact(
        attempt=attempt,
        directory=directory,
        model_file=MODEL_FILE,
        files={MODEL_FILE: "model", WEIGHTS_FILE: "weights"},
    )


def name_ports(ports: Any, names: list[str], role: str) -> None:
    """Give each input or output port exactly one name: its name in the source.

    A port that already carries one of ``names`` among its tensor names keeps that one alone (an
    ONNX input also named after the Cast it feeds; a SavedModel's signature keys); the rest are
    named in order (Keras names outputs after internal tensors, ``keras_tensor_27``).
    """
    ports = list(ports)
    if len(ports) != len(names):
        raise ConversionError(
            f"OpenVINO sees {len(ports)} {role}, the source {len(names)}",
            step="export",
            format=_FORMAT,
            hint="this is a converter bug worth reporting; meanwhile pick another --format",
        )
    by_port = {i: next((n for n in names if n in port.get_names()), None) for i, port in enumerate(ports)}
    remaining = iter(n for n in names if n not in by_port.values())
    for i, port in enumerate(ports):
        port.get_tensor().set_names({by_port[i] or next(remaining)})


def canonical_names(model: Any) -> None:
    """Renumber counter-generated node names (``Convert_53120``) by position in the graph."""
    for index, op in enumerate(model.get_ordered_ops()):
        name = op.get_friendly_name()
        if _GENERATED_NAME.match(name):
            op.set_friendly_name(f"{op.get_type_name()}_{index}")


def _scrub_paths(xml: Path) -> None:
    # rt_info records the path the model was converted from; only its name is worth keeping,
    # and keeping the directory would make the file depend on where the converter ran.
    text = xml.read_text(encoding="utf-8")
    cleaned = re.sub(r'(<input_model value=")[^"]*?([^"/\\]*")', r"\1\2", text)
    if cleaned != text:
        xml.write_text(cleaned, encoding="utf-8")


def _quantize(
    model: Any,
    method: CalibrationMethod | None,
    calibration: Dataset,
    constraints: QuantizationConstraints,
    accuracy_control: tuple[Dataset, Scorer, float] | None,
) -> Any:
    # NNCF sends usage telemetry unless NNCF_CI is set (its only effect): a converter must not
    # phone home, and the sender forks a process from a multithreaded interpreter.
    os.environ.setdefault("NNCF_CI", "1")
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    nncf.set_log_level(40)  # ERROR: keeps the statistics progress bars off the terminal
    batch = _static_batch(model)
    dataset = nncf.Dataset(list(calibration.batches(batch or 1)))
    preset = (
        nncf.QuantizationPreset.PERFORMANCE
        if constraints.symmetric_activations
        else nncf.QuantizationPreset.MIXED
    )
    # NNCF's generic patterns fail on a transformer (MiniLM: KeyError in its quantizer propagation
    # on the word-embedding Gather); its transformer patterns are the documented route for them.
    model_type = nncf.ModelType.TRANSFORMER if is_transformer(model) else None
    if method is CalibrationMethod.ACCURACY_CONTROL:
        if accuracy_control is None:
            raise ConversionError(
                "accuracy-control quantization needs the evaluation set",
                step="quantize",
                format=_FORMAT,
                hint="pass --eval",
            )
        eval_set, scorer, max_drop = accuracy_control
        step = batch or 1
        # Each item carries its rows, so the scorer compares exactly the samples NNCF runs.
        items = list(zip(eval_set.spans(step), eval_set.batches(step), strict=True))
        validation = nncf.Dataset(items, lambda item: item[1])
        return nncf.quantize_with_accuracy_control(
            model,
            dataset,
            validation,
            validation_fn=_validation_fn(scorer),
            max_drop=max_drop,
            preset=preset,
            model_type=model_type,
            subset_size=calibration.size,
        )
    estimators = {
        CalibrationMethod.MINMAX: RangeEstimatorParametersSet.MINMAX,
        CalibrationMethod.PERCENTILE: RangeEstimatorParametersSet.MEAN_QUANTILE,
    }
    if method not in estimators:
        raise ConversionError(
            f"NNCF has no {method} calibration here",
            step="quantize",
            format=_FORMAT,
            hint="use minmax, percentile or accuracy-control",
        )
    return nncf.quantize(
        model,
        dataset,
        preset=preset,
        model_type=model_type,
        subset_size=calibration.size,
        advanced_parameters=AdvancedQuantizationParameters(
            activations_range_estimator_params=estimators[method]
        ),
    )


def is_transformer(model: Any) -> bool:
    """Attention in the graph: a Softmax, and a MatMul of two activations (Q·Kᵀ), not of weights."""
    ops = model.get_ordered_ops()
    if not any(op.get_type_name() == "Softmax" for op in ops):
        return False
    return any(
        op.get_type_name() == "MatMul" and not any(_is_weight(op.input_value(i).get_node()) for i in range(2))
        for op in ops
    )


def _is_weight(node: Any) -> bool:
    """A constant, or a constant behind its decompression Convert (fp16-compressed weights)."""
    if node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return bool(node.get_type_name() == "Constant")


def _validation_fn(scorer: Scorer) -> Callable[[Any, Any], tuple[float, list[float]]]:
    """NNCF's validation function: the score over the items it is given, and each item's own.

    Returning per-item scores puts NNCF in metric mode, where it ranks layers by this metric
    (not by its own output distance) and validates on the subsets it picks.
    """

    def validate(compiled: Any, data: Any) -> tuple[float, list[float]]:
        outputs: list[dict[str, np.ndarray]] = []
        rows: list[np.ndarray] = []
        for (start, stop), feeds in data:
            outputs.append(run_compiled(compiled, feeds))
            rows.append(np.arange(start, stop))
        per_item = [scorer([out], index) for out, index in zip(outputs, rows, strict=True)]
        return scorer(outputs, np.concatenate(rows)), per_item

    return validate


def _compress_weights(model: Any, constraints: QuantizationConstraints) -> Any:
    """int8 weights, float activations: the CPU plugin quantizes activations on the fly."""
    os.environ.setdefault("NNCF_CI", "1")
    import nncf

    nncf.set_log_level(40)
    mode = (
        nncf.CompressWeightsMode.INT8_SYM
        if constraints.symmetric_weights
        else nncf.CompressWeightsMode.INT8_ASYM
    )
    return nncf.compress_weights(model, mode=mode)


def _static_batch(model: Any) -> int | None:
    shape = model.inputs[0].get_partial_shape()
    if shape.rank.is_static and len(shape) and shape[0].is_static:
        return int(shape[0].get_length())
    return None


def run_compiled(compiled: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an NNCF candidate (an ``ov.CompiledModel``) and return its outputs by name."""
    result = compiled(feeds)
    return {port.get_any_name(): np.asarray(result[port]) for port in compiled.outputs}
