"""ONNX from a Keras model or a SavedModel, through tf2onnx.

Both are traced as one ``tf.function`` that takes the inputs under their names, with the planned
batch, and returns the outputs in a dict keyed by the names the bundle promises (``--output``), so
tf2onnx's graph already carries the final names: no renaming afterwards. tf2onnx stops at an
older opset than torch.onnx; QDQ needs 13, and the ONNX front end upgrades what it reads anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converter.errors import ConversionError, describe_failure
from converter.planning import SourceKind
from converter.quiet import quiet
from converter.sources import SERVING_SIGNATURE, SourceModel
from hw_profiles.schema import ModelFormat

# tf2onnx 1.17 prefers opset 15 and has handlers up to 18; 17 is where our Keras models were checked.
MAX_TF2ONNX_OPSET = 17


def export_tensorflow_onnx(source: SourceModel, path: Path, *, batch: int | None, opset: int) -> None:
    """Write ``path`` (an ``.onnx``) for a Keras or SavedModel ``source``; ``batch=None`` keeps it dynamic."""
    import tensorflow as tf

    specs = [
        tf.TensorSpec(
            [batch, *(None if d == -1 else d for d in s.shape[1:])], tf.dtypes.as_dtype(s.dtype), name=s.name
        )
        for s in source.inputs
    ]
    function = tf.function(_traced(source), input_signature=specs)
    try:
        with quiet():
            import tf2onnx

            proto, _ = tf2onnx.convert.from_function(
                function, input_signature=specs, opset=min(opset, MAX_TF2ONNX_OPSET)
            )
    except Exception as exc:
        raise ConversionError(
            f"tf2onnx could not convert the {source.kind} model: {describe_failure(exc)}",
            step="export",
            format=ModelFormat.ONNX.value,
            hint="an operator has no ONNX translation in tf2onnx: pick another --format for this profile",
        ) from exc
    from converter.exporters.onnx_export import save_onnx

    save_onnx(proto, path)


def _traced(source: SourceModel) -> Any:
    """The function tf2onnx traces: named inputs in, ``{output name: tensor}`` out."""
    input_names = [s.name for s in source.inputs]
    output_names = [s.name for s in source.outputs]
    if source.kind is SourceKind.SAVED_MODEL:
        serving = source.module.signatures[SERVING_SIGNATURE]
        keys = source.native_output_names()

        def serve_saved_model(*args: Any) -> dict[str, Any]:
            result = serving(**dict(zip(input_names, args, strict=True)))
            return {name: result[key] for name, key in zip(output_names, keys, strict=True)}

        return serve_saved_model
    model = source.module

    def serve_keras(*args: Any) -> dict[str, Any]:
        result = model(list(args) if len(args) > 1 else args[0], training=False)
        values = list(result.values()) if isinstance(result, dict) else result
        values = values if isinstance(values, (list, tuple)) else [values]
        return dict(zip(output_names, values, strict=True))

    return serve_keras
