"""Following a rollout as it happens: a live status line, and a gate table each time a wave is judged.

The server does all the work (the controller assigns waves, the devices update and report, the
gates judge); the demo only reads. The live line comes from ``GET /api/v1/rollouts/{id}``; the
permanent lines come from the audit log, where the controller writes every decision with the
gate results and figures behind it: a wave that starts carries the verdict on the one before,
and a completed or aborted rollout carries the last verdict.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from edgefleet.cli._console import CLIError

if TYPE_CHECKING:
    from edgefleet.demo.api import DemoApi
    from fleet.api.schemas import AuditRecord
    from fleet.rollouts.schemas import RolloutDetail

POLL_S = 0.5
FINISHED = ("completed", "aborted")


def wave_name(index: int) -> str:
    return "canary" if index == 0 else f"wave {index}"


def describe_plan(detail: RolloutDetail) -> str:
    """``canary 1 device, wave 1 to 3, wave 2 to 6`` (cumulative). Pure."""
    parts = []
    for wave in detail.wave_list:
        if wave.index == 0:
            parts.append(f"canary {wave.size} device{'s' if wave.size != 1 else ''}")
        else:
            parts.append(f"{wave.label} up to {wave.cumulative}")
    return ", ".join(parts)


def follow_rollout(api: DemoApi, rollout_id: str, console: Console, *, timeout_s: float) -> RolloutDetail:
    """Show the rollout until it has finished and every device has settled; its final state."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    detail = api.rollout(rollout_id)
    with Live(status_line(detail), console=console, transient=True, refresh_per_second=4) as live:
        while True:
            for record in _new_events(api, rollout_id, seen):
                rendered = render_event(record, detail)
                if rendered is not None:
                    live.console.print(rendered)
            if detail.state in FINISHED and detail.settled:
                break
            if time.monotonic() > deadline:
                raise CLIError(
                    f"rollout {rollout_id} did not finish within {timeout_s:.0f} s "
                    f"({detail.state}, {wave_name(max(detail.wave, 0))}: {_states(detail.states)})",
                    hint="the devices' logs are in the demo folder's logs/; the machine may be too busy",
                )
            time.sleep(POLL_S)
            detail = api.rollout(rollout_id)
            live.update(status_line(detail))
    for record in _new_events(api, rollout_id, seen):  # what the last step wrote
        rendered = render_event(record, detail)
        if rendered is not None:
            console.print(rendered)
    return detail


def _new_events(api: DemoApi, rollout_id: str, seen: set[int]) -> list[AuditRecord]:
    fresh = [r for r in api.audit("rollout.") if r.target == rollout_id and r.id not in seen]
    seen.update(r.id for r in fresh)
    return fresh


# --- rendering (pure) ----------------------------------------------------------------------------


def status_line(detail: RolloutDetail) -> Text:
    wave = wave_name(detail.wave) if detail.wave >= 0 else "starting"
    line = Text.from_markup(
        f"  [cyan]…[/] {detail.version}: {detail.state}, {wave}; devices {_states(detail.states)}"
    )
    if detail.decision is not None and detail.state == "running":
        line.append(f"\n    gates: {detail.decision.verdict}: {detail.decision.reason}", style="dim")
    return line


def _states(states: Mapping[str, int]) -> str:
    return ", ".join(f"{count} {state}" for state, count in sorted(states.items())) or "none"


def render_event(record: AuditRecord, detail: RolloutDetail) -> RenderableType | None:
    details = record.details
    if record.action == "rollout.wave":
        parts: list[RenderableType] = []
        after = details.get("after")
        if isinstance(after, Mapping):
            parts.append(_verdict_block(after, detail))
        devices = ", ".join(details.get("devices") or []) or "none"
        parts.append(
            Text.from_markup(
                f"  [bold]→ {details.get('label', 'wave')}[/] started: {devices} get {detail.version}"
            )
        )
        return Group(*parts)
    if record.action == "rollout.complete":
        return Group(
            _verdict_block(details, detail),
            Text.from_markup(
                f"  [bold green]✓ rollout {record.target} completed[/]: "
                f"{escape(str(details.get('reason') or detail.reason or 'every wave passed its gates'))}"
            ),
        )
    if record.action == "rollout.abort":
        reverting = ", ".join(details.get("reverting") or []) or "none"
        return Group(
            _verdict_block(details, detail),
            Text.from_markup(
                f"  [bold red]✗ rollout {record.target} aborted[/]: {details.get('reason', '')}\n"
                f"    sent back to their previous version: {reverting}"
            ),
        )
    if record.action == "rollout.pause":
        return Text.from_markup(f"  [yellow]‖ paused[/]: {details.get('reason', '')}")
    return None


def _verdict_block(details: Mapping[str, Any], detail: RolloutDetail) -> RenderableType:
    decision = details.get("decision") or {}
    wave = int(details.get("wave", -1))
    verdict = str(decision.get("verdict", "?"))
    figures = details.get("figures") or {}
    passed = verdict == "proceed"
    title = (
        f"{wave_name(wave)} passed its gates"
        if passed
        else f"{wave_name(wave)}: {verdict} ({decision.get('reason', '')})"
    )
    return gate_table(decision.get("gates") or [], title=title, figures=figures, ok=passed)


def gate_table(
    gates: Sequence[Mapping[str, Any]], *, title: str, figures: Mapping[str, Any], ok: bool
) -> Table:
    table = Table(
        title=("✓ " if ok else "✗ ") + title, title_justify="left", title_style="green" if ok else "red"
    )
    for column in ("gate", "result", "value", "limit", "detail"):
        table.add_column(column, overflow="fold")
    for gate in gates:
        passed = gate.get("passed")
        result = (
            "[green]pass[/]"
            if passed is True
            else "[bold red]FAIL[/]"
            if passed is False
            else "[yellow]waiting[/]"
        )
        table.add_row(
            str(gate.get("name")),
            result,
            _figure(gate.get("value")),
            _figure(gate.get("threshold")),
            str(gate.get("detail", "")),
        )
    canary = figures.get("canary") or {}
    if canary:
        table.caption = (
            f"canary cohort: {canary.get('devices', 0)} device(s), {canary.get('committed', 0)} committed, "
            f"{canary.get('requests', 0)} requests"
        )
    return table


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def device_states(detail: RolloutDetail) -> dict[str, list[str]]:
    """Device ids per state in this rollout. Pure."""
    grouped: dict[str, list[str]] = {}
    for device in detail.device_list:
        grouped.setdefault(device.state, []).append(device.device_id)
    return grouped


def assigned_devices(detail: RolloutDetail) -> list[str]:
    """Devices the rollout ever assigned its version to (they have an assignment time). Pure."""
    return sorted(d.device_id for d in detail.device_list if d.assigned_at is not None)
