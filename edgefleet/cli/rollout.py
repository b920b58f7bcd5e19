"""`edgefleet rollout`: staged OTA rollouts with a canary, waves and gates on live telemetry.

Registered by the root app as ``app.add_typer(rollout.app, name="rollout")``. Options are checked
here with the server's own parsers (``fleet.rollouts.spec``) before anything is sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from edgefleet.cli._client import SERVER_OPTION, TOKEN_OPTION, FleetClient, client
from edgefleet.cli._console import CLIError, cli_errors, console, print_json

if TYPE_CHECKING:
    from fleet.rollouts.schemas import DecisionInfo, GateInfo, RolloutDetail, RolloutInfo, WaveEnd

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
_FINISHED = ("completed", "aborted")


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
        promoted = _promoted_by(rollout)
        table.add_row(
            rollout.id,
            rollout.model,
            rollout.version,
            _state(rollout.state) + (f", [yellow]{escape(promoted)}[/]" if promoted else ""),
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
        False,
        "--watch",
        "-w",
        help="Follow it until it finishes and every device settled (exit 0 completed, 1 aborted); "
        "live on a terminal, one timestamped line per change otherwise.",
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
        return
    raise typer.Exit(code=1 if detail.state == "aborted" else 0)


def _over(detail: RolloutDetail) -> bool:
    """Finished, and every device settled: nothing more will change."""
    return detail.state in _FINISHED and detail.settled


def _watch(
    fetch: Callable[[], RolloutDetail], detail: RolloutDetail, interval: float, *, all_devices: bool
) -> RolloutDetail:
    """Follow the rollout until it is over, then say how it ended. On a terminal the status is
    redrawn live; otherwise (a pipe, a log) one timestamped line per change, then the final status."""
    if _over(detail):
        console.print(render_detail(detail, all_devices=all_devices))
        console.print(f"rollout {detail.state}; nothing to watch", highlight=False)
        return detail
    follow = _watch_live if console.is_terminal else _watch_lines
    detail, interrupted = follow(fetch, detail, interval, all_devices)
    if interrupted:
        console.print(f"stopped watching; the rollout is {detail.state}", highlight=False)
    else:
        console.print(f"rollout {detail.state}; every device settled", highlight=False)
    return detail


def _watch_live(
    fetch: Callable[[], RolloutDetail], detail: RolloutDetail, interval: float, all_devices: bool
) -> tuple[RolloutDetail, bool]:
    from rich.live import Live

    with Live(render_detail(detail, all_devices=all_devices), console=console, refresh_per_second=4) as live:
        try:
            while not _over(detail):
                time.sleep(interval)
                detail = fetch()
                live.update(render_detail(detail, all_devices=all_devices))
        except KeyboardInterrupt:
            return detail, True
    return detail, False


def _watch_lines(
    fetch: Callable[[], RolloutDetail], detail: RolloutDetail, interval: float, all_devices: bool
) -> tuple[RolloutDetail, bool]:
    """No redrawing: a compact line whenever the state, the wave, the device counts or the gates'
    verdict change, and the whole status at the end."""
    shown: tuple[Any, ...] | None = None
    interrupted = False
    try:
        while True:
            key = _watch_key(detail)
            if key != shown:
                console.print(Text(watch_line(detail)), soft_wrap=True)
                shown = key
            if _over(detail):
                break
            time.sleep(interval)
            detail = fetch()
    except KeyboardInterrupt:
        interrupted = True
    console.print(render_detail(detail, all_devices=all_devices))
    return detail, interrupted


def _watch_key(detail: RolloutDetail) -> tuple[Any, ...]:
    verdict = detail.decision.verdict if detail.decision is not None else None
    return (detail.state, detail.settled, detail.wave, tuple(sorted(detail.states.items())), verdict)


def watch_line(detail: RolloutDetail, *, now: datetime | None = None) -> str:
    """``2026-01-01T12:00:03Z r-3f9c0a12de running canary (1 of 3); 0/8 done, 1 updating; gates:
    wait (not enough data yet for ...)``: one line, no markup."""
    at = (now or datetime.now(UTC)).astimezone(UTC)
    state = detail.state + (", settled" if detail.state in _FINISHED and detail.settled else "")
    promoted = _promoted_by(detail)
    if promoted:
        state += f", {promoted}"
    progress = Text.from_markup(_progress(detail.states)).plain
    decision = detail.decision
    gates = f"{decision.verdict} ({decision.reason})" if decision is not None else "not judged yet"
    return f"{at:%Y-%m-%dT%H:%M:%SZ} {detail.id} {state} {_wave(detail)}; {progress}; gates: {gates}"


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


def _promoted_by(rollout: RolloutInfo) -> str:
    """``promoted by admin`` when an operator promoted any wave past its gates, else empty."""
    names = list(dict.fromkeys(p.by for p in rollout.promotions))
    return f"promoted by {', '.join(names)}" if names else ""


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
        ended = _ended(detail, detail.decision.wave)
        parts += [_gates_table(detail.decision, ended), _decision_line(detail.decision, ended)]
    parts.append(_devices_table(detail, all_devices=all_devices))
    return Group(*parts)


def _ended(detail: RolloutDetail, wave: int) -> WaveEnd | None:
    """How wave ``wave`` ended, when it did (the decision shown is then history, not live)."""
    found = [w.ended for w in detail.wave_list if w.index == wave]
    return found[0] if found else None


def _the(label: str) -> str:
    return f"the {label}" if label == "canary" else label


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


def _how(end: WaveEnd | None) -> str:
    if end is None:
        return ""
    if end.how == "promoted":
        return f"[yellow]promoted by {escape(end.by)}[/]" + (f": {escape(end.reason)}" if end.reason else "")
    if end.how == "passed":
        return "[green]passed its gates[/]"
    return f"[red]aborted[/]{f' by {escape(end.by)}' if end.by != 'rollout-controller' else ''}"


def _waves_table(detail: RolloutDetail) -> Table:
    table = Table(title="waves", title_justify="left")
    for column in ("wave", "devices", "done", "updating", "failed", "waiting", "status", "ended"):
        table.add_column(
            column,
            justify="left" if column in ("wave", "status", "ended") else "right",
            overflow="fold",
        )
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
            _how(wave.ended),
        )
    return table


def _gates_table(decision: DecisionInfo, ended: WaveEnd | None) -> Table:
    """The gates as last judged; when that wave has ended, labelled as history: an operator's
    promote overrode them (waiting gates stay unjudged), or the wave passed or aborted on them."""
    at = f"{decision.at:%H:%M:%S} UTC"
    waiting = "[yellow]… waiting[/]"
    if ended is None:
        title = f"gates ({at})"
    else:
        label = _the(_wave_label(decision.wave))
        if ended.how == "promoted":
            title = f"gates of {label} when {escape(ended.by)} promoted it ({at}; not judged since)"
            waiting = "[dim]… was waiting[/]"
        elif ended.how == "passed":
            title = f"gates of {label} when it passed ({at})"
        else:
            title = f"gates of {label} when the rollout aborted ({at})"
    table = Table(title=title, title_justify="left")
    for column in ("gate", "state", "value", "limit", "detail"):
        table.add_column(column, overflow="fold")
    for gate in decision.gates:
        state = {True: "[green]✓ pass[/]", False: "[bold red]✗ fail[/]", None: waiting}[gate.passed]
        table.add_row(gate.name, state, _number(gate.value), f"{gate.threshold:g}", gate.detail)
    return table


def _wave_label(index: int) -> str:
    return "canary" if index == 0 else f"wave {index}"


def _decision_line(decision: DecisionInfo, ended: WaveEnd | None = None) -> Text:
    style = {"proceed": "green", "wait": "cyan", "pause": "yellow", "abort": "bold red"}[decision.verdict]
    figures = decision.figures
    canary = figures.get("canary") or {}
    if ended is not None and ended.how == "promoted":
        why = f" ({ended.reason})" if ended.reason else ""
        line = Text(
            f"promoted by {ended.by} at {ended.at:%H:%M:%S} UTC{why}; the gates then said "
            f"{decision.verdict}: {decision.reason}",
            style="yellow",
        )
    else:
        line = Text(f"{decision.verdict}: {decision.reason}", style=style)
    line.append(
        f"\ncanary: {canary.get('committed', 0)}/{canary.get('devices', 0)} committed, "
        f"{canary.get('reporting', 0)} reporting, {canary.get('requests', 0)} requests, "
        f"p95 {_number(canary.get('p95_ms'), ' ms')}, drift {_number(canary.get('output_drift'))}",
        style="dim",
    )
    for text in (_control_line(decision), _baseline_line(decision)):
        if text:
            line.append(f"\n{text}", style="dim")
    return line


def _cohort_figures(cohort: dict[str, Any]) -> str:
    return (
        f"{cohort.get('reporting', 0)}/{cohort.get('devices', 0)} reporting, "
        f"{cohort.get('requests', 0)} requests, p95 {_number(cohort.get('p95_ms'), ' ms')}, "
        f"drift {_number(cohort.get('output_drift'))}"
    )


def _used_by(gates: Sequence[GateInfo], cohort: str) -> str:
    """``the error_rate_delta and p95_latency_ratio gates compare against it``, from what each
    gate says it compared with (``GateInfo.against``); empty when none did."""
    names = [g.name for g in gates if g.against and cohort in g.against.split(" and ")]
    if not names:
        return ""
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return (
        f"the {listed} gate{'s' if len(names) > 1 else ''} compare{'' if len(names) > 1 else 's'} against it"
    )


def _control_line(decision: DecisionInfo) -> str:
    """The control: devices still on the old version, or none at all (say so: a lone canary has
    no control, whatever the baseline says)."""
    figures = decision.figures
    control = figures.get("control")
    count = figures.get("control_devices")
    if control:
        used = _used_by(decision.gates, "control")
        return f"control: {_cohort_figures(control)}" + (f"\n  {used}" if used else "")
    if count == 0:
        return "control: none (no device outside the canary runs the old version)"
    if count:
        return f"control: {count} device(s) on the old version, compared once the wave has committed"
    return ""


def _baseline_line(decision: DecisionInfo) -> str:
    """The baseline is the wave's own devices on their old version, before the wave: say whose
    telemetry it is, and whether the gates had anything in it to compare against."""
    figures = decision.figures
    baseline = figures.get("baseline")
    if not baseline:
        return ""
    window = figures.get("baseline_window") or {}
    whose = _the(_wave_label(int(window.get("wave", decision.wave))))
    versions = " and ".join(window.get("versions") or []) or "old-version"
    span = ""
    if window.get("since") and window.get("until"):
        seconds = (
            datetime.fromisoformat(window["until"]) - datetime.fromisoformat(window["since"])
        ).total_seconds()
        span = f" in the {seconds / 60:g} min before its wave started" if seconds >= 60 else ""
    own = f"{whose}'s own" if whose == "the canary" else f"{whose} devices' own"
    text = f"baseline: {own} {versions} telemetry{span}: {_cohort_figures(baseline)}"
    used = _used_by(decision.gates, "baseline")
    empty = (
        not baseline.get("requests")
        and baseline.get("p95_ms") is None
        and baseline.get("output_drift") is None
    )
    if used:
        return f"{text}\n  {used}"
    if empty:
        return f"{text}\n  nothing to compare against: no requests, latency or drift on the old version"
    return f"{text}\n  no gate has compared against it yet"


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
