"""From an MQTT message to a checked contract payload, or a reason to drop it. Pure.

The contract (``models.mqtt_contract``) owns topics and payload shapes; this module adds what the
database needs on top: a device id in the payload that matches the topic's, a status whose fleet
matches the topic's, numbers that fit a 64-bit column, strings that fit theirs, no NUL characters
(PostgreSQL's JSONB refuses them), time zones on timestamps, and a drift window that
``models.stats.DriftWindow`` reads, with finite moments (``window_problem``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import TypeAdapter, ValidationError

from models.mqtt_contract import (
    MAX_PAYLOAD_BYTES,
    Channel,
    ContractError,
    DriftPayload,
    UpstreamPayload,
    decode_upstream,
    parse_topic,
)
from models.stats import STATS_SCHEMA_VERSION

MAX_BIGINT = 2**63 - 1
MODEL_NAME_MAX = 128
MODEL_VERSION_MAX = 64
UNKNOWN_CHANNEL = "unknown"


class DropReason(StrEnum):
    """Why a message was not stored; each is a label value of ``edgefleet_ingest_dropped_total``."""

    BAD_TOPIC = "bad_topic"
    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    SCHEMA = "schema"
    IDENTITY = "identity"
    FLEET_MISMATCH = "fleet_mismatch"
    UNKNOWN_DEVICE = "unknown_device"
    ENROLLMENT_REFUSED = "enrollment_refused"
    STORE_FAILED = "store_failed"


@dataclass(frozen=True)
class Message:
    """One MQTT message as received: its topic, raw payload, and when it arrived (UTC)."""

    topic: str
    payload: bytes
    received_at: datetime


@dataclass(frozen=True)
class Decoded:
    """A message that follows the contract. ``payload`` is the contract's model for ``channel``;
    ``stored_json`` is the JSON text the database keeps: the bytes as the device sent them, or the
    payload serialised again when they hold NaN or Infinity (valid for Python, not for JSONB)."""

    channel: Channel
    fleet: str
    device_id: str
    payload: Any
    received_at: datetime
    stored_json: str

    @property
    def seq(self) -> int:
        return int(self.payload.seq)


@dataclass(frozen=True)
class Dropped:
    """A message refused before it reached the database, and why (for the log and /metrics)."""

    channel: str
    reason: DropReason
    detail: str
    device_id: str | None = None


def decode_message(message: Message) -> Decoded | Dropped:
    """Check ``message`` against the contract and the database's limits. Never raises."""
    try:
        fleet, device_id, channel = parse_topic(message.topic)
    except ContractError as exc:
        return Dropped(UNKNOWN_CHANNEL, DropReason.BAD_TOPIC, str(exc))
    if channel is Channel.DESIRED:
        return Dropped(channel.value, DropReason.BAD_TOPIC, "'desired' is the server's own channel")
    size = len(message.payload)
    if size > MAX_PAYLOAD_BYTES:
        return Dropped(
            channel.value,
            DropReason.OVERSIZED,
            f"{size} bytes exceed the {MAX_PAYLOAD_BYTES}-byte limit",
            device_id,
        )
    try:
        payload = _fast_decode(channel, message.payload)
        if payload is None:
            payload = decode_upstream(channel, message.payload)
            _ACCEPTED_KINDS.add((channel, payload.kind))
    except ContractError as exc:
        return Dropped(channel.value, _contract_reason(message.payload), str(exc), device_id)
    if payload.device_id != device_id:
        return Dropped(
            channel.value,
            DropReason.IDENTITY,
            f"payload says device {payload.device_id!r} but was published under {device_id!r}",
            device_id,
        )
    # Channel comparisons, not isinstance: isinstance on pydantic models is slow on this hot path.
    if channel is Channel.STATUS and payload.fleet != fleet:
        return Dropped(
            channel.value,
            DropReason.IDENTITY,
            f"status says fleet {payload.fleet!r} but was published under fleet {fleet!r}",
            device_id,
        )
    problem = storage_problem(channel, message.payload, payload)
    if problem is not None:
        return Dropped(channel.value, DropReason.SCHEMA, problem, device_id)
    if payload.ts.tzinfo is None:  # a device clock without a zone is taken as UTC
        payload = payload.model_copy(update={"ts": payload.ts.replace(tzinfo=UTC)})
    return Decoded(
        channel, fleet, device_id, payload, message.received_at, stored_json(message.payload, payload)
    )


def stored_json(raw: bytes, payload: Any) -> str:
    """Keep what the device sent (no second serialisation on the hot path), unless JSONB would refuse it."""
    if b"NaN" in raw or b"Infinity" in raw:
        return str(payload.model_dump_json())
    return raw.decode("utf-8")


# The contract's payload union, parsed straight from bytes (pydantic's own JSON parser): about half
# the time of ``decode_upstream``, which parses with ``json`` and then validates the dict. Which
# ``kind`` belongs on which channel is the contract's business: the fast path only accepts a
# (channel, kind) pair that ``decode_upstream`` itself accepted before, and hands everything else
# (a first message, a payload without ``kind``, anything invalid) to ``decode_upstream``, whose
# verdict and error message are final.
_UPSTREAM_JSON: TypeAdapter[Any] = TypeAdapter(UpstreamPayload)
_ACCEPTED_KINDS: set[tuple[Channel, str]] = set()


def _fast_decode(channel: Channel, data: bytes) -> Any | None:
    try:
        payload = _UPSTREAM_JSON.validate_json(data)
    except ValidationError:
        return None
    return payload if (channel, payload.kind) in _ACCEPTED_KINDS else None


def _contract_reason(data: bytes) -> DropReason:
    """Not JSON (or not an object) is ``malformed``; JSON of the wrong shape is ``schema``."""
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return DropReason.MALFORMED
    return DropReason.SCHEMA if isinstance(parsed, dict) else DropReason.MALFORMED


def storage_problem(channel: Channel, raw: bytes, payload: Any) -> str | None:
    """What would make a contract-valid payload fail in the database, or None."""
    if b"\\u0000" in raw:
        return "payload holds a NUL character (\\u0000), which the database cannot store"
    if payload.seq > MAX_BIGINT:
        return f"seq {payload.seq} does not fit in 64 bits"
    if channel is Channel.DRIFT:
        return _drift_problem(payload)
    if channel is Channel.METRICS:
        for model in payload.models:
            if len(model.model) > MODEL_NAME_MAX or len(model.version) > MODEL_VERSION_MAX:
                return f"model name or version too long (at most {MODEL_NAME_MAX} and {MODEL_VERSION_MAX})"
    return None


def _drift_problem(payload: DriftPayload) -> str | None:
    if len(payload.model) > MODEL_NAME_MAX or len(payload.version) > MODEL_VERSION_MAX:
        return f"model name or version too long (at most {MODEL_NAME_MAX} and {MODEL_VERSION_MAX})"
    problem = window_problem(payload.window)
    return f"drift window: {problem}" if problem else None


def window_problem(window: Any) -> str | None:
    """Why ``models.stats.DriftWindow.from_dict`` would refuse ``window``, or what the database and the
    analysis cannot use (non-finite moments, numbers beyond 64 bits); None when it is fine.

    Plain Python on purpose: ``from_dict`` builds numpy arrays per feature, which costs more than
    the rest of the ingest per message. A unit test holds this to ``from_dict``'s verdicts.
    """
    if not isinstance(window, dict):
        return "not an object"
    if window.get("schema_version") != STATS_SCHEMA_VERSION:
        return f"schema {window.get('schema_version')!r} is not supported (expected {STATS_SCHEMA_VERSION})"
    if not isinstance(window.get("reference"), str):
        return "no reference fingerprint"
    samples = window.get("samples")
    if not _count(samples):
        return f"sample count {samples!r} is not an integer from 0 to 2^63-1"
    for key in ("start", "end"):
        value = window.get(key)
        if value is not None and not _finite(value):
            return f"{key} {value!r} is not a finite number"
    features = window.get("features")
    if not isinstance(features, dict):
        return "no features"
    for name, data in features.items():
        problem = _feature_problem(data)
        if problem:
            return f"feature {name!r}: {problem}"
    return None


def _feature_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "not an object"
    if not _counts(data.get("counts")):
        return "counts must be a list of non-negative integers"
    count = data.get("count")
    if not _count(count) or not _count(data.get("nonfinite", 0)):
        return "count and nonfinite must be non-negative integers"
    if count == 0:
        return None
    moments = [data.get(key) for key in ("mean", "variance", "min", "max")]
    if not all(_finite(value) for value in moments):
        return "mean, variance, min and max must be finite numbers"
    if float(data["variance"]) < 0:
        return "variance must be >= 0"
    return None


def _counts(counts: Any) -> bool:
    if type(counts) is not list:
        return False
    total = 0
    for count in counts:
        if type(count) is not int or count < 0:
            return False
        total += count
    return total <= MAX_BIGINT


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_BIGINT


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
