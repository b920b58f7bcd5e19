"""HTTP Range parsing for resumable downloads (RFC 9110 §14), checked against Python slicing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.registry.ranges import (
    ByteRange,
    RangeNotSatisfiable,
    etag_for,
    etag_matches,
    if_range_allows,
    parse_range,
)

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=500-", 500, 999),
        ("bytes=990-5000", 990, 999),  # clamped to the end
        ("bytes=-10", 990, 999),  # the last ten bytes
        ("bytes=-5000", 0, 999),  # a suffix longer than the file is the whole file
        ("bytes=999-999", 999, 999),
        (" Bytes = 10-19 ", 10, 19),
    ],
)
def test_satisfiable_ranges(header: str, first: int, last: int) -> None:
    byte_range = parse_range(header, SIZE)
    assert byte_range == ByteRange(first, last, SIZE)
    assert byte_range.length == last - first + 1
    assert byte_range.content_range == f"bytes {first}-{last}/{SIZE}"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "items=0-9",
        "bytes=0-9,20-29",
        "bytes=abc",
        "bytes=-",
        "bytes=9-0",
        "bytes=1-2-3",
        "bytes 0-9",
        "",
    ],
)
def test_headers_the_server_ignores_serve_the_whole_file(header: str | None) -> None:
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=-0", "bytes=5000-6000"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as refused:
        parse_range(header, SIZE)
    assert refused.value.content_range == f"bytes */{SIZE}"


def test_nothing_is_satisfiable_in_an_empty_file() -> None:
    for header in ("bytes=0-", "bytes=-1"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, 0)


@given(
    data=st.binary(min_size=1, max_size=300),
    first=st.integers(min_value=0, max_value=400),
    span=st.integers(min_value=0, max_value=400) | st.none(),
)
def test_a_range_selects_what_slicing_selects(data: bytes, first: int, span: int | None) -> None:
    last = None if span is None else first + span
    header = f"bytes={first}-{'' if last is None else last}"
    if first >= len(data):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, len(data))
        return
    byte_range = parse_range(header, len(data))
    assert byte_range is not None
    expected = data[first:] if last is None else data[first : last + 1]
    assert data[byte_range.first : byte_range.last + 1] == expected


@given(data=st.binary(min_size=1, max_size=300), suffix=st.integers(min_value=1, max_value=400))
def test_a_suffix_range_is_the_tail(data: bytes, suffix: int) -> None:
    byte_range = parse_range(f"bytes=-{suffix}", len(data))
    assert byte_range is not None
    assert data[byte_range.first : byte_range.last + 1] == data[-suffix:]


def test_validators() -> None:
    etag = etag_for("ab" * 32)
    assert etag == f'"{"ab" * 32}"'
    assert if_range_allows(None, etag) and if_range_allows(etag, etag)
    assert not if_range_allows('"other"', etag)
    assert not if_range_allows("Wed, 21 Oct 2015 07:28:00 GMT", etag)  # a date cannot match a hash
    assert etag_matches(etag, etag) and etag_matches("*", etag)
    assert etag_matches(f'"x", W/{etag}', etag)
    assert not etag_matches(None, etag) and not etag_matches('"x"', etag)
