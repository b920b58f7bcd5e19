"""Write each identical constant vector of a TFLite flatbuffer once, and point every user at it.

A per-channel int8 tensor carries its quantization parameters as flatbuffer vectors: a float32
scale and an *int64* zero point per channel, for the weights and again for the int32 bias. The
zero points are all zero, so a model repeats the same few vectors (one per channel count) dozens
of times: 190 kB of mobilenet-mini's 1.80 MB int8 model. Flatbuffers allow several tables to
reference one vector (that is how shared strings work), so the rewritten model is the same model,
read by every LiteRT version, with each distinct vector stored once.

Buffers (weights) are left alone: they carry alignment requirements and are never duplicated
by the converters anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# flatbuffers cannot address past 2 GiB, and bigger models keep their weights outside the
# flatbuffer (buffer offsets), which the object API cannot rewrite.
MAX_REWRITE_BYTES = 1 << 30
_TFLITE_FILE_IDENTIFIER = b"TFL3"


def share_constant_vectors(path: Path) -> int:
    """Rewrite ``path`` with identical vectors shared; returns the bytes saved (0 when left as is)."""
    if path.stat().st_size > MAX_REWRITE_BYTES:
        return 0
    from ai_edge_litert.tools import flatbuffer_utils

    original = path.read_bytes()
    try:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(original))
        builder = _sharing_builder()
        builder.Finish(model.Pack(builder), file_identifier=_TFLITE_FILE_IDENTIFIER)
    except Exception:  # a layout the object API cannot rewrite: the model is valid as it is
        return 0
    rewritten = bytes(builder.Output())
    if len(rewritten) >= len(original):
        return 0
    path.write_bytes(rewritten)
    return len(original) - len(rewritten)


def _sharing_builder() -> Any:
    import flatbuffers

    class SharingBuilder(flatbuffers.Builder):
        """A builder that hands out the offset of an identical vector it has already written."""

        def __init__(self, initial_size: int) -> None:
            super().__init__(initial_size)
            self._written: dict[tuple[str, tuple[int, ...], bytes], int] = {}

        def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 - flatbuffers' name
            if x.dtype == np.uint8:  # buffer data: aligned, unique, left to the base class
                return int(super().CreateNumpyVector(x))
            key = (x.dtype.str, x.shape, x.tobytes())
            if key not in self._written:
                self._written[key] = int(super().CreateNumpyVector(x))
            return self._written[key]

    return SharingBuilder(1024)
