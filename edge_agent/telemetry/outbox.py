"""From payloads to numbered, spooled messages on the device's topics.

The payload models come from ``models.mqtt_contract``; this module only fills in the envelope
(device id and the seq the spool hands out) and decides topic and retention: the status is
retained, so a server (re)starting later still learns each device's last state at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge_agent.telemetry.spool import DropReport, Spool, SpoolBatch
from models.mqtt_contract import Channel, EventLevel, EventPayload, encode, topic

# Payload builders get the seq; the envelope's other fields are filled in by the outbox.
PayloadFactory = Callable[[int], Any]

RETAINED = frozenset({Channel.STATUS})


class Outbox:
    """Writes payloads for one device into the spool, each with the next seq."""

    def __init__(self, spool: Spool, *, fleet: str, device_id: str) -> None:
        self.spool = spool
        self.fleet = fleet
        self.device_id = device_id
        self._topics = {channel: topic(fleet, device_id, channel) for channel in Channel}

    def topic(self, channel: Channel) -> str:
        return self._topics[channel]

    def send(self, channel: Channel, make: PayloadFactory) -> int:
        """Spool ``make(seq)`` (a contract payload) on ``channel``; returns its seq."""
        with self.spool.batch() as batch:
            return self.add(batch, channel, make)

    def add(self, batch: SpoolBatch, channel: Channel, make: PayloadFactory) -> int:
        """Like ``send``, inside a batch the caller holds (several messages, one commit)."""
        return batch.append(
            channel,
            self._topics[channel],
            lambda seq: encode(make(seq)),
            retain=channel in RETAINED,
        )

    def event(self, level: EventLevel, code: str, message: str, details: dict[str, Any] | None = None) -> int:
        return self.send(
            Channel.EVENTS,
            lambda seq: EventPayload(
                device_id=self.device_id,
                seq=seq,
                level=level,
                code=code,
                message=message,
                details=details or {},
            ),
        )


def drop_event(device_id: str, seq: int, report: DropReport, max_bytes: int) -> EventPayload:
    """The event that tells the fleet which seqs the spool dropped, so gaps are explained."""
    counts = ", ".join(f"{n} {channel}" for channel, n in sorted(report.counts.items()))
    return EventPayload(
        device_id=device_id,
        seq=seq,
        level=EventLevel.WARNING,
        code="spool_dropped",
        message=(
            f"the spool dropped {report.total} message(s) ({counts}): it reached its "
            f"{max_bytes}-byte limit while the broker was unreachable"
        ),
        details={
            "counts": dict(report.counts),
            "seq_ranges": [list(run) for run in report.seq_ranges()],
            "unlisted": report.unlisted,
            "max_bytes": max_bytes,
        },
    )
