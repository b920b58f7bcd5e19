"""`edgefleet rollout`: staged OTA rollouts with a canary, waves and gates on live telemetry.

Registered by the root app as ``app.add_typer(rollout.app, name="rollout")``. Options are checked
here with the server's own parsers (``fleet.rollouts.spec``) before anything is sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from edgefleet.cli._client import SERVER_OPTION, TOKEN_OPTION, FleetClient, client
from edgefleet.cli._console import CLIError, cli_errors, console, print_json

if TYPE_CHECKING:
    from fleet.rollouts.schemas import DecisionInfo, RolloutDetail, RolloutInfo

app = typer.Typer(
    help="Roll a model version out to devices: a canary, then waves, each gated on live telemetry.",
    no_args_is_help=True,
)

_JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
_ID = typer.Argument(..., help="The rollout id (see `edgefleet rollout ls`).", show_default=False)
_REASON = typer.Option(None, "--reason", help="Why (kept in the audit log).")
_STATE_STYLE = {
    "running": "bold cyan",
    "paused": "bold yellow",
    "completed": "bold green",
    "aborted": "bold red",
}
_DEVICE_STYLE = {
    "committed": "green",
    "reverted": "green",
    "failed": "red",
    "rolled_back": "red",
    "timed_out": "red",
    "revert_failed": "bold red",
    "pending": "dim",
    "skipped": "dim",
    "superseded": "dim",
}
_FAILED = ("failed", "rolled_back", "timed_out", "revert_failed")
_DONE = ("committed", "reverted")
_IDLE = ("pending", "skipped", "superseded")


def _spec_error(exc: Exception) -> CLIError:
    return CLIError(str(exc), exit_code=2)


@app.command("create")
def create_command(
    model_version: str = typer.Argument(
        ..., metavar="MODEL:VERSION", help="The model and the version to roll out.", show_default=False
    ),
    target: str = typer.Option(
        "all",
        "--target",
        "-t",
        help="Devices: profile=P,fleet=F,tag=KEY:VALUE (or tag=KEY),device=ID, or all.",
    ),
    canary: str = typer.Option("1", "--canary", help="The canary: a number of devices (1) or a share (10%)."),
    waves: str = typer.Option("10%,50%,100%", "--waves", help="Cumulative waves after the canary."),
    bake: str = typer.Option("60s", "--bake", help="How long each committed wave runs before it is judged."),
    gate: list[str] = typer.Option(
        [],
        "--gate",
        "-g",
        help="A gate threshold NAME=VALUE (max_failure_rate, max_error_rate_delta, max_p95_latency_ratio, "
        "max_output_drift_delta, min_reporting_devices, min_requests); repeat or comma-separate.",
        show_default=False,
    ),
    device_timeout: str = typer.Option(
        "10m", "--device-timeout", help="A device without progress for this long (while online) times out."
    ),
    on_failure: str = typer.Option("abort", "--on-failure", help="When a gate fails: pause or abort."),
    rollback: bool = typer.Option(
        False, "--rollback", help="Allow a version older than what the devices run (an explicit rollback)."
    ),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Create a rollout; the server starts its canary at once and advances wave by wave."""
    from fleet.rollouts.schemas import RolloutCreate, RolloutDetail
    from fleet.rollouts.spec import (
        SpecError,
        gate_config,
        parse_canary,
        parse_duration,
        parse_gate_overrides,
        parse_target,
        parse_waves,
    )

    with cli_errors():
        model, sep, version = model_version.rpartition(":")
        if not sep or not model or not version:
            raise CLIError(
                f"{model_version!r} is not MODEL:VERSION", hint="e.g. digits-cnn:2.0.0", exit_code=2
            )
        try:
            overrides = parse_gate_overrides(gate)
            body = RolloutCreate(
                model=model,
                version=version,
                target=str(parse_target(target)),
                canary=str(parse_canary(canary)),
                waves=[f"{w:g}%" for w in parse_waves(waves)],
                bake_s=parse_duration(bake, option="--bake"),
                device_timeout_s=parse_duration(device_timeout, option="--device-timeout"),
                gates=overrides,
                on_failure=gate_config(overrides, on_failure).on_failure.value,
                rollback=rollback,
            )
        except SpecError as exc:
            raise _spec_error(exc) from None
        with client(server, token) as api:
            detail = api.send("POST", "/api/v1/rollouts", RolloutDetail, json=body.model_dump(mode="json"))
    if json_output:
        print_json(detail.model_dump(mode="json"))
        return
    sizes = ", ".join(f"{w.label} {w.cumulative}" for w in detail.wave_list)
    console.print(
        f"[bold green]✓ rollout {detail.id}[/] created: {detail.model} {detail.version} to "
        f"{detail.devices} device(s) ({sizes}), on failure {detail.gates.get('on_failure')}",
        highlight=False,
    )
    console.print(f"follow it with: edgefleet rollout status {detail.id} --watch", highlight=False)


@app.command("ls")
def list_command(
    state: str | None = typer.Option(None, "--state", help="running, paused, completed or aborted."),
    model: str | None = typer.Option(None, "--model", "-m", help="Only this model's rollouts."),
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="At most this many, newest first."),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Rollouts, newest first."""
    from fleet.rollouts.schemas import RolloutInfo

    params: dict[str, Any] = {"limit": limit}
    if state is not None:
        params["state"] = state
    if model is not None:
        params["model"] = model
    with cli_errors(), client(server, token) as api:
        rollouts = api.get("/api/v1/rollouts", list[RolloutInfo], params=params)
    if json_output:
        print_json([r.model_dump(mode="json") for r in rollouts])
        return
    if not rollouts:
        console.print("no rollouts yet: create one with `edgefleet rollout create MODEL:VERSION`")
        return
    table = Table(title=f"{len(rollouts)} rollout(s)")
    for column in ("id", "model", "version", "state", "wave", "devices", "target", "created"):
        table.add_column(column, overflow="fold")
    for rollout in rollouts:
        table.add_row(
            rollout.id,
            rollout.model,
            rollout.version,
            _state(rollout.state),
            _wave(rollout),
            _progress(rollout.states),
            rollout.target,
            f"{rollout.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@app.command("status")
def status_command(
    rollout_id: str = _ID,
    watch: bool = typer.Option(
        False, "--watch", "-w", help="Follow it live until it finishes (exit 0 completed, 1 aborted)."
    ),
    interval: float = typer.Option(
        1.0, "--interval", min=0.2, help="Seconds between refreshes with --watch."
    ),
    devices: bool = typer.Option(False, "--devices", help="List every device, not only the ones in trouble."),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Waves, devices, and the state of each gate with the figures behind it."""
    from fleet.rollouts.schemas import RolloutDetail

    with cli_errors(), client(server, token) as api:

        def fetch() -> RolloutDetail:
            return api.get(f"/api/v1/rollouts/{rollout_id}", RolloutDetail)

        detail = fetch()
        if watch and not json_output:
            detail = _watch(fetch, detail, interval, all_devices=devices)
    if json_output:
        print_json(detail.model_dump(mode="json"))
        return
    if not watch:
        console.print(render_detail(detail, all_devices=devices))
    if watch:
        raise typer.Exit(code=1 if detail.state == "aborted" else 0)


def _watch(
    fetch: Callable[[], RolloutDetail], detail: RolloutDetail, interval: float, *, all_devices: bool
) -> RolloutDetail:
    from rich.live import Live

    with Live(render_detail(detail, all_devices=all_devices), console=console, refresh_per_second=4) as live:
        try:
            while not (detail.state in ("completed", "aborted") and detail.settled):
                time.sleep(interval)
                detail = fetch()
                live.update(render_detail(detail, all_devices=all_devices))
        except KeyboardInterrupt:
            pass
    return detail


def _action(action: str, done: str) -> Callable[..., None]:
    def command(
        rollout_id: str = _ID,
        reason: str | None = _REASON,
        json_output: bool = _JSON,
        server: str | None = SERVER_OPTION,
        token: str | None = TOKEN_OPTION,
    ) -> None:
        from fleet.rollouts.schemas import RolloutDetail

        with cli_errors(), client(server, token) as api:
            detail = _post_action(api, rollout_id, action, reason, RolloutDetail)
        if json_output:
            print_json(detail.model_dump(mode="json"))
            return
        console.print(f"[bold green]✓[/] rollout {detail.id} {done}: {_state(detail.state)}", highlight=False)

    return command


def _post_action(api: FleetClient, rollout_id: str, action: str, reason: str | None, model: Any) -> Any:
    return api.send("POST", f"/api/v1/rollouts/{rollout_id}/{action}", model, json={"reason": reason})


app.command("pause", help="Pause: devices keep what they run; no wave starts until resumed.")(
    _action("pause", "paused")
)
app.command("resume", help="Resume a paused rollout; the gates judge telemetry from now on.")(
    _action("resume", "resumed")
)
app.command("abort", help="Abort: every device the rollout updated goes back to its previous version.")(
    _action("abort", "aborted")
)
app.command("promote", help="Start the next wave now, without waiting for the current wave's gates.")(
    _action("promote", "promoted")
)


# --- rendering --------------------------------------------------------------------------------------


def _state(state: str) -> str:
    return f"[{_STATE_STYLE.get(state, '')}]{state}[/]"


def _wave(rollout: RolloutInfo) -> str:
    if rollout.wave < 0:
        return f"- of {rollout.waves}"
    label = "canary" if rollout.wave == 0 else f"wave {rollout.wave}"
    return f"{label} ({rollout.wave + 1} of {rollout.waves})"


def _progress(states: dict[str, int]) -> str:
    total = sum(states.values())
    done = sum(states.get(s, 0) for s in _DONE)
    failed = sum(states.get(s, 0) for s in _FAILED)
    idle = sum(states.get(s, 0) for s in _IDLE)
    busy = total - done - failed - idle
    parts = [f"{done}/{total} done"]
    if busy:
        parts.append(f"{busy} updating")
    if failed:
        parts.append(f"[red]{failed} failed[/]")
    return ", ".join(parts)


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.3g}{unit}"


def render_detail(detail: RolloutDetail, *, all_devices: bool = False) -> RenderableType:
    """The whole status: header, waves, gates, and the devices worth a look."""
    parts: list[RenderableType] = [_header(detail), _waves_table(detail)]
    if detail.decision is not None:
        parts += [_gates_table(detail.decision), _decision_line(detail.decision)]
    parts.append(_devices_table(detail, all_devices=all_devices))
    return Group(*parts)


def _header(detail: RolloutDetail) -> Text:
    text = Text.from_markup(
        f"[bold]{detail.id}[/]  {detail.model} {detail.version}  {_state(detail.state)}  "
        f"{_wave(detail)}  target {detail.target}",
    )
    gates = detail.gates
    text.append(
        f"\ncanary {detail.canary}, waves {', '.join(f'{p:g}%' for p in detail.wave_percents)}; "
        f"bake {detail.bake_s:g} s; device timeout {detail.device_timeout_s:g} s; "
        f"on failure {gates.get('on_failure')}{'; explicit rollback' if detail.allow_rollback else ''}",
        style="dim",
    )
    if detail.reason:
        text.append(f"\n{detail.reason}", style="yellow" if detail.state != "completed" else "green")
    return text


def _waves_table(detail: RolloutDetail) -> Table:
    table = Table(title="waves", title_justify="left")
    for column in ("wave", "devices", "done", "updating", "failed", "waiting", "status"):
        table.add_column(column, justify="left" if column in ("wave", "status") else "right")
    for wave in detail.wave_list:
        states = wave.states
        done = sum(states.get(s, 0) for s in _DONE)
        failed = sum(states.get(s, 0) for s in _FAILED)
        waiting = sum(states.get(s, 0) for s in _IDLE)
        busy = wave.size - done - failed - waiting
        status = {"current": "[bold cyan]current[/]", "done": "done", "pending": "[dim]pending[/]"}[
            wave.status
        ]
        table.add_row(
            wave.label,
            str(wave.size),
            str(done),
            str(busy),
            f"[red]{failed}[/]" if failed else "0",
            str(waiting),
            status,
        )
    return table


def _gates_table(decision: DecisionInfo) -> Table:
    table = Table(title=f"gates ({decision.at:%H:%M:%S} UTC)", title_justify="left")
    for column in ("gate", "state", "value", "limit", "detail"):
        table.add_column(column, overflow="fold")
    for gate in decision.gates:
        state = {True: "[green]✓ pass[/]", False: "[bold red]✗ fail[/]", None: "[yellow]… waiting[/]"}[
            gate.passed
        ]
        table.add_row(gate.name, state, _number(gate.value), f"{gate.threshold:g}", gate.detail)
    return table


def _decision_line(decision: DecisionInfo) -> Text:
    style = {"proceed": "green", "wait": "cyan", "pause": "yellow", "abort": "bold red"}[decision.verdict]
    figures = decision.figures
    canary = figures.get("canary") or {}
    line = Text(f"{decision.verdict}: {decision.reason}", style=style)
    line.append(
        f"\ncanary: {canary.get('committed', 0)}/{canary.get('devices', 0)} committed, "
        f"{canary.get('reporting', 0)} reporting, {canary.get('requests', 0)} requests, "
        f"p95 {_number(canary.get('p95_ms'), ' ms')}, drift {_number(canary.get('output_drift'))}",
        style="dim",
    )
    for name in ("control", "baseline"):
        cohort = figures.get(name)
        if cohort:
            line.append(
                f"\n{name}: {cohort.get('reporting', 0)}/{cohort.get('devices', 0)} reporting, "
                f"{cohort.get('requests', 0)} requests, p95 {_number(cohort.get('p95_ms'), ' ms')}, "
                f"drift {_number(cohort.get('output_drift'))}",
                style="dim",
            )
    return line


def _devices_table(detail: RolloutDetail, *, all_devices: bool) -> RenderableType:
    shown = [
        d
        for d in detail.device_list
        if all_devices or d.state in _FAILED or (d.state not in _DONE + _IDLE) or not d.online
    ]
    if not shown:
        return Text(
            f"{len(detail.device_list)} device(s); none needs a look (--devices lists all)", style="dim"
        )
    table = Table(title=f"devices ({len(shown)} of {len(detail.device_list)})", title_justify="left")
    for column in ("device", "wave", "state", "online", "running", "reason"):
        table.add_column(column, overflow="fold")
    for device in shown:
        style = _DEVICE_STYLE.get(device.state, "cyan")
        table.add_row(
            device.device_id,
            "canary" if device.wave == 0 else str(device.wave),
            f"[{style}]{device.state}[/]",
            "yes" if device.online else "[dim]no[/]",
            device.running or "-",
            device.reason or "",
        )
    return table
