"""What one batch of decoded messages writes: rows per table, and the changes to each device. Pure.

The writer runs this in two steps around the INSERTs: ``plan_rows`` decides which messages may be
stored (their device is registered, in the fleet of the topic) and builds their rows, without
repeats of one (device, seq) inside the batch; after the INSERTs report which rows were new,
``device_changes`` folds the new messages into each device's record (statuses in arrival order).

Tables: metrics go to ``device_metrics``, drift windows to ``drift_windows``; events, OTA reports
and status changes go to ``device_events`` (``kind`` says which), so a replayed status is
recognised by (device, seq) like everything else, and the status history is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from fleet.ingest.decode import Decoded, Dropped, DropReason, as_utc
from fleet.ingest.status import DeviceState, StatusVerdict, after_status, judge_status
from models.mqtt_contract import Channel, MetricsPayload, StatusPayload

METRICS_TABLE = "device_metrics"
DRIFT_TABLE = "drift_windows"
EVENTS_TABLE = "device_events"
TABLES = (METRICS_TABLE, DRIFT_TABLE, EVENTS_TABLE)

TABLE_BY_CHANNEL = {
    Channel.METRICS: METRICS_TABLE,
    Channel.DRIFT: DRIFT_TABLE,
    Channel.EVENTS: EVENTS_TABLE,
    Channel.OTA: EVENTS_TABLE,
    Channel.STATUS: EVENTS_TABLE,
}
EVENT_KIND = {Channel.EVENTS: "event", Channel.OTA: "ota", Channel.STATUS: "status"}

Key = tuple[str, str, int]  # (table, device id, seq)


def key_of(message: Decoded) -> Key:
    return TABLE_BY_CHANNEL[message.channel], message.device_id, message.seq


@dataclass
class RowPlan:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    accepted: list[Decoded] = field(default_factory=list)
    repeats: list[Decoded] = field(default_factory=list)  # the same (device, seq) twice in one batch
    dropped: list[Dropped] = field(default_factory=list)


def plan_rows(messages: Iterable[Decoded], devices: Mapping[str, DeviceState]) -> RowPlan:
    plan = RowPlan(rows={table: [] for table in TABLES})
    seen: set[Key] = set()
    for message in messages:
        state = devices.get(message.device_id)
        if state is None:
            plan.dropped.append(
                Dropped(
                    message.channel.value,
                    DropReason.UNKNOWN_DEVICE,
                    "the device is not registered and presented no valid enrollment token",
                    message.device_id,
                )
            )
            continue
        if state.fleet != message.fleet:
            plan.dropped.append(
                Dropped(
                    message.channel.value,
                    DropReason.FLEET_MISMATCH,
                    f"published under fleet {message.fleet!r}; the device belongs to {state.fleet!r}",
                    message.device_id,
                )
            )
            continue
        key = key_of(message)
        if key in seen:
            plan.repeats.append(message)
            continue
        seen.add(key)
        plan.accepted.append(message)
        plan.rows[key[0]].append(row_for(message))
    return plan


def row_for(message: Decoded) -> dict[str, Any]:
    payload = message.payload
    row: dict[str, Any] = {
        "device_id": message.device_id,
        "seq": message.seq,
        "sent_at": as_utc(payload.ts),
        "received_at": message.received_at,
        "payload": message.stored_json,
    }
    if message.channel is Channel.METRICS:
        only = payload.models[0] if len(payload.models) == 1 else None
        row["model_name"] = only.model if only else None
        row["model_version"] = only.version if only else None
    elif message.channel is Channel.DRIFT:
        row["model_name"] = payload.model
        row["model_version"] = payload.version
        row["window_start"] = as_utc(payload.window_start)
        row["window_end"] = as_utc(payload.window_end)
        row["samples"] = int(payload.window.get("samples", 0))
    else:
        row["kind"] = EVENT_KIND[message.channel]
    return row


@dataclass
class DeviceChange:
    """New values for one device's record. ``status`` and ``metrics`` are set when they change."""

    state: DeviceState
    touched: bool = False
    status: StatusPayload | None = None
    metrics: MetricsPayload | None = None


def device_changes(
    devices: Mapping[str, DeviceState], accepted: Iterable[Decoded], new_keys: set[Key]
) -> dict[str, DeviceChange]:
    """Fold the messages that were new into each device's state.

    ``last_seen`` and ``last_seq`` move with every new message except a Last Will (the broker
    sent it, so it says nothing about when the device was last heard). Statuses are applied in
    arrival order by the rules of ``fleet.ingest.status``; the newest metrics become
    ``latest_metrics``.
    """
    heard: dict[str, tuple[datetime, int]] = {}
    statuses: dict[str, list[StatusPayload]] = {}
    newest_metrics: dict[str, MetricsPayload] = {}
    for message in accepted:
        device_id, payload = message.device_id, message.payload
        if key_of(message) not in new_keys:
            continue
        if message.channel is Channel.STATUS:
            statuses.setdefault(device_id, []).append(payload)
            if is_will(payload):
                continue  # the broker sent it: it says nothing about when the device was heard
        elif message.channel is Channel.METRICS:
            best = newest_metrics.get(device_id)
            if best is None or payload.seq > best.seq:
                newest_metrics[device_id] = payload
        seen = heard.get(device_id)
        if seen is None:
            heard[device_id] = (message.received_at, message.seq)
        else:
            heard[device_id] = (max(seen[0], message.received_at), max(seen[1], message.seq))
    changes: dict[str, DeviceChange] = {}
    for device_id in heard.keys() | statuses.keys() | newest_metrics.keys():
        state = devices[device_id]
        change = DeviceChange(state=state)
        # In arrival order, not seq order: a will's seq is older than the birth it follows.
        for status in statuses.get(device_id, ()):
            verdict = judge_status(change.state, status)
            if verdict is StatusVerdict.STALE:
                continue
            change.state = after_status(change.state, status, verdict)
            change.status = status
        metrics = newest_metrics.get(device_id)
        if metrics is not None and (state.metrics_seq is None or metrics.seq > state.metrics_seq):
            change.state = replace(change.state, metrics_seq=metrics.seq)
            change.metrics = metrics
        if device_id in heard:
            at, seq = heard[device_id]
            change.state = _heard(change.state, seq, at)
            change.touched = True
        changes[device_id] = change
    return changes


def is_will(status: StatusPayload) -> bool:
    """A Last Will carries its own seq as ``will_seq`` (the agent builds it so); a goodbye does not."""
    return not status.online and status.will_seq == status.seq


def _heard(state: DeviceState, seq: int, at: datetime) -> DeviceState:
    last_seen = at if state.last_seen is None or at > state.last_seen else state.last_seen
    last_seq = seq if state.last_seq is None or seq > state.last_seq else state.last_seq
    return replace(state, last_seen=last_seen, last_seq=last_seq)


def models_of(status: StatusPayload) -> dict[str, str]:
    """``{model name: version}`` of the models a device reports running.

    While an update is checked and watched, two versions of a model are loaded; the one that
    serves requests naming no version is the one the status flags ``default``. Agents that flag
    none list the highest last.
    """
    listed = {model.name: model.version for model in status.models}
    flagged = {model.name: model.version for model in status.models if model.default}
    return {**listed, **flagged}
