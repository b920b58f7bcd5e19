"""Tensors between the wire and numpy: datatypes, raw bytes, typed contents."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_agent.serving.codec import (
    DATATYPE_TO_DTYPE,
    TYPED_FIELD,
    datatype_of,
    decode_raw,
    decode_typed,
    encode_raw,
)
from edge_agent.serving.errors import InvalidRequest

DTYPES = [np.dtype(name) for name in DATATYPE_TO_DTYPE.values()]


@given(
    hnp.arrays(
        dtype=st.sampled_from(DTYPES),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
        elements={"allow_nan": False},
    )
)
def test_raw_bytes_round_trip_every_datatype(array: np.ndarray) -> None:
    datatype = datatype_of(array.dtype)
    decoded = decode_raw("x", datatype, array.shape, encode_raw(array))
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_raw_bytes_are_little_endian() -> None:
    assert encode_raw(np.array([1], dtype=">i4")) == b"\x01\x00\x00\x00"
    assert decode_raw("x", "INT32", [1], b"\x01\x00\x00\x00")[0] == 1


def test_a_wrong_byte_count_names_the_input_and_both_sizes() -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_raw("pixels", "FP32", [2, 3], bytes(20))
    message = str(caught.value)
    assert "'pixels'" in message and "20 bytes" in message and "needs 24 bytes" in message
    assert caught.value.status == "INVALID_ARGUMENT"


@pytest.mark.parametrize("datatype", ["BYTES", "fp32", "FLOAT", ""])
def test_an_unknown_datatype_is_refused_with_the_known_ones(datatype: str) -> None:
    with pytest.raises(InvalidRequest, match="FP32") as caught:
        decode_raw("x", datatype, [1], b"\x00" * 4)
    assert repr(datatype) in str(caught.value)


def test_a_negative_dimension_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="negative"):
        decode_raw("x", "FP32", [-1, 4], b"")


def test_a_huge_declared_shape_is_a_clean_error_not_an_allocation() -> None:
    with pytest.raises(InvalidRequest, match="needs"):
        decode_raw("x", "FP32", [2**40, 2**40], b"\x00" * 16)


@pytest.mark.parametrize(
    ("datatype", "values", "dtype"),
    [
        ("FP32", [0.5, -1.25, 3.0, 4.0], np.float32),
        ("FP64", [0.5, -1.25, 3.0, 4.0], np.float64),
        ("INT8", [-128, 0, 5, 127], np.int8),
        ("INT32", [-(2**31), 0, 5, 2**31 - 1], np.int32),
        ("INT64", [-(2**63), 0, 5, 2**63 - 1], np.int64),
        ("UINT8", [0, 1, 200, 255], np.uint8),
        ("BOOL", [True, False, True, True], np.bool_),
    ],
)
def test_typed_contents_decode_in_their_own_field(datatype: str, values: list[object], dtype: type) -> None:
    decoded = decode_typed("x", datatype, [2, 2], {TYPED_FIELD[datatype]: values})
    assert decoded.dtype == np.dtype(dtype) and decoded.shape == (2, 2)
    np.testing.assert_array_equal(decoded.ravel(), np.asarray(values, dtype=dtype))


def test_typed_contents_in_the_wrong_field_name_the_right_one() -> None:
    with pytest.raises(InvalidRequest, match="fp32_contents") as caught:
        decode_typed("x", "FP32", [2], {"int_contents": [1, 2]})
    assert "int_contents" in str(caught.value)


def test_typed_contents_with_the_wrong_count_say_both_counts() -> None:
    with pytest.raises(InvalidRequest, match=r"holds 3 values.*needs 4"):
        decode_typed("x", "FP32", [2, 2], {"fp32_contents": [1.0, 2.0, 3.0]})


def test_typed_integers_out_of_range_are_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"\[-129, 5\].*INT8"):
        decode_typed("x", "INT8", [2], {"int_contents": [-129, 5]})


def test_fp16_has_no_typed_field() -> None:
    with pytest.raises(InvalidRequest, match="raw_input_contents"):
        decode_typed("x", "FP16", [1], {})


def test_datatype_of_refuses_dtypes_without_a_protocol_name() -> None:
    assert datatype_of(np.float32) == "FP32" and datatype_of("uint16") == "UINT16"
    with pytest.raises(InvalidRequest, match="complex128"):
        datatype_of(np.complex128)
