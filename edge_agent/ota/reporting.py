"""Handing the updater's transitions to the telemetry spool, which numbers and sends them.

The updater builds complete ``OtaPayload``s except for ``seq``, which only the spool can hand
out (it is per device, monotonic, and survives restarts). ``spool_reporter(outbox)`` gives the
``report`` callback that spools each payload on the ``ota`` channel with its real seq, in the
same durable SQLite spool as every other message: a transition reported while the broker is
unreachable, or just before a crash, is sent once the agent is connected again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from models.mqtt_contract import Channel, OtaPayload


class OutboxLike(Protocol):
    """``edge_agent.telemetry.Outbox``: spools ``make(seq)`` on ``channel`` and returns the seq."""

    def send(self, channel: Channel, make: Callable[[int], Any]) -> int: ...


def spool_reporter(outbox: OutboxLike) -> Callable[[OtaPayload], None]:
    def report(payload: OtaPayload) -> None:
        outbox.send(Channel.OTA, lambda seq: payload.model_copy(update={"seq": seq}))

    return report
