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

Mixed precision (``int8/mixed``, ``converter.mixed_precision``): ``MixedQuantizer`` calibrates
once with the static recipe, then re-quantizes the fp32 model as often as the search needs, each
time with a per-op recipe that leaves the chosen ops (CONV_2D, FULLY_CONNECTED, ...) in float:
one ``no_quantize`` rule per op, its ``regex`` the op's scope (its output tensor names, which AEQ
matches ops by) anchored at both ends, its ``operation_name`` the op's type. AEQ puts a DEQUANTIZE
in front of a float op and a QUANTIZE behind it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
    chosen = static_int8_recipe(constraints)
    _quantize(fp32, out, chosen, _calibrate(fp32, chosen, calibration, batch))


def _calibrate(fp32: Path, recipe: list[dict[str, Any]], calibration: Dataset, batch: int) -> Any:
    """Each tensor's true min/max over ``calibration`` (AEQ's model QSVs), for ``recipe``."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
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
    return ranges.get_model_qsvs()


def _quantize(fp32: Path, out: Path, recipe: list[dict[str, Any]], qsvs: Any) -> None:
    from ai_edge_quantizer import quantizer

    result = quantizer.Quantizer(str(fp32), recipe).quantize(qsvs, enable_progress_report=False)
    out.write_bytes(_with_signature_at_the_edges(bytes(result.quantized_model)))


# --- mixed precision: one calibration, many per-op recipes ---------------------------------------

# The op types whose int8 kernels carry the speed-up and the error: what mixed precision may keep
# in float (as ONNX's ``QUANTIZABLE_OPS``; elementwise ops follow their neighbours).
MIXED_OPS = frozenset(
    {
        "CONV_2D",
        "CONV_3D",
        "DEPTHWISE_CONV_2D",
        "TRANSPOSE_CONV",
        "FULLY_CONNECTED",
        "BATCH_MATMUL",
        "EMBEDDING_LOOKUP",
    }
)


@dataclass(frozen=True)
class TfliteOp:
    """One quantizable op of the fp32 model: ``FULLY_CONNECTED_6`` (type and index), and its AEQ scope."""

    name: str
    kind: str
    scope: str


def float_op_rules(ops: Sequence[TfliteOp]) -> list[dict[str, Any]]:
    """AEQ recipe entries that leave exactly ``ops`` in float: ``no_quantize``, one anchored rule each.

    AEQ matches ``regex`` with ``re.search`` against an op's scope, and one op's scope can be a
    prefix of the next one's (``Linear_3;1;`` and ``Linear_3;;...Linear_4;;``), so each rule is
    the escaped scope between ``^`` and ``$``; ``operation`` narrows it to the op's type.
    """
    return [
        {
            "regex": f"^{re.escape(op.scope)}$",
            "operation": op.kind,
            "algorithm_key": "no_quantize",
        }
        for op in ops
    ]


def mixed_recipe(constraints: QuantizationConstraints, in_float: Sequence[TfliteOp]) -> list[dict[str, Any]]:
    """The static int8 recipe, then the rules that keep ``in_float`` in float (AEQ: the last match wins)."""
    return [*static_int8_recipe(constraints), *float_op_rules(in_float)]


def quantizable_ops(model: Path) -> list[TfliteOp]:
    """The ops of ``model``'s main subgraph that mixed precision may keep in float, in graph order."""
    from ai_edge_litert.tools import flatbuffer_utils
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    tree = flatbuffer_utils.read_model(str(model))
    subgraph = tree.subgraphs[0]
    ops = []
    for index, op in enumerate(subgraph.operators or []):
        kind = flatbuffer_utils.opcode_to_name(tree, op.opcodeIndex)
        if kind in MIXED_OPS:
            scope = tfl_flatbuffer_utils.get_op_scope(op, subgraph.tensors)
            ops.append(TfliteOp(f"{kind}_{index}", kind, scope))
    return ops


class MixedQuantizer:
    """Static int8 calibrated once (true min/max), then quantized as often as needed with float ops.

    The shape ``converter.mixed_precision.build_mixed`` expects: ``base`` (the fp32 model),
    ``nodes`` (the quantizable ops' names) and ``quantize(path, exclude)``.
    """

    def __init__(
        self, base: Path, calibration: Dataset, constraints: QuantizationConstraints, *, batch: int
    ) -> None:
        self.base = base
        self.constraints = constraints
        self.ops = {op.name: op for op in quantizable_ops(base)}
        self.nodes: list[str] = list(self.ops)
        self.notes: list[str] = []
        # The ranges of every tensor under the all-int8 recipe: a superset of what any mix needs.
        self.qsvs = _calibrate(base, static_int8_recipe(constraints), calibration, batch)

    def quantize(self, out: Path, exclude: Sequence[str]) -> None:
        """Write ``out``: int8 with the ops named in ``exclude`` left in float."""
        recipe = mixed_recipe(self.constraints, [self.ops[name] for name in exclude])
        _quantize(self.base, out, recipe, self.qsvs)

    def close(self) -> None:
        """Nothing to release (the ONNX quantizer's counterpart removes its working files)."""


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
