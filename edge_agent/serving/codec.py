"""Tensors between the wire and numpy: the protocol's datatypes, raw bytes and typed contents.

Pure functions. The Open Inference Protocol names datatypes ``FP32``, ``INT8`` and so on; raw
contents are little-endian, row-major bytes; typed contents are lists in the field that belongs
to the datatype (``fp32_contents`` for FP32, ``int_contents`` for INT8/16/32, ...). Every error
names the input and says what was expected and what arrived.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.serving.errors import InvalidRequest

# Protocol datatype -> numpy dtype name (BYTES is the protocol's string type: no model here takes it).
DATATYPE_TO_DTYPE: Mapping[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
DTYPE_TO_DATATYPE: Mapping[str, str] = {dtype: datatype for datatype, dtype in DATATYPE_TO_DTYPE.items()}

# The field of InferTensorContents that carries each datatype (FP16 has none: it travels raw only).
TYPED_FIELD: Mapping[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def datatype_of(dtype: npt.DTypeLike) -> str:
    """The protocol datatype for a numpy dtype (``float32`` → ``FP32``)."""
    name = np.dtype(dtype).name
    try:
        return DTYPE_TO_DATATYPE[name]
    except KeyError:
        raise InvalidRequest(
            f"numpy dtype {name} has no Open Inference Protocol datatype",
            hint=f"use one of {sorted(DTYPE_TO_DATATYPE)}",
        ) from None


def numpy_dtype(name: str, datatype: str) -> np.dtype[Any]:
    """The numpy dtype for input ``name``'s declared ``datatype``, or an error listing the known ones."""
    try:
        return np.dtype(DATATYPE_TO_DTYPE[datatype])
    except KeyError:
        raise InvalidRequest(
            f"input {name!r}: unknown or unsupported datatype {datatype!r}",
            hint=f"use one of {', '.join(DATATYPE_TO_DTYPE)}",
        ) from None


def check_declared_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """A declared shape as a tuple; every dimension must be a non-negative integer."""
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise InvalidRequest(
            f"input {name!r}: shape {list(dims)} has a negative dimension",
            hint="a request's shape is concrete: give every dimension's actual size",
        )
    return dims


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def decode_raw(name: str, datatype: str, shape: Sequence[int], data: bytes) -> np.ndarray:
    """Raw little-endian bytes as an array of ``shape``; the byte count must match exactly."""
    dtype = numpy_dtype(name, datatype)
    dims = check_declared_shape(name, shape)
    expected = element_count(dims) * dtype.itemsize
    if len(data) != expected:
        raise InvalidRequest(
            f"input {name!r}: raw contents hold {len(data)} bytes, but {datatype} {list(dims)} "
            f"needs {expected} bytes ({element_count(dims)} elements of {dtype.itemsize})",
            hint="send exactly the bytes of the declared shape and datatype (little-endian, row-major)",
        )
    little = dtype.newbyteorder("<")
    array = np.frombuffer(data, dtype=little).reshape(dims)
    return array if little == dtype else array.astype(dtype)


def decode_typed(
    name: str, datatype: str, shape: Sequence[int], contents: Mapping[str, Sequence[Any]]
) -> np.ndarray:
    """Typed contents (``{field name: values}``, the fields that are set) as an array of ``shape``.

    Exactly the datatype's own field may be set, holding exactly one value per element, each in
    the datatype's range (an INT8 input in ``int_contents`` must hold values in [-128, 127]).
    """
    dtype = numpy_dtype(name, datatype)
    dims = check_declared_shape(name, shape)
    field = TYPED_FIELD.get(datatype)
    if field is None:
        raise InvalidRequest(
            f"input {name!r}: {datatype} has no typed contents field in the protocol",
            hint="send it in raw_input_contents",
        )
    others = sorted(key for key, values in contents.items() if key != field and len(values) > 0)
    if others:
        raise InvalidRequest(
            f"input {name!r}: {datatype} data belongs in {field}, got {', '.join(others)}",
            hint=f"put the values in contents.{field}",
        )
    values = contents.get(field, ())
    count = element_count(dims)
    if len(values) != count:
        raise InvalidRequest(
            f"input {name!r}: contents.{field} holds {len(values)} values, but {datatype} {list(dims)} "
            f"needs {count}",
            hint="send one value per element of the declared shape",
        )
    if dtype.kind in "iu" and count:
        info = np.iinfo(dtype)
        low, high = min(values), max(values)
        if low < info.min or high > info.max:
            raise InvalidRequest(
                f"input {name!r}: contents.{field} holds values in [{low}, {high}], "
                f"outside {datatype}'s range [{info.min}, {info.max}]",
                hint=f"send values that fit {datatype}",
            )
    return np.asarray(values, dtype=dtype).reshape(dims)


def encode_raw(array: np.ndarray) -> bytes:
    """An array as raw little-endian, row-major bytes."""
    little = array.dtype.newbyteorder("<")
    return np.ascontiguousarray(array, dtype=little).tobytes()
