"""Which status message tells the truth about a device: births, graceful goodbyes and Last Wills. Pure.

Every status carries the device's seq, and a birth announces the seq of its connection's Last
Will (``will_seq``). The broker, not the device, publishes a will, and only when the connection
is lost, so a will's seq is *older* than the birth that announced it. The rules:

- a status newer than the one applied last (a higher seq) is applied, online or not;
- a status with ``online: false`` whose seq is the ``will_seq`` of the status applied last is
  that connection's will: the device is offline, whatever its age;
- anything else is stale (a redelivery, or the will of a connection that was since replaced)
  and changes nothing.

An online status names its connection's will too (the agent does so after every model
change). One that names none (an older agent) cannot have opened a connection, since a birth
always names its will: it keeps the will seq already known, or the device's Last Will would be
judged stale and the device would stay online forever.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from models.mqtt_contract import StatusPayload


@dataclass(frozen=True)
class DeviceState:
    """The registry's view of one device, as far as the ingest orders messages."""

    id: str
    fleet: str
    online: bool
    last_seen: datetime | None
    last_seq: int | None
    status_seq: int | None
    will_seq: int | None
    metrics_seq: int | None
    updated_at: datetime


class StatusVerdict(StrEnum):
    APPLY = "apply"
    WILL = "will"
    STALE = "stale"


def judge_status(state: DeviceState, status: StatusPayload) -> StatusVerdict:
    if state.status_seq is None or status.seq > state.status_seq:
        return StatusVerdict.APPLY
    if not status.online and state.will_seq is not None and status.seq == state.will_seq:
        return StatusVerdict.WILL
    return StatusVerdict.STALE


def after_status(state: DeviceState, status: StatusPayload, verdict: StatusVerdict) -> DeviceState:
    """The state once ``status`` (judged ``verdict``) is applied."""
    if verdict is StatusVerdict.APPLY:
        will_seq = status.will_seq
        if will_seq is None and status.online:
            will_seq = state.will_seq
        return replace(state, online=status.online, status_seq=status.seq, will_seq=will_seq)
    if verdict is StatusVerdict.WILL:
        # The will is spent: a second copy of it is stale, and the birth stays the newest status.
        return replace(state, online=False, will_seq=None)
    return state
