"""The device's status: the retained birth message, the Last Will, and updates when models change.

The birth says the device is online and what it runs (agent version, hardware profile, host
facts, the loaded models and their versions, the OTA slot state) and announces the seq of this
connection's Last Will (``will_seq``). The will is the same status with ``online: false``,
built when the connection is made; the broker publishes it, retained, if the device vanishes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from edge_agent.telemetry.system import host_facts
from models.mqtt_contract import HostFacts, ModelState, SlotState, StatusPayload


@dataclass(frozen=True)
class DeviceIdentity:
    fleet: str
    device_id: str
    agent_version: str
    profile: str = ""


class StatusBuilder:
    """Builds status payloads from what the agent runs right now."""

    def __init__(
        self,
        identity: DeviceIdentity,
        *,
        models: Callable[[], list[ModelState]],
        ota: Callable[[], SlotState] | None = None,
        host: HostFacts | None = None,
    ) -> None:
        self.identity = identity
        self._models = models
        self._ota = ota
        self.host = host or host_facts()
        self.started_at = datetime.now(UTC)

    def status(self, seq: int, *, online: bool, will_seq: int | None = None) -> StatusPayload:
        return StatusPayload(
            device_id=self.identity.device_id,
            seq=seq,
            online=online,
            agent_version=self.identity.agent_version,
            profile=self.identity.profile,
            fleet=self.identity.fleet,
            host=self.host,
            models=self._models(),
            ota=self._ota() if self._ota is not None else SlotState(),
            started_at=self.started_at,
            will_seq=will_seq,
        )
