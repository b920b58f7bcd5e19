"""ONNX: export from PyTorch, Keras or a SavedModel (or normalise an ONNX source), then fp16, static int8 QDQ, dynamic int8.

The fp32 export is the base every ONNX and OpenVINO artifact starts from. Static int8 follows
ONNX Runtime's recipe: ``quant_pre_process`` (shape inference and graph clean-up), then
``quantize_static`` in QDQ format, per channel, with the calibration method of the attempt.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.artifacts import Artifact
from converter.data import Dataset
from converter.errors import ConversionError, describe_failure, unsupported_operator
from converter.mixed_precision import MixedCheck
from converter.planning import TENSORFLOW_SOURCES, Attempt, CalibrationMethod
from converter.quiet import quiet
from converter.signature import concrete_shape
from converter.sources import SourceModel
from hw_profiles.schema import ModelFormat, Precision, QuantizationConstraints

MODEL_FILE = "model.onnx"
DEFAULT_OPSET = 18
# protobuf cannot serialise a message over 2 GiB; bigger models keep their weights in a sidecar.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
_HINT_UNSUPPORTED = (
    "replace or rewrite that layer, or export the model to ONNX yourself (with a custom translation) "
    "and convert the .onnx file"
)


def export_onnx(
    source: SourceModel, directory: Path, *, batch: int | None, opset: int = DEFAULT_OPSET
) -> Path:
    """Write the fp32 ONNX model for ``source`` as ``directory/model.onnx`` (``batch=None``: dynamic)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MODEL_FILE
    if source.onnx_path is not None:
        _normalise_onnx(source, path, batch)
    elif source.kind in TENSORFLOW_SOURCES:
        from converter.exporters.tensorflow_onnx import export_tensorflow_onnx

        export_tensorflow_onnx(source, path, batch=batch, opset=opset)
    else:
        _export_torch(source, path, batch, opset)
        _strip_exporter_metadata(path)
    return path


def _strip_exporter_metadata(path: Path) -> None:
    """Drop what torch.onnx records per node: stack traces, fx nodes, class paths, doc strings.

    They are for debugging the exporter and they weigh: 150 kB in mobilenet-mini, 3% of its fp32
    model and 8% of its int8 one. Worse, the stack traces hold the absolute path of the model's
    source file, so the same model converted from two checkouts would differ byte for byte.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    save_onnx(model, path)


def onnx_files(directory: Path) -> dict[str, Any]:
    """The files of an ONNX model in ``directory``: the model and, when present, its external data."""
    files: dict[str, Any] = {MODEL_FILE: "model"}
    for sidecar in sorted(directory.glob(f"{MODEL_FILE}.data")):
        files[sidecar.name] = "weights"
    return files


def build_onnx_variant(
    base: Path,
    attempt: Attempt,
    directory: Path,
    calibration: Dataset,
    constraints: QuantizationConstraints,
    *,
    reduce_range: bool = False,
    unsigned_activations: bool = False,
    mixed: MixedCheck | None = None,
) -> Artifact:
    """The ONNX artifact for ``attempt`` (fp32, fp16, int8 with a calibration method, int8-dynamic).

    ``reduce_range`` quantizes weights to 7 bits, for x86 devices without VNNI;
    ``unsigned_activations`` quantizes static int8 activations to uint8, for x86 devices
    (``converter.int8_kernels`` decides both). ``mixed``: how the ``int8/mixed`` attempt judges
    its candidates (``converter.mixed_precision``), which it needs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / MODEL_FILE
    notes: list[str] = []
    float_nodes: list[str] = []
    with quiet():
        try:
            if attempt.precision is Precision.INT8 and attempt.mixed:
                notes, float_nodes = _quantize_mixed(
                    base,
                    out,
                    calibration,
                    constraints,
                    directory,
                    mixed,
                    reduce_range=reduce_range,
                    unsigned_activations=unsigned_activations,
                )
            elif attempt.precision is Precision.FP32:
                _copy_onnx(base, directory)
            elif attempt.precision is Precision.FP16:
                _to_fp16(base, out)
            elif attempt.precision is Precision.INT8:
                notes = _quantize_static(
                    base,
                    out,
                    calibration,
                    attempt.calibration,
                    constraints,
                    directory,
                    reduce_range=reduce_range,
                    unsigned_activations=unsigned_activations,
                )
            else:
                _quantize_dynamic(base, out, constraints, reduce_range)
        except ConversionError:
            raise
        except Exception as exc:
            raise ConversionError(
                f"building {attempt.label} failed: {describe_failure(exc)}",
                step="quantize",
                format=ModelFormat.ONNX.value,
                hint="try another precision with --precision, or a different calibration set",
            ) from exc
    return Artifact(
        attempt=attempt,
        directory=directory,
        model_file=MODEL_FILE,
        files=onnx_files(directory),
        notes=notes,
        float_nodes=float_nodes,
    )


# --- fp32 export --------------------------------------------------------------------------------


def _export_torch(source: SourceModel, path: Path, batch: int | None, opset: int) -> None:
    import torch

    sample_batch = 2 if batch is None else batch
    args = tuple(torch.from_numpy(np.zeros(concrete_shape(s, sample_batch), s.dtype)) for s in source.inputs)
    input_names = [s.name for s in source.inputs]
    output_names = [s.name for s in source.outputs]
    big = _parameter_bytes(source.module) > EXTERNAL_DATA_THRESHOLD
    failures: list[BaseException] = []
    with quiet() as captured:
        if not isinstance(source.module, torch.jit.ScriptModule):
            try:
                dim = torch.export.Dim("batch", min=1)
                torch.onnx.export(
                    source.module,
                    args,
                    str(path),
                    dynamo=True,
                    external_data=big,
                    input_names=input_names,
                    output_names=output_names,
                    opset_version=opset,
                    dynamic_shapes=None if batch is not None else tuple({0: dim} for _ in args),
                    optimize=True,
                    verbose=False,
                )
                _single_definitions(path)
                return
            except Exception as exc:  # the dynamo exporter is strict; the TorchScript one may still work
                failures.append(exc)
        try:
            torch.onnx.export(
                source.module,
                args,
                str(path),
                dynamo=False,
                input_names=input_names,
                output_names=output_names,
                opset_version=min(opset, 17),
                dynamic_axes=None
                if batch is not None
                else {n: {0: "batch"} for n in input_names + output_names},
            )
        except Exception as exc:
            failures.append(exc)
            details = [describe_failure(f) for f in failures]
            op = unsupported_operator(" ".join(str(f) for f in failures) + captured.text())
            raise ConversionError(
                f"torch.onnx.export cannot translate {op}"
                if op
                else f"torch.onnx.export failed: {details[-1]}",
                step="export",
                format=ModelFormat.ONNX.value,
                hint=(f"{op} has no ONNX translation: " if op else "") + _HINT_UNSUPPORTED,
            ) from exc


def _single_definitions(path: Path) -> None:
    """Give every value one producer again, in place.

    torch.onnx's dynamo exporter names the graph outputs after ``output_names`` without checking
    for an internal value of that name: MiniLM's output called ``embedding`` collides with the
    output of ``aten.embedding`` (the word-embedding Gather), and ONNX Runtime refuses the file
    ("Duplicate definition of name"), OpenVINO's NNCF fails on it. Every definition but the last
    of a repeated name gets a fresh name, and the nodes between it and the next definition read it
    under that name (nodes are in topological order).
    """
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    if rename_redefinitions(model.graph):
        save_onnx(model, path)


def rename_redefinitions(graph: Any) -> list[str]:
    """Rename the earlier definitions of each value that several nodes produce; the renamed names."""
    last: dict[str, int] = {}
    produced: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.output:
            if name:
                last[name], produced[name] = index, produced.get(name, 0) + 1
    repeated = {name for name, count in produced.items() if count > 1}
    if not repeated:
        return []
    taken = {*produced, *(v.name for v in graph.input), *(t.name for t in graph.initializer)}
    alias: dict[str, str] = {}
    renamed: list[str] = []
    for index, node in enumerate(graph.node):
        for k, name in enumerate(node.input):
            node.input[k] = alias.get(name, name)
        for k, name in enumerate(node.output):
            if name not in repeated:
                continue
            if last[name] == index:
                alias.pop(name, None)
                continue
            fresh = _free_name(f"{name}_defined_{index}", taken)
            taken.add(fresh)
            node.output[k], alias[name] = fresh, fresh
            renamed.append(fresh)
    # Shapes recorded under a repeated name may be either definition's: let inference redo them.
    kept = [v for v in graph.value_info if v.name not in repeated]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return renamed


def _normalise_onnx(source: SourceModel, path: Path, batch: int | None) -> None:
    """The ONNX source with its outputs declared as they really are, for ``batch`` samples (None: any)."""
    import onnx

    assert source.onnx_path is not None
    model = onnx.load(str(source.onnx_path), load_external_data=True)
    outputs = {spec.name: spec for spec in source.outputs}
    for value in model.graph.output:
        spec = outputs.get(value.name)
        if spec is not None and not _declared_as(value, spec.shape):
            # A wrong declaration (ddddocr's [1, seqlen] for [T, 1, 8210]) would make every runtime
            # report, and the manifest record, a shape the model never returns.
            _declare(value, spec.shape)
    if batch is not None:
        for value in [*model.graph.input, *model.graph.output]:
            spec = outputs.get(value.name)
            axis = 0 if spec is None else spec.batch_axis  # inputs: axis 0, as always
            dims = value.type.tensor_type.shape.dim
            if axis is not None and axis < len(dims) and not _fixed(dims[axis]):
                dims[axis].Clear()
                dims[axis].dim_value = batch
    save_onnx(model, path)


def _fixed(dim: Any) -> bool:
    return bool(dim.HasField("dim_value") and dim.dim_value > 0)


def _declared_as(value: Any, shape: Sequence[int]) -> bool:
    """Whether an ONNX value's declared shape has ``shape``'s rank and no fixed size ``shape`` lacks."""
    dims = value.type.tensor_type.shape.dim
    return len(dims) == len(shape) and all(
        not _fixed(dim) or dim.dim_value == size for dim, size in zip(dims, shape, strict=True)
    )


def _declare(value: Any, shape: Sequence[int]) -> None:
    tensor_type = value.type.tensor_type
    tensor_type.ClearField("shape")
    tensor_type.shape.SetInParent()  # a rank-0 shape is still a shape, not an unknown one
    for axis, size in enumerate(shape):
        dim = tensor_type.shape.dim.add()
        if size > 0:
            dim.dim_value = size
        else:
            dim.dim_param = f"{value.name}_{axis}"


def save_onnx(model: Any, path: Path) -> None:
    """Save as one file, or with a ``model.onnx.data`` sidecar when protobuf's 2 GiB limit requires."""
    import onnx

    for stale in path.parent.glob(f"{path.name}.data"):
        stale.unlink()
    if model.ByteSize() > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{path.name}.data",
        )
    else:
        onnx.save_model(model, str(path))


def _copy_onnx(base: Path, directory: Path) -> None:
    for name in onnx_files(base.parent):
        shutil.copyfile(base.parent / name, directory / name)


# --- variants -----------------------------------------------------------------------------------


def _to_fp16(base: Path, out: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(base), load_external_data=True)
    # Keep float32 I/O: clients send float32, the first and last ops cast.
    save_onnx(convert_float_to_float16(model, keep_io_types=True), out)


# Biases stay float in the QDQ model. A quantized bias is an int32 array *plus* a per-channel scale
# and zero point for its DequantizeLinear: three arrays where one does. ONNX Runtime fuses the
# float bias into QLinearConv all the same (quantizing it at load with input scale x weight
# scale, the values it would have stored), and TensorRT takes float biases in QDQ graphs. Measured
# on mobilenet-mini: 1.69 MB → 1.58 MB (3.32x → 3.57x smaller than fp32), identical outputs.
QUANTIZE_BIAS = False

_ORT_METHODS = {
    CalibrationMethod.MINMAX: "MinMax",
    CalibrationMethod.ENTROPY: "Entropy",
    CalibrationMethod.PERCENTILE: "Percentile",
}


def _quantize_static(
    base: Path,
    out: Path,
    calibration: Dataset,
    method: CalibrationMethod | None,
    constraints: QuantizationConstraints,
    directory: Path,
    *,
    reduce_range: bool,
    unsigned_activations: bool,
) -> list[str]:
    """Quantize ``base`` into ``out``; return the notes for the report (opset upgrade, per-tensor)."""
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if method not in _ORT_METHODS:
        raise ConversionError(
            f"ONNX Runtime has no {method} calibration",
            step="quantize",
            format=ModelFormat.ONNX.value,
            hint=f"use one of {', '.join(m.value for m in _ORT_METHODS)}",
        )
    prepared = directory / "preprocessed.onnx"
    upgraded = directory / "upgraded.onnx"
    cache = directory / "calibration.json"
    qdq = qdq_opset(base, upgraded, per_channel=constraints.per_channel)
    prepare_for_qdq(upgraded if qdq.upgraded else base, prepared)
    reader = _Reader(calibration, _static_batch(base))
    ort_method = getattr(OrtMethod, _ORT_METHODS[method])
    if method is CalibrationMethod.ENTROPY:
        _entropy_ranges(prepared, reader, cache)
    try:
        quantize_static(
            str(prepared),
            str(out),
            None if cache.is_file() else reader,
            quant_format=QuantFormat.QDQ,
            per_channel=qdq.per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8 if unsigned_activations else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=ort_method,
            calibration_cache_path=str(cache) if cache.is_file() else None,
            use_external_data_format=base.with_name(f"{base.name}.data").exists(),
            extra_options={
                "ActivationSymmetric": constraints.symmetric_activations,
                "WeightSymmetric": constraints.symmetric_weights,
                "QuantizeBias": QUANTIZE_BIAS,
            },
        )
    finally:
        prepared.unlink(missing_ok=True)
        cache.unlink(missing_ok=True)
        for written in directory.glob(f"{upgraded.name}*"):  # with its external data, if it has any
            written.unlink()
    return qdq.notes


def prepare_for_qdq(model_path: Path, prepared: Path) -> None:
    """``quant_pre_process`` (shape inference, graph clean-up), then each bias made the node's own.

    Pre-processing only helps: a model it fails on is quantized as it is.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
    except Exception:
        shutil.copyfile(model_path, prepared)
    model = onnx.load(str(prepared), load_external_data=True)
    if unshare_biases(model):
        save_onnx(model, prepared)


# The ops whose input 2 ONNX Runtime's QDQ quantizer treats as a bias.
_BIAS_OPS = frozenset({"Conv", "ConvTranspose", "Gemm"})


def unshare_biases(model: Any) -> int:
    """Give each Conv, ConvTranspose and Gemm a bias initializer of its own; return the copies made.

    ONNX Runtime's QDQ quantizer copies a bias that two nodes share itself, naming the copy
    ``{bias}{n}`` after the initializers alone, so the name can be another tensor's: in
    basic-pitch (tf2onnx) the bias ``conv1d_25;conv1d_25`` copied as ``conv1d_25;conv1d_252``,
    the name of a Conv's output, and the node that read that output read the bias instead (ONNX
    Runtime then refused the model: ``Invalid attribute perm``). Copies made here get names no
    tensor, node or initializer has.
    """
    initializers = {init.name: init for init in model.graph.initializer}
    taken = _graph_names(model)
    owned: set[str] = set()
    copies = 0
    for node in model.graph.node:
        if node.op_type not in _BIAS_OPS or len(node.input) < 3 or node.input[2] not in initializers:
            continue
        bias = node.input[2]
        if bias not in owned:
            owned.add(bias)
            continue
        copy = model.graph.initializer.add()
        copy.CopyFrom(initializers[bias])
        copy.name = _free_name(f"{bias}_copy", taken)
        taken.add(copy.name)
        node.input[2] = copy.name
        copies += 1
    return copies


def _graph_names(model: Any) -> set[str]:
    graph = model.graph
    names = {i.name for i in graph.initializer} | {v.name for v in [*graph.input, *graph.output]}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
    return names


# Per-channel QDQ writes DequantizeLinear (and QuantizeLinear) with an ``axis``, which ONNX added in
# opset 13: ONNX Runtime refuses an older model that has one ("Unrecognized attribute: axis").
# quantize_static does not upgrade the model itself (only below opset 10, to 11).
QDQ_PER_CHANNEL_OPSET = 13


@dataclass(frozen=True)
class QdqOpset:
    """How a model goes into static QDQ: upgraded (written to the given path) or not, per channel or not."""

    opset: int | None
    upgraded: bool
    per_channel: bool
    notes: list[str]


def onnx_opset(model: Any) -> int | None:
    """The model's default-domain (``ai.onnx``) opset, or None when it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def qdq_opset(base: Path, upgraded: Path, *, per_channel: bool) -> QdqOpset:
    """Make ``base`` fit for per-channel QDQ: upgrade it to opset 13 (into ``upgraded``) when older.

    When the upgrade fails (no adapter for some operator, or the upgraded model does not check), the
    model is quantized per tensor at its own opset instead, whose QDQ needs no ``axis``. Either way
    the returned notes say so.
    """
    import onnx
    import onnx.version_converter

    if not per_channel:
        return QdqOpset(None, False, False, [])
    model = onnx.load(str(base), load_external_data=True)
    opset = onnx_opset(model)
    if opset is None or opset >= QDQ_PER_CHANNEL_OPSET:
        return QdqOpset(opset, False, True, [])
    try:
        converted = onnx.version_converter.convert_version(model, QDQ_PER_CHANNEL_OPSET)
        onnx.checker.check_model(converted, full_check=True)
        save_onnx(converted, upgraded)
    except Exception as exc:
        upgraded.unlink(missing_ok=True)
        return QdqOpset(
            opset,
            False,
            False,
            [
                f"quantized per tensor: the model is opset {opset}, per-channel QDQ needs opset "
                f"{QDQ_PER_CHANNEL_OPSET} (DequantizeLinear's axis), and the upgrade failed "
                f"({describe_failure(exc)})"
            ],
        )
    return QdqOpset(
        opset,
        True,
        True,
        [
            f"upgraded from opset {opset} to opset {QDQ_PER_CHANNEL_OPSET} before quantizing: "
            "per-channel QDQ needs DequantizeLinear's axis, which opset 13 added"
        ],
    )


# ONNX Runtime's Entropy calibrator defaults to 128 histogram bins for 128 quantized bins, which
# leaves its KL search no threshold below the maximum: it returns MinMax's ranges exactly. TensorRT's
# entropy calibration (which ONNX Runtime's follows) searches a 2048-bin histogram.
ENTROPY_HISTOGRAM_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128


def _entropy_ranges(model: Path, reader: _Reader, cache: Path) -> None:
    """Calibrate ``model`` with the KL-divergence search on a fine histogram; save the ranges to ``cache``."""
    import tempfile

    from onnxruntime.quantization.calibrate import CalibrationMethod as OrtMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    with tempfile.TemporaryDirectory(prefix="edgefleet-entropy-") as scratch:
        calibrator = create_calibrator(
            model,
            augmented_model_path=str(Path(scratch) / "augmented.onnx"),
            calibrate_method=OrtMethod.Entropy,
            use_external_data_format=model.with_name(f"{model.name}.data").exists(),
            extra_options={
                "num_bins": ENTROPY_HISTOGRAM_BINS,
                "num_quantized_bins": ENTROPY_QUANTIZED_BINS,
            },
        )
        calibrator.collect_data(reader)
        save_tensors_data(calibrator.compute_data(), cache)


def _quantize_dynamic(
    base: Path, out: Path, constraints: QuantizationConstraints, reduce_range: bool
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(base),
        str(out),
        per_channel=constraints.per_channel,
        reduce_range=reduce_range,
        weight_type=QuantType.QInt8,
        use_external_data_format=base.with_name(f"{base.name}.data").exists(),
    )


CALIBRATION_BATCH = 32


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a Dataset.

    Every batch has the same size: ONNX Runtime's histogram calibrators (Entropy, Percentile)
    stack the batches' activations into one array and fail on a short last batch. Without a fixed
    model batch, the size is the largest divisor of the sample count up to ``CALIBRATION_BATCH``,
    so that no sample is dropped.
    """

    def __init__(self, data: Dataset, batch: int | None) -> None:
        size = batch or even_batch(data.size, CALIBRATION_BATCH)
        usable = data.size - data.size % size
        self._batches: Iterator[dict[str, np.ndarray]] = data.take(usable).batches(size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # part of the protocol; each reader is used once
        return None


def even_batch(count: int, limit: int) -> int:
    """The largest batch size up to ``limit`` that divides ``count`` (1 when count is prime)."""
    return next(size for size in range(min(limit, max(count, 1)), 0, -1) if count % size == 0)


def _static_batch(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return int(dims[0].dim_value)
    return None


def _parameter_bytes(module: Any) -> int:
    try:
        return sum(p.numel() * p.element_size() for p in module.parameters())
    except Exception:
        return 0


# --- mixed precision: one calibration, many quantizations ----------------------------------------

# The operators whose int8 kernels carry the speed-up and the error: what mixed precision may keep
# in float. (Elementwise and pooling nodes follow their neighbours' quantization in QDQ.)
QUANTIZABLE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Attention", "LSTM", "GRU", "Einsum"})


class StaticQuantizer:
    """Static QDQ int8 calibrated once (MinMax), then quantized as often as needed with float nodes.

    The mixed-precision search (``converter.mixed_precision``) re-quantizes the same model with
    different ``nodes_to_exclude``: the activation ranges are computed once and each quantization
    reads them from a cache, so a re-quantization costs a graph rewrite, not a calibration. The
    model is prepared exactly as ``_quantize_static`` prepares it (opset upgrade for per-channel
    QDQ, ``quant_pre_process``), and every quantizable node is given a name when it lacks one.
    """

    def __init__(
        self,
        base: Path,
        calibration: Dataset,
        constraints: QuantizationConstraints,
        directory: Path,
        *,
        reduce_range: bool = False,
        unsigned_activations: bool = False,
    ) -> None:
        import onnx
        from onnxruntime.quantization.calibrate import CalibrationMethod as OrtMethod
        from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

        self.base = base
        self.constraints = constraints
        self.reduce_range = reduce_range
        self.unsigned_activations = unsigned_activations
        self.external = base.with_name(f"{base.name}.data").exists()
        directory.mkdir(parents=True, exist_ok=True)
        self.prepared = directory / "preprocessed.onnx"
        self.cache = directory / "calibration.json"
        upgraded = directory / "upgraded.onnx"
        qdq = qdq_opset(base, upgraded, per_channel=constraints.per_channel)
        self.per_channel, self.notes = qdq.per_channel, list(qdq.notes)
        try:
            with quiet():
                prepare_for_qdq(upgraded if qdq.upgraded else base, self.prepared)
        finally:
            for written in directory.glob(f"{upgraded.name}*"):
                written.unlink()
        model = onnx.load(str(self.prepared), load_external_data=True)
        taken = {n.name for n in model.graph.node if n.name}
        renamed = False
        for index, node in enumerate(model.graph.node):
            if not node.name:
                node.name = _free_name(f"{node.op_type}_{index}", taken)
                taken.add(node.name)
                renamed = True
        if renamed:
            save_onnx(model, self.prepared)
        self.nodes: list[str] = [n.name for n in model.graph.node if n.op_type in QUANTIZABLE_OPS]
        import tempfile

        with tempfile.TemporaryDirectory(prefix="edgefleet-mixed-") as scratch, quiet():
            calibrator = create_calibrator(
                self.prepared,
                augmented_model_path=str(Path(scratch) / "augmented.onnx"),
                calibrate_method=OrtMethod.MinMax,
                use_external_data_format=self.external,
            )
            calibrator.collect_data(_Reader(calibration, _static_batch(base)))
            save_tensors_data(calibrator.compute_data(), self.cache)

    def quantize(self, out: Path, exclude: Sequence[str] = ()) -> None:
        """Write the int8 model to ``out`` with the ``exclude`` nodes kept in float."""
        from onnxruntime.quantization import CalibrationMethod as OrtMethod
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        with quiet():
            quantize_static(
                str(self.prepared),
                str(out),
                None,
                quant_format=QuantFormat.QDQ,
                per_channel=self.per_channel,
                reduce_range=self.reduce_range,
                activation_type=QuantType.QUInt8 if self.unsigned_activations else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=OrtMethod.MinMax,
                calibration_cache_path=str(self.cache),
                nodes_to_exclude=list(exclude),
                use_external_data_format=self.external,
                extra_options={
                    "ActivationSymmetric": self.constraints.symmetric_activations,
                    "WeightSymmetric": self.constraints.symmetric_weights,
                    "QuantizeBias": QUANTIZE_BIAS,
                },
            )

    def close(self) -> None:
        for path in (self.prepared, self.cache):
            path.unlink(missing_ok=True)
        for sidecar in self.prepared.parent.glob(f"{self.prepared.name}.data"):
            sidecar.unlink()


def _quantize_mixed(
    base: Path,
    out: Path,
    calibration: Dataset,
    constraints: QuantizationConstraints,
    directory: Path,
    mixed: MixedCheck | None,
    *,
    reduce_range: bool,
    unsigned_activations: bool,
) -> tuple[list[str], list[str]]:
    """int8 with the fewest harmful nodes in float; the notes and the float nodes."""
    from converter.mixed_precision import build_mixed

    if mixed is None:
        raise ConversionError(
            "mixed-precision int8 needs the evaluation set and the metrics to judge its candidates",
            step="quantize",
            format=ModelFormat.ONNX.value,
            hint="pass --eval, or pick another calibration method",
        )
    quantizer = StaticQuantizer(
        base,
        calibration,
        constraints,
        directory,
        reduce_range=reduce_range,
        unsigned_activations=unsigned_activations,
    )
    try:
        outcome = build_mixed(quantizer, out, calibration, mixed)
    finally:
        quantizer.close()
    return [*quantizer.notes, *outcome.notes], outcome.float_nodes


def _free_name(name: str, taken: set[str]) -> str:
    candidate, suffix = name, 1
    while candidate in taken:
        candidate, suffix = f"{name}_{suffix}", suffix + 1
    return candidate
