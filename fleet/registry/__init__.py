"""The model registry: content-addressed bundle storage, the catalog, and HTTP byte ranges."""

from fleet.registry.ranges import (
    ByteRange,
    RangeNotSatisfiable,
    etag_for,
    etag_matches,
    if_range_allows,
    parse_range,
)
from fleet.registry.store import BundleStore, Upload, is_sha256

__all__ = [
    "BundleStore",
    "ByteRange",
    "RangeNotSatisfiable",
    "Upload",
    "etag_for",
    "etag_matches",
    "if_range_allows",
    "is_sha256",
    "parse_range",
]
