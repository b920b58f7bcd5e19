"""Static int8 TFLite with ai-edge-quantizer: quantize the fp32 ``.tflite`` after the fact.

PT2E (quantizing the PyTorch graph before litert-torch lowers it) needs a TFLite lowering for
every quantized aten op, and real models use ops it lacks (``aten.mul.Tensor`` in hardswish,
``x * sigmoid(x)``, squeeze-and-excite). ai-edge-quantizer (AEQ) works on the TFLite model
litert-torch already lowered, so anything that exports to fp32 TFLite can be quantized:

- recipe ``static_wi8_ai8``: int8 weights (symmetric, per channel unless the profile asks for
  per-tensor), int8 activations (asymmetric, per tensor), with each tensor's minimum and maximum
  over the converter's calibration arrays (fed through the model's signature one batch at a
  time) as its range;
- int8 input and output tensors when the profile needs full-integer models (the Edge TPU); float
  I/O otherwise, by leaving the INPUT and OUTPUT "ops" unquantized (``no_quantize``): the model
  starts with a QUANTIZE and ends with a DEQUANTIZE.

AEQ leaves an op it has no int8 kernel for in float, silently: ``converter.exporters.tflite_scan``
checks the result.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from converter.data import Dataset
from hw_profiles.schema import QuantizationConstraints

# AEQ's calibrator runs the float model in an interpreter per sample; more threads than cores
# only contend (the converter often shares a small machine).
_MAX_CALIBRATION_THREADS = 4


def static_int8_recipe(constraints: QuantizationConstraints) -> list[dict[str, Any]]:
    """The AEQ recipe for ``constraints``: static int8 everywhere, float I/O unless the profile needs integer I/O."""
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    manager = recipe_manager.RecipeManager()
    manager.add_static_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        activation_num_bits=8,
        weight_num_bits=8,
        weight_granularity=(
            qtyping.QuantGranularity.CHANNELWISE
            if constraints.per_channel
            else qtyping.QuantGranularity.TENSORWISE
        ),
    )
    if not constraints.full_integer_io:
        for edge in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            manager.add_quantization_config(
                regex=".*", operation_name=edge, algorithm_key=AlgorithmName.NO_QUANTIZE
            )
    return list(manager.get_quantization_recipe())


def quantize_static_int8(
    fp32: Path, out: Path, calibration: Dataset, constraints: QuantizationConstraints, *, batch: int
) -> None:
    """Write ``out``: ``fp32`` quantized to static int8, calibrated on ``calibration`` in batches of ``batch``."""
    from ai_edge_quantizer import calibrator, quantizer, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    chosen = static_int8_recipe(constraints)
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(chosen)
    # True min/max over the whole set. AEQ's default (``Quantizer.calibrate``) is a moving average
    # of each batch's min/max (smoothing 0.95), which clips the ranges to the last few dozen
    # samples: on digits-cnn, cosine 0.9978 and mean error 0.150 against 0.99995 and 0.031 here.
    ranges = calibrator.Calibrator(
        fp32.read_bytes(),
        num_threads=max(1, min(_MAX_CALIBRATION_THREADS, os.cpu_count() or 1)),
        qsv_update_func=qsv_utils.min_max_update,
    )
    signature, dtypes = _signature(fp32)
    ranges.calibrate({signature: list(_feeds(calibration, batch, dtypes))}, manager)
    result = quantizer.Quantizer(str(fp32), chosen).quantize(
        ranges.get_model_qsvs(), enable_progress_report=False
    )
    out.write_bytes(_with_signature_at_the_edges(bytes(result.quantized_model)))


def _with_signature_at_the_edges(model: bytes) -> bytes:
    """``model`` with each signature tensor moved to the float edge that AEQ added behind (or before) it.

    With float I/O and several outputs, ai-edge-quantizer 0.10 can leave a signature output on
    the int8 tensor that now feeds the new DEQUANTIZE instead of on the DEQUANTIZE's float output,
    which is the subgraph's output; LiteRT then cannot name the outputs by signature. Unchanged
    (byte for byte) when every signature tensor is already a subgraph input or output.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    tree = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    changed = False
    for signature in tree.signatureDefs or []:
        subgraph = tree.subgraphs[signature.subgraphIndex]
        inputs, outputs = {int(i) for i in subgraph.inputs}, {int(i) for i in subgraph.outputs}
        quantized_from: dict[int, int] = {}  # QUANTIZE output -> its input
        dequantized_to: dict[int, int] = {}  # DEQUANTIZE input -> its output
        for op in subgraph.operators or []:
            name = flatbuffer_utils.opcode_to_name(tree, op.opcodeIndex)
            if name == "QUANTIZE":
                quantized_from[int(op.outputs[0])] = int(op.inputs[0])
            elif name == "DEQUANTIZE":
                dequantized_to[int(op.inputs[0])] = int(op.outputs[0])
        for tensor in signature.inputs or []:
            edge = quantized_from.get(tensor.tensorIndex)
            if tensor.tensorIndex not in inputs and edge in inputs:
                tensor.tensorIndex, changed = edge, True
        for tensor in signature.outputs or []:
            edge = dequantized_to.get(tensor.tensorIndex)
            if tensor.tensorIndex not in outputs and edge in outputs:
                tensor.tensorIndex, changed = edge, True
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tree)) if changed else model


def _signature(model: Path) -> tuple[str, dict[str, np.dtype[Any]]]:
    """The model's one signature key, and the dtype each of its inputs takes."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(model))
    signatures = list(interpreter.get_signature_list())
    if len(signatures) != 1:
        raise ValueError(f"the fp32 TFLite model has {len(signatures)} signatures, expected one")
    details = interpreter.get_signature_runner(signatures[0]).get_input_details()
    return signatures[0], {name: np.dtype(d["dtype"]) for name, d in details.items()}


def _feeds(
    calibration: Dataset, batch: int, dtypes: dict[str, np.dtype[Any]]
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of ``batch`` samples, in the dtypes the model takes (TFLite holds int64 ids as int32)."""
    fed = 0
    for feeds in calibration.full_batches(batch):
        fed += 1
        yield {
            name: np.asarray(array).astype(dtypes.get(name, np.asarray(array).dtype), copy=False)
            for name, array in feeds.items()
        }
    if fed == 0:
        raise ValueError(
            f"calibration needs at least {batch} samples (the model's batch), got {calibration.size}"
        )
