"""HTTP byte ranges (RFC 9110 §14) for resumable bundle downloads: pure parsing, no I/O.

One range per request is served (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``): that is what a
resuming download asks for. As the RFC allows, a header the server does not understand (another
unit, several ranges, bad syntax) is ignored and the whole file is sent; a range that starts past
the end is unsatisfiable (416).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPEC = re.compile(r"(\d*)-(\d*)")


@dataclass(frozen=True)
class ByteRange:
    """An inclusive range ``first..last`` of a file of ``size`` bytes."""

    first: int
    last: int
    size: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.first}-{self.last}/{self.size}"


class RangeNotSatisfiable(ValueError):
    """Every byte the client asked for lies past the end of the file."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the requested range is outside the file's {size} bytes")
        self.size = size

    @property
    def content_range(self) -> str:
        return f"bytes */{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range to serve, or None to serve the whole file; raises RangeNotSatisfiable."""
    if header is None:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _SPEC.fullmatch(spec.strip())
    if match is None or match.group(0) == "-":
        return None
    first_text, last_text = match.groups()
    if not first_text:  # a suffix: the last n bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(size - suffix, 0), size - 1, size)
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # syntactically invalid: ignore the header (RFC 9110 §14.1.1)
    if first >= size:
        raise RangeNotSatisfiable(size)
    last = min(int(last_text), size - 1) if last_text else size - 1
    return ByteRange(first, last, size)


def etag_for(sha256: str) -> str:
    """A strong validator: the content's own hash."""
    return f'"{sha256}"'


def if_range_allows(if_range: str | None, etag: str) -> bool:
    """True when a Range may be honoured: no If-Range, or one that names this exact content.

    A date in If-Range (the other form) cannot be matched against a content hash, so it falls
    back to the whole file, which is always correct.
    """
    return if_range is None or if_range.strip() == etag


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """For If-None-Match: ``*`` or a list containing the ETag (weak comparison, RFC 9110 §13.1.2)."""
    if if_none_match is None:
        return False
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or etag in candidates
