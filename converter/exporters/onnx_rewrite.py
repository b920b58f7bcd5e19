"""Rewrite what onnx2torch 1.5 refuses into plain ONNX that means the same, before translating.

PaddlePaddle's exports (and other opset-11 models) use a few forms that onnx2torch does not take:

- ``auto_pad`` ``SAME_UPPER``/``SAME_LOWER`` on Conv, ConvTranspose, MaxPool and AveragePool
  (``"SAME_UPPER" auto_pad is not implemented``). With static input shapes the pads are plain
  numbers (``same_pads``), so the node gets explicit ``pads``. Where those are asymmetric and
  onnx2torch would refuse them in turn, the padding moves out of the node: an AveragePool pads
  with a ``Pad`` first (and, when padded cells must not count, scales each output by the window's
  size over its count of real cells, a constant); a ConvTranspose computes its full output and a
  ``Slice`` crops it. A ConvTranspose's ``output_shape``, which onnx2torch ignores (its output
  came out the full size), is written as pads the same way.
- Constant chains left unfolded (torch.onnx's opset-11 ``Pad`` computes its pads from a
  ``ConstantOfShape``), which onnx2torch would compute at run time: evaluated into initializers.
- ``Dropout`` (inference is the identity; onnx2torch refuses a ``seed`` and the mask output).
- Models older than opset 11: onnx2torch has no converter for ``Upsample`` (opset 7 to 9), nor for
  the opset-1 ``Slice``; they are upgraded to opset 11 (``onnx.version_converter``, which turns
  ``Upsample`` into the equivalent ``Resize``).

Pads need the static shape of each padded input: onnx's shape inference runs on the model with
its batch fixed, and a shape it leaves unknown fails the export with the node's name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from converter.errors import ConversionError, describe_failure
from hw_profiles.schema import ModelFormat

_FORMAT = ModelFormat.TFLITE.value
SAME_MODES = ("SAME_UPPER", "SAME_LOWER")
_PADDED_OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool")
# Older models are upgraded to this opset: onnx2torch lacks Upsample (Resize from opset 10) and
# the opset-1 Slice, and the rewrites here write Pad and Slice with their arguments as inputs.
MIN_OPSET = 11


def same_pads(
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    mode: str,
) -> list[int]:
    """Explicit ONNX ``pads`` (all begins, then all ends) equal to ``auto_pad=mode`` for a Conv or pool.

    The output is ``ceil(size / stride)`` per axis; the padding that needs is split in two, the odd
    one out going at the end for ``SAME_UPPER`` and at the beginning for ``SAME_LOWER``.
    """
    if mode not in SAME_MODES:
        raise ValueError(f"auto_pad {mode!r} is not one of {SAME_MODES}")
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin, end = (small, large) if mode == "SAME_UPPER" else (large, small)
        begins.append(begin)
        ends.append(end)
    return begins + ends


def same_transpose_pads(
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    output_padding: Sequence[int],
    mode: str,
) -> list[int]:
    """Explicit ``pads`` equal to ``auto_pad=mode`` for a ConvTranspose: its output is ``size * stride``.

    Split as for a Conv (ONNX Runtime does the same). A negative total (a kernel smaller than its
    stride) cannot be written as pads: ``ValueError``.
    """
    if mode not in SAME_MODES:
        raise ValueError(f"auto_pad {mode!r} is not one of {SAME_MODES}")
    outputs = [size * s for size, s in zip(sizes, strides, strict=True)]
    return transpose_pads(sizes, kernel, strides, dilations, output_padding, outputs, mode)


def transpose_pads(
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    output_padding: Sequence[int],
    outputs: Sequence[int],
    mode: str,
) -> list[int]:
    """The ``pads`` that give a ConvTranspose the spatial ``outputs`` (its ``output_shape``).

    The full output is ``stride * (size - 1) + output_padding + (kernel - 1) * dilation + 1``; the
    difference is split in two, the odd one out at the end for ``SAME_UPPER`` and at the start
    otherwise (ONNX's rule for ``output_shape``, and ONNX Runtime's). An output larger than the
    full one cannot be written as pads: ``ValueError``.
    """
    begins, ends = [], []
    for size, k, s, d, extra, out in zip(
        sizes, kernel, strides, dilations, output_padding, outputs, strict=True
    ):
        total = s * (size - 1) + extra + (k - 1) * d + 1 - out
        if total < 0:
            raise ValueError(
                f"an output of {out} is larger than the full output {out + total} (kernel {k}, "
                f"dilation {d}, stride {s}, output_padding {extra})"
            )
        small, large = total // 2, total - total // 2
        begin, end = (small, large) if mode == "SAME_UPPER" else (large, small)
        begins.append(begin)
        ends.append(end)
    return begins + ends


def valid_counts(
    sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int]
) -> np.ndarray:
    """How many real (unpadded) cells each output window of a pool covers, over the spatial axes."""
    rank = len(sizes)
    per_axis = []
    for axis in range(rank):
        size, k, s = sizes[axis], kernel[axis], strides[axis]
        begin, end = pads[axis], pads[axis + rank]
        out = (size + begin + end - k) // s + 1
        starts = np.arange(out) * s - begin
        per_axis.append(np.minimum(starts + k, size) - np.maximum(starts, 0))
    counts = per_axis[0]
    for extra in per_axis[1:]:
        counts = np.multiply.outer(counts, extra)
    return np.asarray(counts)


def rewrite_for_onnx2torch(model: Any) -> tuple[Any, list[str]]:
    """``model`` with what onnx2torch refuses rewritten into plain ONNX; and what was rewritten.

    ``model`` should have its batch fixed (pads are computed from static shapes) and be at opset 11
    or newer (``at_least_opset_11``). Raises
    ``ConversionError`` (step ``export``) when a needed shape is unknown.
    """
    done: list[str] = []
    fold_constants(model, done)
    _dropout_as_identity(model, done)
    if any(_needs_explicit_pads(node) for node in model.graph.node):
        _explicit_pads(model, done)
    return model, done


# --- old opsets ---------------------------------------------------------------------------------


def _opset(model: Any) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def at_least_opset_11(model: Any) -> tuple[Any, list[str]]:
    """The model at opset 11 when older (onnx2torch lacks Upsample and the opset-1 Slice, among others).

    Run it before constant folding: the upgrade writes Resize's new arguments as Constant nodes.
    """
    import onnx.version_converter

    opset = _opset(model)
    if opset is None or opset >= MIN_OPSET:
        return model, []
    try:
        upgraded = onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
        if not any(node.op_type == "Upsample" for node in model.graph.node):
            return model, []  # onnx2torch may still take it as it is, or say which operator it lacks
        raise ConversionError(
            f"the model uses Upsample (opset {opset}), which onnx2torch cannot translate, and the "
            f"upgrade to opset {MIN_OPSET} (where it is Resize) failed: {describe_failure(exc)}",
            step="export",
            format=_FORMAT,
            hint="export the model at opset 11 or newer, or pick --format onnx or openvino",
        ) from exc
    return upgraded, [f"upgraded from opset {opset} to {MIN_OPSET} (Upsample becomes Resize)"]


# --- constants -----------------------------------------------------------------------------------

# Folded outputs are capped in size: a ConstantOfShape or Expand may be meant to build a big tensor
# at run time, which should not be written into the model.
FOLD_MAX_ELEMENTS = 1 << 16
# Operators whose output is not a function of their inputs.
_NOT_FOLDABLE = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


def fold_constants(model: Any, done: list[str] | None = None) -> int:
    """Evaluate the nodes whose inputs are all constants (small outputs only) into initializers.

    onnxscript's optimizer leaves some constant chains alone, e.g. the ``ConstantOfShape → Concat →
    Reshape → Slice → Transpose`` that torch.onnx writes at opset 11 for a ``Pad``'s pads. onnx2torch
    would compute those at run time, which ``torch.export`` cannot trace; as initializers they are
    baked. Evaluated with onnx's reference implementation, one node at a time. Returns the count.
    """
    from onnx import numpy_helper

    constants = _constants(model)
    opsets = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    graph_outputs = {value.name for value in model.graph.output}
    folded, kept = 0, []
    for node in model.graph.node:
        foldable = (
            node.domain in ("", "ai.onnx")
            and node.op_type not in _NOT_FOLDABLE
            and not any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute)
            and all(name == "" or name in constants for name in node.input)
            and not any(name in graph_outputs for name in node.output)
        )
        values = _evaluate(node, constants, opsets) if foldable else None
        if values is None or (node.op_type != "Constant" and any(v.size > FOLD_MAX_ELEMENTS for v in values)):
            kept.append(node)
            continue
        for name, value in zip(node.output, values, strict=True):
            if name:
                constants[name] = value
                model.graph.initializer.append(numpy_helper.from_array(value, name=name))
        folded += 1
    if folded:
        del model.graph.node[:]
        model.graph.node.extend(kept)
        used = {name for node in kept for name in node.input} | {v.name for v in model.graph.output}
        used |= {v.name for v in model.graph.input}  # old models list their initializers as inputs too
        for tensor in [t for t in model.graph.initializer if t.name not in used]:
            model.graph.initializer.remove(tensor)
        if done is not None:
            done.append(f"{folded} constant nodes folded into initializers")
    return folded


def _evaluate(node: Any, constants: dict[str, np.ndarray], opsets: list[Any]) -> list[np.ndarray] | None:
    """The node's outputs on its constant inputs, or None when onnx's reference cannot run it."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    inputs = [name for name in node.input if name]
    outputs = [name for name in node.output if name]
    try:
        graph = helper.make_graph(
            [node],
            "fold",
            [
                helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(constants[name].dtype), None
                )
                for name in inputs
            ],
            [helper.make_tensor_value_info(name, 0, None) for name in outputs],
        )
        results = ReferenceEvaluator(helper.make_model(graph, opset_imports=opsets)).run(
            None, {name: constants[name] for name in inputs}
        )
    except Exception:  # folding only helps: keep the node
        return None
    arrays = iter([np.asarray(r) for r in results])
    if len(results) != len(outputs):
        return None
    return [next(arrays) if name else np.zeros(0) for name in node.output]


# --- Dropout -------------------------------------------------------------------------------------


def _used_names(model: Any) -> set[str]:
    used = {name for node in model.graph.node for name in node.input}
    used |= {value.name for value in model.graph.output}
    return used


def _dropout_as_identity(model: Any, done: list[str]) -> None:
    """Turn inference-mode Dropout (its mask unused) into Identity.

    A BatchNormalization with its training outputs is left alone (onnx2torch refuses it): ONNX
    Runtime runs such a node in training mode, on the batch's statistics, so dropping the outputs
    would change what the model computes.
    """
    from onnx import helper

    used = _used_names(model)
    constants = _constants(model)
    for index, node in enumerate(list(model.graph.node)):
        if node.op_type == "Dropout":
            if len(node.output) > 1 and node.output[1] and node.output[1] in used:
                continue
            training = node.input[2] if len(node.input) > 2 else ""
            if training and not (training in constants and not bool(constants[training].any())):
                continue  # training mode given at run time, or set: not an identity
            identity = helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name)
            model.graph.node.remove(node)
            model.graph.node.insert(index, identity)
            done.append(f"Dropout {node.name or index}: identity at inference")


# --- auto_pad -----------------------------------------------------------------------------------


def _needs_explicit_pads(node: Any) -> bool:
    if node.op_type not in _PADDED_OPS:
        return False
    output_shape = node.op_type == "ConvTranspose" and bool(_ints_attribute(node, "output_shape"))
    return output_shape or _auto_pad(node) in SAME_MODES


def _auto_pad(node: Any) -> str:
    value = next((a.s for a in node.attribute if a.name == "auto_pad"), b"NOTSET")
    return value.decode() if isinstance(value, bytes) else str(value)


def _ints_attribute(node: Any, name: str) -> list[int] | None:
    return next((list(a.ints) for a in node.attribute if a.name == name), None)


def _int_attribute(node: Any, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _constants(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _static_shapes(model: Any) -> dict[str, list[int] | None]:
    """Every tensor's shape from onnx's shape inference; None where a dimension is not a number."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # inference only fills in shapes: keep what the model declares
        inferred = model
    shapes: dict[str, list[int] | None] = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        dims = [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim
        ]
        shapes[value.name] = None if None in dims else [int(d) for d in dims if d is not None]
    for tensor in graph.initializer:
        shapes[tensor.name] = [int(d) for d in tensor.dims]
    return shapes


def _explicit_pads(model: Any, done: list[str]) -> None:
    shapes = _static_shapes(model)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    for index, node in enumerate(nodes):
        if not _needs_explicit_pads(node):
            model.graph.node.append(node)
            continue
        mode = _auto_pad(node)
        output_shape = _ints_attribute(node, "output_shape") if node.op_type == "ConvTranspose" else None
        what = f"auto_pad={mode}" if mode in SAME_MODES else f"output_shape={output_shape}"
        name = f"{node.name or f'#{index}'} (output {node.output[0]!r})"
        shape = shapes.get(node.input[0])
        if shape is None or len(shape) < 3:
            raise ConversionError(
                f"{node.op_type} {name} uses {what}, which onnx2torch cannot translate, and the "
                f"shape of its input {node.input[0]!r} is not static, so its pads cannot be computed",
                step="export",
                format=_FORMAT,
                hint="re-export the model with static input shapes (or fix them with "
                "onnx.tools.update_model_dims.update_inputs_outputs_dims), "
                "or pick --format onnx or openvino, which take auto_pad as it is",
            )
        sizes = shape[2:]
        kernel = _kernel(node, shapes, len(sizes))
        if kernel is None:
            raise ConversionError(
                f"{node.op_type} {name} uses {what}, and its kernel shape is unknown",
                step="export",
                format=_FORMAT,
                hint="pick --format onnx or openvino, which take auto_pad as it is",
            )
        strides = _ints_attribute(node, "strides") or [1] * len(sizes)
        dilations = _ints_attribute(node, "dilations") or [1] * len(sizes)
        if node.op_type == "ConvTranspose":
            model.graph.node.extend(
                _conv_transpose(model, node, name, sizes, kernel, strides, dilations, mode, output_shape)
            )
        else:
            pads = same_pads(sizes, kernel, strides, dilations, mode)
            model.graph.node.extend(_padded(model, node, name, shape, kernel, strides, pads))
        done.append(f"{node.op_type} {name}: {what} written as explicit pads")


def _kernel(node: Any, shapes: dict[str, list[int] | None], rank: int) -> list[int] | None:
    kernel = _ints_attribute(node, "kernel_shape")
    if kernel:
        return kernel
    if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
        weights = shapes.get(node.input[1])
        return weights[2:] if weights and len(weights) == rank + 2 else None
    return None


def _set_attributes(node: Any, drop: Sequence[str], **ints: list[int] | int) -> None:
    from onnx import helper

    kept = [a for a in node.attribute if a.name not in (*drop, *ints)]
    del node.attribute[:]
    node.attribute.extend(kept)
    for key, value in ints.items():
        node.attribute.append(helper.make_attribute(key, value))


def _symmetric(pads: Sequence[int]) -> bool:
    half = len(pads) // 2
    return list(pads[:half]) == list(pads[half:])


def _fresh_name(model: Any, stem: str) -> str:
    taken = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    taken |= {v.name for v in model.graph.input}
    candidate, counter = stem, 0
    while candidate in taken:
        counter += 1
        candidate = f"{stem}_{counter}"
    return candidate


def _add_constant(model: Any, stem: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    name = _fresh_name(model, stem)
    model.graph.initializer.append(numpy_helper.from_array(value, name=name))
    return name


def _padded(
    model: Any,
    node: Any,
    name: str,
    shape: list[int],
    kernel: list[int],
    strides: list[int],
    pads: list[int],
) -> list[Any]:
    """The node with explicit ``pads``; an asymmetric AveragePool as Pad → AveragePool (→ Mul)."""
    from onnx import helper

    # With these pads the floor of the output size is the SAME size; ceil_mode could add one more.
    if node.op_type == "Conv" or _symmetric(pads) or node.op_type == "MaxPool":
        # onnx2torch pads a Conv asymmetrically itself, and a MaxPool with -inf.
        _set_attributes(
            node, ["auto_pad", "ceil_mode"] if node.op_type != "Conv" else ["auto_pad"], pads=pads
        )
        return [node]
    # AveragePool with asymmetric pads, which onnx2torch refuses.
    rank = len(kernel)
    include_pad = _int_attribute(node, "count_include_pad", 0)
    padded_input = _fresh_name(model, f"{node.input[0]}_same_padded")
    full_pads = [0, 0, *pads[:rank], 0, 0, *pads[rank:]]
    _require_opset_11(model, node, name)
    pads_name = _add_constant(model, f"{name}_same_pads", np.asarray(full_pads, np.int64))
    pad = helper.make_node("Pad", [node.input[0], pads_name], [padded_input], name=f"{name}_same_pad")
    _set_attributes(node, ["auto_pad", "ceil_mode", "count_include_pad"], pads=[0] * (2 * rank))
    node.input[0] = padded_input
    if include_pad:
        return [pad, node]
    # Each window averaged over all of its cells, padding included; scale to the real cells only.
    counts = valid_counts(shape[2:], kernel, strides, pads)
    scale = (float(np.prod(kernel)) / counts).astype(np.float32)[np.newaxis, np.newaxis]
    averaged, output = _fresh_name(model, f"{node.output[0]}_over_window"), node.output[0]
    node.output[0] = averaged
    scale_name = _add_constant(model, f"{name}_same_scale", scale)
    mul = helper.make_node("Mul", [averaged, scale_name], [output], name=f"{name}_same_scale")
    return [pad, node, mul]


def _conv_transpose(
    model: Any,
    node: Any,
    name: str,
    sizes: list[int],
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    mode: str,
    output_shape: list[int] | None,
) -> list[Any]:
    """A ConvTranspose with SAME padding or an ``output_shape`` as explicit pads.

    Asymmetric pads (which onnx2torch refuses) become the full output cropped by a Slice.
    """
    from onnx import helper

    rank = len(sizes)
    output_padding = _ints_attribute(node, "output_padding") or [0] * rank
    if output_shape:
        outputs = output_shape[-rank:]
    else:
        outputs = [size * s for size, s in zip(sizes, strides, strict=True)]
    what = f"output_shape={output_shape}" if output_shape else f"auto_pad={mode}"
    try:
        pads = transpose_pads(sizes, kernel, strides, dilations, output_padding, outputs, mode)
    except ValueError as exc:
        raise ConversionError(
            f"ConvTranspose {name} uses {what}, which cannot be written as pads: {exc}",
            step="export",
            format=_FORMAT,
            hint="pick --format onnx or openvino, which take auto_pad as it is",
        ) from exc
    if _symmetric(pads):
        _set_attributes(node, ["auto_pad", "output_shape"], pads=pads)
        return [node]
    _set_attributes(node, ["auto_pad", "output_shape"], pads=[0] * (2 * rank))
    full = [
        s * (size - 1) + extra + (k - 1) * d + 1
        for size, k, s, d, extra in zip(sizes, kernel, strides, dilations, output_padding, strict=True)
    ]
    starts = np.asarray(pads[:rank], np.int64)
    ends = np.asarray([f - e for f, e in zip(full, pads[rank:], strict=True)], np.int64)
    axes = np.arange(2, 2 + rank, dtype=np.int64)
    uncropped, output = _fresh_name(model, f"{node.output[0]}_uncropped"), node.output[0]
    node.output[0] = uncropped
    _require_opset_11(model, node, name)
    inputs = [
        uncropped,
        _add_constant(model, f"{name}_same_starts", starts),
        _add_constant(model, f"{name}_same_ends", ends),
        _add_constant(model, f"{name}_same_axes", axes),
    ]
    return [node, helper.make_node("Slice", inputs, [output], name=f"{name}_same_crop")]


def _require_opset_11(model: Any, node: Any, name: str) -> None:
    """Pad and Slice take their arguments as inputs from opset 11 (10 for Slice), the form written here."""
    if (_opset(model) or 0) < MIN_OPSET:
        raise ConversionError(
            f"{node.op_type} {name} uses asymmetric SAME padding, which onnx2torch cannot translate, and "
            f"the model could not be upgraded to opset {MIN_OPSET} to rewrite it",
            step="export",
            format=_FORMAT,
            hint="export the model at opset 11 or newer, or pick --format onnx or openvino",
        )
