"""The MQTT contract between edge agents and the fleet server: topics and payloads.

This module owns it; the agent and the server import it and never re-declare a topic or a field.

Topics (BRIEF.md §3), under ``edgefleet/v1/{fleet}/{device}/``:

==========  =========  ========  ===========================================================
channel     direction  retained  payload
==========  =========  ========  ===========================================================
status      up         yes       ``StatusPayload``; the Last Will sets ``online: false``
metrics     up         no        ``MetricsPayload``, every N seconds
drift       up         no        ``DriftPayload``: counts in the bundle's frozen bins
events      up         no        ``EventPayload``: errors, rejected commands, spool drops
ota         up         no        ``OtaPayload``: every updater state transition
desired     down       yes       ``DesiredState``: what the device should run
==========  =========  ========  ===========================================================

Every upward payload carries the schema version, the device id, the device's monotonic ``seq``
and a timestamp. QoS 1 may deliver a message twice, so the server is idempotent on
(device, seq). Scale-out replicas of the server share the ingest through ``$share/fleet/...``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

CONTRACT_VERSION: Final = 1
TOPIC_ROOT = "edgefleet/v1"
SHARED_GROUP = "fleet"
MAX_PAYLOAD_BYTES = 256 * 1024
DEFAULT_FLEET = "default"

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class Channel(StrEnum):
    STATUS = "status"
    METRICS = "metrics"
    DRIFT = "drift"
    EVENTS = "events"
    OTA = "ota"
    DESIRED = "desired"


UPSTREAM_CHANNELS = (Channel.STATUS, Channel.METRICS, Channel.DRIFT, Channel.EVENTS, Channel.OTA)


class ContractError(ValueError):
    """A topic or payload that does not follow the contract; the message says which part."""


# ---- topics -------------------------------------------------------------------------------------


def check_segment(kind: str, value: str) -> str:
    """Fleet names and device ids become topic segments: no wildcards, slashes or spaces."""
    if not _SEGMENT.match(value):
        raise ContractError(
            f"{kind} {value!r} is not a valid topic segment: use letters, digits, '.', '_' or '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return value


def topic(fleet: str, device: str, channel: Channel) -> str:
    return (
        f"{TOPIC_ROOT}/{check_segment('fleet', fleet)}/{check_segment('device id', device)}/{channel.value}"
    )


def device_filter(fleet: str, device: str) -> str:
    """Everything one device may touch: the root of its ACL."""
    return f"{TOPIC_ROOT}/{check_segment('fleet', fleet)}/{check_segment('device id', device)}/#"


def ingest_subscriptions(fleet: str = "+", *, shared: bool = True) -> list[str]:
    """The server's subscriptions: one per upward channel, shared between replicas."""
    prefix = f"$share/{SHARED_GROUP}/" if shared else ""
    return [f"{prefix}{TOPIC_ROOT}/{fleet}/+/{channel.value}" for channel in UPSTREAM_CHANNELS]


def parse_topic(name: str) -> tuple[str, str, Channel]:
    """Split ``edgefleet/v1/{fleet}/{device}/{channel}``; refuse anything else."""
    parts = name.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise ContractError(f"topic {name!r} is not {TOPIC_ROOT}/<fleet>/<device>/<channel>")
    fleet, device, channel = parts[2], parts[3], parts[4]
    check_segment("fleet", fleet)
    check_segment("device id", device)
    try:
        return fleet, device, Channel(channel)
    except ValueError:
        raise ContractError(f"topic {name!r}: unknown channel {channel!r}") from None


# ---- payloads -----------------------------------------------------------------------------------


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Envelope(_Payload):
    """Fields every upward message carries."""

    schema_version: Literal[1] = CONTRACT_VERSION
    device_id: str = Field(min_length=1, max_length=128)
    seq: int = Field(ge=0, description="Per-device, monotonic, survives restarts (the spool owns it).")
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))


class ModelState(_Payload):
    name: str
    version: str
    format: str
    precision: str
    provider: str = ""
    ready: bool = True
    default: bool | None = Field(
        default=None,
        description="True for the version that requests naming no version get (two versions of a "
        "model are loaded while an update is checked and watched); None from agents that do not say.",
    )


class SlotState(_Payload):
    active: Literal["a", "b"] | None = None
    slots: dict[str, dict[str, Any]] = Field(default_factory=dict)
    state: str = "idle"


class HostFacts(_Payload):
    hostname: str = ""
    os: str = ""
    arch: str = ""
    cpu_count: int | None = None
    memory_mb: int | None = None
    python: str = ""


class StatusPayload(Envelope):
    kind: Literal["status"] = "status"
    online: bool
    agent_version: str = ""
    profile: str = ""
    fleet: str = DEFAULT_FLEET
    host: HostFacts = Field(default_factory=HostFacts)
    models: list[ModelState] = Field(default_factory=list)
    ota: SlotState = Field(default_factory=SlotState)
    started_at: datetime | None = None
    enrollment_token: str | None = Field(default=None, description="Only on a device's first birth.")
    will_seq: int | None = Field(
        default=None,
        ge=0,
        description=(
            "The seq this connection's Last Will carries. The broker, not the device, publishes a "
            "will, so that seq arrives only if the connection was lost; a seq announced here and "
            "never received is not a lost message."
        ),
    )


class LatencySummary(_Payload):
    """Quantiles estimated from a fixed-bucket histogram (``bucket_bounds_ms`` upper bounds)."""

    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    bucket_bounds_ms: list[float] = Field(default_factory=list)
    bucket_counts: list[int] = Field(default_factory=list)


class ModelMetrics(_Payload):
    model: str
    version: str
    requests: int = Field(ge=0)
    errors: dict[str, int] = Field(default_factory=dict, description="Count per gRPC status code name.")
    latency: LatencySummary = Field(default_factory=LatencySummary)
    batch_sizes: dict[str, int] = Field(default_factory=dict, description="Batch size -> count.")
    queue_depth_max: int = 0


class SystemMetrics(_Payload):
    cpu_percent: float | None = None
    memory_rss_mb: float | None = None
    memory_percent: float | None = None
    temperature_c: float | None = None


class MetricsPayload(Envelope):
    kind: Literal["metrics"] = "metrics"
    window_start: datetime
    window_s: float = Field(gt=0)
    models: list[ModelMetrics] = Field(default_factory=list)
    system: SystemMetrics = Field(default_factory=SystemMetrics)
    spool_dropped: dict[str, int] = Field(default_factory=dict, description="Messages dropped, by channel.")


class DriftPayload(Envelope):
    kind: Literal["drift"] = "drift"
    model: str
    version: str
    window_start: datetime
    window_end: datetime
    window: dict[str, Any] = Field(description="models.stats.DriftWindow.to_dict()")


class EventLevel(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class EventPayload(Envelope):
    kind: Literal["event"] = "event"
    level: EventLevel
    code: str = Field(
        min_length=1, description="Stable, machine-readable: command_rejected, spool_dropped, ..."
    )
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class OtaPayload(Envelope):
    kind: Literal["ota"] = "ota"
    model: str
    version: str
    state: str = Field(description="The updater state entered: assigned, downloading, ..., committed.")
    previous_version: str | None = None
    rollout_id: str | None = None
    reason: str = ""
    details: dict[str, Any] = Field(default_factory=dict)


UpstreamPayload = Annotated[
    StatusPayload | MetricsPayload | DriftPayload | EventPayload | OtaPayload, Field(discriminator="kind")
]
_UPSTREAM: TypeAdapter[Any] = TypeAdapter(UpstreamPayload)
_KIND_BY_CHANNEL = {
    Channel.STATUS: "status",
    Channel.METRICS: "metrics",
    Channel.DRIFT: "drift",
    Channel.EVENTS: "event",
    Channel.OTA: "ota",
}


class DesiredModel(_Payload):
    version: str
    bundle_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bundle_size: int = Field(ge=0)
    bundle_url: str = Field(description="Absolute, or relative to the server's base URL.")
    rollout_id: str | None = None
    allow_rollback: bool = False


class DesiredState(_Payload):
    """Server to device, retained: the device converges to this."""

    schema_version: Literal[1] = CONTRACT_VERSION
    kind: Literal["desired"] = "desired"
    revision: int = Field(ge=0, description="Grows with every change; a device ignores an older one.")
    models: dict[str, DesiredModel] = Field(default_factory=dict)
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))


# ---- encoding -----------------------------------------------------------------------------------


def encode(payload: _Payload) -> bytes:
    return payload.model_dump_json(exclude_none=False).encode("utf-8")


def _load_json(data: bytes) -> Any:
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"payload of {len(data)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"payload is not UTF-8 JSON: {exc}") from None


def decode_upstream(channel: Channel, data: bytes, *, device_id: str | None = None) -> Any:
    """Parse a device's message on ``channel``; refuse other shapes and another device's id."""
    if channel == Channel.DESIRED:
        raise ContractError("'desired' is a downward channel: decode it with decode_desired")
    raw = _load_json(data)
    if not isinstance(raw, dict):
        raise ContractError("payload must be a JSON object")
    expected = _KIND_BY_CHANNEL[channel]
    if raw.get("kind", expected) != expected:
        raise ContractError(f"payload kind {raw.get('kind')!r} does not belong on channel {channel.value!r}")
    raw.setdefault("kind", expected)
    try:
        payload = _UPSTREAM.validate_python(raw)
    except ValidationError as exc:
        raise ContractError(f"{channel.value} payload: {_first_problem(exc)}") from None
    if device_id is not None and payload.device_id != device_id:
        raise ContractError(
            f"payload says device {payload.device_id!r} but was published under device {device_id!r}"
        )
    return payload


def decode_desired(data: bytes) -> DesiredState:
    raw = _load_json(data)
    try:
        return DesiredState.model_validate(raw)
    except ValidationError as exc:
        raise ContractError(f"desired state: {_first_problem(exc)}") from None


def _first_problem(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "(root)"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)
