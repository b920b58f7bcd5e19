"""What the demo ended with: built from the server's answers and the traffic counts, shown as tables
and written to ``summary.json`` (which the tests read). ``build_summary`` and ``render_summary``
are pure."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table

from edgefleet.demo.settings import DeviceSpec

if TYPE_CHECKING:
    from edgefleet.demo.traffic import DeviceCounts
    from fleet.api.schemas import AlertInfo, DeviceInfo
    from fleet.rollouts.schemas import RolloutDetail


@dataclass(frozen=True)
class DeviceRow:
    id: str
    profile: str | None
    site: str | None
    version: str | None
    online: bool


@dataclass(frozen=True)
class RolloutRow:
    id: str
    version: str
    state: str
    reason: str | None
    waves: int
    devices: int
    states: dict[str, int]
    canary: list[str]  # the devices of wave 0
    assigned: list[str]  # every device the rollout ever assigned its version to


@dataclass(frozen=True)
class AlertRow:
    id: int
    cohort: str | None
    version: str | None
    feature: str | None
    metric: str | None
    value: float | None
    threshold: float | None
    severity: str
    open: bool


@dataclass(frozen=True)
class TrafficRow:
    device: str
    site: str
    ok: int
    failed: int
    versions: dict[str, int]
    last_error: str | None


@dataclass(frozen=True)
class DemoSummary:
    model: str
    fast: bool
    server_url: str
    out: str
    elapsed_s: float
    devices: list[DeviceRow]
    versions: dict[str, int]  # version -> devices running it
    rollouts: list[RolloutRow]
    alerts: list[AlertRow]
    traffic: list[TrafficRow]
    shifted_site: str
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def requests_ok(self) -> int:
        return sum(row.ok for row in self.traffic)

    @property
    def requests_failed(self) -> int:
        return sum(row.failed for row in self.traffic)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["requests"] = {"ok": self.requests_ok, "failed": self.requests_failed}
        return data

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")


def build_summary(
    *,
    model: str,
    fast: bool,
    server_url: str,
    out: Path,
    elapsed_s: float,
    specs: Sequence[DeviceSpec],
    devices: Sequence[DeviceInfo],
    rollouts: Sequence[RolloutDetail],
    alerts: Sequence[AlertInfo],
    traffic: Mapping[str, DeviceCounts],
    shifted_site: str,
    steps: Mapping[str, float],
) -> DemoSummary:
    sites = {spec.id: spec.site for spec in specs}
    device_rows = [
        DeviceRow(d.id, d.profile, d.tags.get("site"), _version(d.models.get(model)), d.online)
        for d in sorted(devices, key=lambda d: d.id)
    ]
    versions = Counter(row.version for row in device_rows if row.version is not None)
    rollout_rows = [
        RolloutRow(
            id=r.id,
            version=r.version,
            state=r.state,
            reason=r.reason,
            waves=r.waves,
            devices=r.devices,
            states=dict(r.states),
            canary=sorted(d.device_id for d in r.device_list if d.wave == 0),
            assigned=sorted(d.device_id for d in r.device_list if d.assigned_at is not None),
        )
        for r in sorted(rollouts, key=lambda r: r.created_at)
    ]
    alert_rows = [
        AlertRow(
            a.id,
            a.cohort,
            a.version,
            a.feature,
            a.metric,
            a.value,
            a.threshold,
            a.severity,
            a.resolved_at is None,
        )
        for a in sorted(alerts, key=lambda a: a.id)
        if a.kind.startswith("drift")
    ]
    traffic_rows = [
        TrafficRow(
            device,
            sites.get(device, "?"),
            counts.ok,
            counts.failed,
            dict(sorted(counts.versions.items())),
            counts.last_error,
        )
        for device, counts in sorted(traffic.items())
    ]
    return DemoSummary(
        model=model,
        fast=fast,
        server_url=server_url,
        out=str(out),
        elapsed_s=round(elapsed_s, 1),
        devices=device_rows,
        versions=dict(sorted(versions.items())),
        rollouts=rollout_rows,
        alerts=alert_rows,
        traffic=traffic_rows,
        shifted_site=shifted_site,
        steps={title: round(seconds, 1) for title, seconds in steps.items()},
    )


def _version(value: Any) -> str | None:
    return None if value is None else str(value)


# --- rendering -----------------------------------------------------------------------------------


def render_summary(summary: DemoSummary) -> RenderableType:
    return Group(
        _devices_table(summary),
        _rollouts_table(summary),
        _alerts_table(summary),
        _traffic_table(summary),
    )


def _devices_table(summary: DemoSummary) -> Table:
    versions = ", ".join(f"{v} on {n}" for v, n in summary.versions.items()) or "none"
    table = Table(title=f"devices ({versions})", title_justify="left")
    for column in ("device", "profile", "site", summary.model, "online"):
        table.add_column(column)
    for row in summary.devices:
        table.add_row(
            row.id,
            row.profile or "-",
            row.site or "-",
            row.version or "-",
            "[green]yes[/]" if row.online else "[red]no[/]",
        )
    return table


def _rollouts_table(summary: DemoSummary) -> Table:
    table = Table(title="rollouts", title_justify="left")
    for column in ("rollout", "version", "outcome", "waves", "devices", "got the version", "reason"):
        table.add_column(column, overflow="fold")
    for row in summary.rollouts:
        style = {"completed": "green", "aborted": "bold red"}.get(row.state, "yellow")
        table.add_row(
            row.id,
            row.version,
            f"[{style}]{row.state}[/]",
            str(row.waves),
            ", ".join(f"{n} {s}" for s, n in sorted(row.states.items())),
            ", ".join(row.assigned) or "none",
            row.reason or "",
        )
    return table


def _alerts_table(summary: DemoSummary) -> RenderableType:
    table = Table(title="drift alerts", title_justify="left")
    for column in ("alert", "cohort", "version", "feature", "metric", "value", "threshold", "state"):
        table.add_column(column)
    for row in summary.alerts:
        table.add_row(
            str(row.id),
            row.cohort or "-",
            row.version or "-",
            row.feature or "-",
            row.metric or "-",
            f"{row.value:.3f}" if row.value is not None else "-",
            f"{row.threshold:g}" if row.threshold is not None else "-",
            "[red]open[/]" if row.open else "resolved",
        )
    if not summary.alerts:
        table.caption = "none"
    return table


def _traffic_table(summary: DemoSummary) -> Table:
    table = Table(
        title=f"inference traffic through tritonclient: {summary.requests_ok} answered, "
        f"{summary.requests_failed} failed",
        title_justify="left",
    )
    for column in ("device", "site", "answered", "failed", "answered by version"):
        table.add_column(column)
    for row in summary.traffic:
        table.add_row(
            row.device,
            row.site,
            str(row.ok),
            f"[red]{row.failed}[/]" if row.failed else "0",
            ", ".join(f"{v}: {n}" for v, n in row.versions.items()) or "-",
        )
    return table
