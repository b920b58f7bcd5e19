"""Damaging a converted model's weights in place, for the demo's broken release.

What a bad merge, a truncated copy or a buggy export step does to a model: the file still
loads, has the same operators, shapes and types, and runs, but computes something else. Here the
elements of the model's largest weight tensor are shuffled (seeded, so every run damages the
same way), in whichever format the converter wrote:

- ONNX: the largest initializer;
- TFLite: the largest constant buffer, shuffled element-wise in the tensor's own type;
- OpenVINO IR: the largest ``Const`` in the ``.bin`` file, located through the ``.xml``.

``onnx`` and the LiteRT flatbuffer schema are imported only for their format.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEED = 3

# TFLite tensor type names (flatbuffer_utils.type_to_name) to numpy.
_TFLITE_TYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "INT32": np.int32,
    "UINT8": np.uint8,
    "INT64": np.int64,
    "INT16": np.int16,
    "INT8": np.int8,
}
# OpenVINO IR element types to numpy.
_OPENVINO_TYPES = {"f32": np.float32, "f16": np.float16, "i8": np.int8, "u8": np.uint8, "i32": np.int32}


class DamageError(RuntimeError):
    """The model file has nothing this module knows how to damage."""


@dataclass(frozen=True)
class Damage:
    """What was damaged: the tensor and how many of its elements moved."""

    file: str
    tensor: str
    elements: int
    moved: int

    def describe(self) -> str:
        return f"{self.moved}/{self.elements} weights of {self.tensor} in {self.file} shuffled"


def shuffled(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``values`` with its elements in another order, same shape and type. Pure given ``rng``."""
    flat = values.reshape(-1)
    order = rng.permutation(flat.size)
    if flat.size > 1 and np.array_equal(order, np.arange(flat.size)):
        order = np.roll(order, 1)
    return flat[order].reshape(values.shape)


def damage_model(directory: Path, model_file: str, *, seed: int = SEED) -> Damage:
    """Damage ``directory/model_file`` (and its weights file) in place."""
    rng = np.random.default_rng(seed)
    path = directory / model_file
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return damage_onnx(path, rng)
    if suffix == ".tflite":
        return damage_tflite(path, rng)
    if suffix == ".xml":
        return damage_openvino(path, path.with_suffix(".bin"), rng)
    raise DamageError(f"cannot damage {model_file}: not an ONNX, TFLite or OpenVINO IR model")


def damage_onnx(path: Path, rng: np.random.Generator) -> Damage:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    initializers = list(model.graph.initializer)
    if not initializers:
        raise DamageError(f"{path.name} has no initializers")
    arrays = [numpy_helper.to_array(init) for init in initializers]
    index = max(range(len(arrays)), key=lambda i: arrays[i].size)
    original = arrays[index]
    damaged = shuffled(original, rng)
    initializers[index].CopyFrom(numpy_helper.from_array(damaged, initializers[index].name))
    onnx.save(model, str(path))
    return Damage(path.name, initializers[index].name, int(original.size), _moved(original, damaged))


def damage_tflite(path: Path, rng: np.random.Generator) -> Damage:
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    best: tuple[int, str, int] | None = None  # (bytes, tensor name, buffer index)
    types: dict[int, str] = {}
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            data = model.buffers[tensor.buffer].data
            if data is None or len(data) == 0:
                continue
            types[tensor.buffer] = flatbuffer_utils.type_to_name(tensor.type)
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
            name = name.rsplit("/", 1)[-1].rstrip(";")  # litert-torch names carry the module path
            if best is None or len(data) > best[0]:
                best = (len(data), name, tensor.buffer)
    if best is None:
        raise DamageError(f"{path.name} has no constant tensors")
    _, name, buffer_index = best
    dtype = _TFLITE_TYPES.get(types[buffer_index], np.uint8)
    raw = np.asarray(model.buffers[buffer_index].data, dtype=np.uint8)
    original = raw.view(dtype)
    damaged = shuffled(original, rng)
    model.buffers[buffer_index].data = damaged.view(np.uint8).copy()
    flatbuffer_utils.write_model(model, str(path))
    return Damage(path.name, name, int(original.size), _moved(original, damaged))


def damage_openvino(xml_path: Path, bin_path: Path, rng: np.random.Generator) -> Damage:
    best: tuple[int, int, str, str] | None = None  # (size, offset, element type, layer name)
    for layer in ET.parse(xml_path).getroot().iter("layer"):
        data = layer.find("data")
        if layer.get("type") != "Const" or data is None:
            continue
        element = data.get("element_type", "")
        size, offset = int(data.get("size", "0")), int(data.get("offset", "0"))
        if element in _OPENVINO_TYPES and (best is None or size > best[0]):
            best = (size, offset, element, layer.get("name", "?"))
    if best is None:
        raise DamageError(f"{xml_path.name} has no constant weights")
    size, offset, element, name = best
    weights = bytearray(bin_path.read_bytes())
    original = np.frombuffer(bytes(weights[offset : offset + size]), dtype=_OPENVINO_TYPES[element])
    damaged = shuffled(original, rng)
    weights[offset : offset + size] = damaged.tobytes()
    bin_path.write_bytes(bytes(weights))
    return Damage(bin_path.name, name, int(original.size), _moved(original, damaged))


def _moved(original: np.ndarray, damaged: np.ndarray) -> int:
    return int(np.count_nonzero(original.reshape(-1) != damaged.reshape(-1)))
