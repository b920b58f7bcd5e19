"""Time ranges for drift queries: ``90m``, ``24h``, ``7d`` before now, or an ISO-8601 instant. Pure."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

DEFAULT_SINCE = timedelta(hours=24)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")


class TimeRangeError(ValueError):
    """A time that does not parse, or a range that ends before it starts."""


def parse_duration(text: str) -> timedelta | None:
    match = _DURATION.match(text.strip().lower())
    if match is None:
        return None
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_instant(text: str, now: datetime) -> datetime:
    """``30m`` (that long before ``now``), ``now``, or an ISO-8601 time (UTC when no zone is given)."""
    value = text.strip()
    if value.lower() == "now":
        return now
    duration = parse_duration(value)
    if duration is not None:
        return now - duration
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TimeRangeError(
            f"{text!r} is neither a duration (30m, 24h, 7d) nor an ISO-8601 time (2025-01-31T12:00:00Z)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def resolve_range(since: str | None, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    start = parse_instant(since, now) if since else now - DEFAULT_SINCE
    end = parse_instant(until, now) if until else now
    if end <= start:
        raise TimeRangeError(f"the range ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    return start, end
