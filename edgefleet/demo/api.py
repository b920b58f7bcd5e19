"""The demo's side of the REST API: the operator's typed client, with the calls the demo makes.

Everything goes through ``edgefleet.cli._client.FleetClient`` and the server's own schemas, as
``edgefleet devices``, ``models`` and ``rollout`` do: the demo is an operator like any other.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edgefleet.cli._client import ClientSettings, FleetClient
from edgefleet.demo.settings import FLEET, MODEL, DeviceSpec, RolloutPlan

if TYPE_CHECKING:
    from fleet.api.schemas import (
        AlertInfo,
        AuditRecord,
        DeviceCreated,
        DeviceInfo,
        DriftReportInfo,
        PushResult,
    )
    from fleet.rollouts.schemas import RolloutDetail, RolloutInfo


class DemoApi:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self._client = FleetClient(
            ClientSettings(server=url, token=token, server_source="the demo", token_source="the demo"),
            timeout=30.0,
        )

    def close(self) -> None:
        self._client.__exit__()

    # --- devices and bundles ----------------------------------------------------------------------

    def add_device(self, spec: DeviceSpec) -> DeviceCreated:
        from fleet.api.schemas import DeviceCreate, DeviceCreated

        body = DeviceCreate(id=spec.id, fleet=FLEET, profile=spec.profile, tags=spec.tags)
        return self._client.send("POST", "/api/v1/devices", DeviceCreated, json=body.model_dump())

    def devices(self) -> list[DeviceInfo]:
        from fleet.api.schemas import DeviceInfo

        return self._client.get("/api/v1/devices", list[DeviceInfo], params={"fleet": FLEET})

    def push(self, bundle: Path) -> PushResult:
        from fleet.api.schemas import PushResult

        return self._client.upload("/api/v1/models", bundle, PushResult)

    # --- rollouts ---------------------------------------------------------------------------------

    def create_rollout(self, plan: RolloutPlan) -> RolloutDetail:
        from fleet.rollouts.schemas import RolloutCreate, RolloutDetail

        body = RolloutCreate(
            model=MODEL,
            version=plan.version,
            target=f"fleet={FLEET}",
            canary=plan.canary,
            waves=list(plan.waves),
            bake_s=plan.bake_s,
            device_timeout_s=plan.device_timeout_s,
            gates=dict(plan.gates),
            on_failure="abort",
        )
        return self._client.send("POST", "/api/v1/rollouts", RolloutDetail, json=body.model_dump(mode="json"))

    def rollout(self, rollout_id: str) -> RolloutDetail:
        from fleet.rollouts.schemas import RolloutDetail

        return self._client.get(f"/api/v1/rollouts/{rollout_id}", RolloutDetail)

    def rollouts(self) -> list[RolloutInfo]:
        from fleet.rollouts.schemas import RolloutInfo

        return self._client.get("/api/v1/rollouts", list[RolloutInfo], params={"model": MODEL})

    def audit(self, action_prefix: str, limit: int = 200) -> list[AuditRecord]:
        """Audit entries whose action starts with ``action_prefix``, oldest first."""
        from fleet.api.schemas import AuditRecord

        records = self._client.get(
            "/api/v1/audit", list[AuditRecord], params={"action": action_prefix, "limit": limit}
        )
        return sorted(records, key=lambda record: record.id)

    # --- drift ------------------------------------------------------------------------------------

    def alerts(self, state: str = "all") -> list[AlertInfo]:
        from fleet.api.schemas import AlertInfo

        return self._client.get("/api/v1/alerts", list[AlertInfo], params={"state": state, "model": MODEL})

    def drift(self, cohort: str, since: datetime, version: str) -> list[DriftReportInfo]:
        """A cohort's drift reports on ``version`` against the reference, from ``since`` to now."""
        from fleet.api.schemas import DriftReportInfo

        params = {"model": MODEL, "version": version, "cohort": cohort, "since": since.isoformat()}
        return self._client.get("/api/v1/drift", list[DriftReportInfo], params=params)
