"""A TensorFlow SavedModel re-signed for export: the planned batch, and the outputs' final names.

A SavedModel's ``serving_default`` usually takes any batch (``[None, ...]``) and names its
outputs ``output_0``. TFLiteConverter.from_saved_model and ``openvino.convert_model`` both read
the signature as it is, so the converter first writes a SavedModel whose signature calls the
original one with the batch fixed (static shapes for the Edge TPU, the NPU and TFLite) and
returns the outputs under the names the bundle promises (``--output``). Variables are shared
with the original: the new SavedModel tracks the loaded object, so nothing is copied by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converter.sources import SERVING_SIGNATURE, SourceModel

DIRECTORY = "saved_model"


def resign_saved_model(source: SourceModel, directory: Path, *, batch: int | None) -> Path:
    """Write ``directory/saved_model`` for ``source`` with ``batch`` fixed (None keeps it dynamic)."""
    import tensorflow as tf

    loaded = source.module
    serving = loaded.signatures[SERVING_SIGNATURE]
    input_names = [s.name for s in source.inputs]
    keys = source.native_output_names()
    names = [s.name for s in source.outputs]
    specs = [
        tf.TensorSpec(
            [batch, *(None if d == -1 else d for d in s.shape[1:])], tf.dtypes.as_dtype(s.dtype), name=s.name
        )
        for s in source.inputs
    ]

    def serve(*args: Any) -> dict[str, Any]:
        result = serving(**dict(zip(input_names, args, strict=True)))
        return {name: result[key] for name, key in zip(names, keys, strict=True)}

    function = tf.function(serve, input_signature=specs)
    holder = tf.Module()
    holder.original = loaded  # tracks the variables the original signature captures
    holder.serve = function
    out = directory / DIRECTORY
    tf.saved_model.save(holder, str(out), signatures={SERVING_SIGNATURE: function.get_concrete_function()})
    return out
