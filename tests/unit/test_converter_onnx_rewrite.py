"""The arithmetic of the auto_pad rewrite: explicit pads equal to SAME_UPPER / SAME_LOWER."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from converter.exporters.onnx_rewrite import same_pads, same_transpose_pads, transpose_pads, valid_counts


def _output(size: int, k: int, s: int, d: int, begin: int, end: int) -> int:
    """ONNX's output size for explicit pads (floor mode)."""
    return (size + begin + end - ((k - 1) * d + 1)) // s + 1


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "dilation", "upper", "lower"),
    [
        (5, 3, 1, 1, [1, 1], [1, 1]),  # odd kernel: symmetric
        (5, 4, 1, 1, [1, 2], [2, 1]),  # even kernel: the odd one out at the end (upper) or start (lower)
        (5, 2, 1, 1, [0, 1], [1, 0]),
        (15, 4, 2, 1, [1, 2], [2, 1]),  # stride 2: out 8, total (8-1)*2+4-15 = 3
        (16, 3, 2, 1, [0, 1], [1, 0]),  # out 8, total 14+3-16 = 1
        (16, 1, 2, 1, [0, 0], [0, 0]),  # a 1x1 kernel with stride 2 needs none (the total would be -1)
        (16, 4, 4, 1, [0, 0], [0, 0]),  # windows tile the input exactly
        (10, 3, 1, 2, [2, 2], [2, 2]),  # dilation 2: effective kernel 5
        (10, 2, 1, 3, [1, 2], [2, 1]),  # dilation 3: effective kernel 4
        (9, 3, 2, 2, [2, 2], [2, 2]),  # stride and dilation: out 5, total 8+5-9 = 4
        (1, 3, 1, 1, [1, 1], [1, 1]),
    ],
)
def test_same_pads_on_one_axis(
    size: int, kernel: int, stride: int, dilation: int, upper: list[int], lower: list[int]
) -> None:
    assert same_pads([size], [kernel], [stride], [dilation], "SAME_UPPER") == upper
    assert same_pads([size], [kernel], [stride], [dilation], "SAME_LOWER") == lower


def test_pads_list_every_begin_then_every_end() -> None:
    # H: 15, k 4, s 2 → (1, 2); W: 16, k 3, s 2 → (0, 1).
    assert same_pads([15, 16], [4, 3], [2, 2], [1, 1], "SAME_UPPER") == [1, 0, 2, 1]
    assert same_pads([15, 16], [4, 3], [2, 2], [1, 1], "SAME_LOWER") == [2, 1, 1, 0]


def test_same_pads_always_give_the_same_output_size() -> None:
    """Exhaustively: the pads give ceil(size / stride) outputs, differ by at most one, and split as asked."""
    for size, k, s, d in itertools.product(range(1, 20), range(1, 8), range(1, 5), range(1, 4)):
        upper = same_pads([size], [k], [s], [d], "SAME_UPPER")
        lower = same_pads([size], [k], [s], [d], "SAME_LOWER")
        assert upper == lower[::-1]
        begin, end = upper
        assert 0 <= end - begin <= 1
        assert _output(size, k, s, d, begin, end) == math.ceil(size / s), (size, k, s, d)


def test_unknown_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="VALID"):
        same_pads([5], [3], [1], [1], "VALID")


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "upper"),
    [
        (5, 3, 2, [0, 1]),  # full output 2*4+3 = 11, wanted 10
        (5, 4, 2, [1, 1]),  # 12, wanted 10
        (5, 5, 2, [1, 2]),  # 13, wanted 10
        (5, 2, 2, [0, 0]),  # exactly 10
        (4, 3, 1, [1, 1]),  # stride 1: 6, wanted 4
    ],
)
def test_same_transpose_pads(size: int, kernel: int, stride: int, upper: list[int]) -> None:
    assert same_transpose_pads([size], [kernel], [stride], [1], [0], "SAME_UPPER") == upper
    assert same_transpose_pads([size], [kernel], [stride], [1], [0], "SAME_LOWER") == upper[::-1]


def test_a_transpose_kernel_smaller_than_its_stride_cannot_be_padded() -> None:
    with pytest.raises(ValueError, match="larger than the full output"):
        same_transpose_pads([5], [1], [2], [1], [0], "SAME_UPPER")
    # output_padding makes up for it
    assert same_transpose_pads([5], [1], [2], [1], [1], "SAME_UPPER") == [0, 0]


@pytest.mark.parametrize(
    ("output", "notset", "upper"),
    [
        (11, [0, 0], [0, 0]),  # the full output: 2*4 + 3
        (10, [1, 0], [0, 1]),  # output_shape without auto_pad: the odd one out at the start
        (9, [1, 1], [1, 1]),
        (8, [2, 1], [1, 2]),
    ],
)
def test_transpose_pads_for_an_output_shape(output: int, notset: list[int], upper: list[int]) -> None:
    assert transpose_pads([5], [3], [2], [1], [0], [output], "NOTSET") == notset
    assert transpose_pads([5], [3], [2], [1], [0], [output], "SAME_UPPER") == upper


def test_an_output_shape_beyond_the_full_output_cannot_be_padded() -> None:
    with pytest.raises(ValueError, match="an output of 12 is larger than the full output 11"):
        transpose_pads([5], [3], [2], [1], [0], [12], "NOTSET")


def test_valid_counts_count_the_real_cells_of_each_window() -> None:
    # 1D: size 4, kernel 2, stride 1, pads (0, 1): windows [0,1], [1,2], [2,3], [3,pad].
    assert valid_counts([4], [2], [1], [0, 1]).tolist() == [2, 2, 2, 1]
    # 2D: the product of the axes' counts.
    counts = valid_counts([3, 4], [3, 2], [1, 2], [1, 0, 1, 0])
    assert counts.shape == (3, 2)
    assert np.array_equal(counts, np.outer([2, 3, 2], [2, 2]))
