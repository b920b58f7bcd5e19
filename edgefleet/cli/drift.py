"""`edgefleet drift`: drift per model version and cohort, against the reference or another cohort; alerts.

Registered by the root app as ``app.add_typer(drift.app, name="drift")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from edgefleet.cli._client import SERVER_OPTION, TOKEN_OPTION, client
from edgefleet.cli._console import CLIError, cli_errors, console, print_json

if TYPE_CHECKING:
    from fleet.api.schemas import AlertInfo, DriftFeature, DriftReportInfo

app = typer.Typer(
    help="Drift: devices' live traffic against the bundle's reference, or cohort against cohort.",
    no_args_is_help=True,
)

_JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
_LEVEL_STYLE = {"alert": "bold red", "warn": "yellow", "ok": "green", "insufficient": "dim"}


def _level(level: str) -> str:
    return f"[{_LEVEL_STYLE.get(level, '')}]{level}[/]"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@app.command("show")
def show_command(
    model: str | None = typer.Option(None, "--model", "-m", help="Only this model (default: all)."),
    version: str | None = typer.Option(None, "--version", "-v", help="Only this version."),
    cohort: str = typer.Option(
        "all", "--cohort", "-c", help="all, tag:KEY=VALUE, profile:PROFILE or device:ID."
    ),
    against: str = typer.Option(
        "reference", "--against", "-a", help="reference (the bundle's frozen bins), or cohort:<cohort>."
    ),
    since: str = typer.Option("24h", "--since", help="30m, 24h, 7d before now, or an ISO-8601 time."),
    until: str | None = typer.Option(None, "--until", help="As --since; default now.", show_default=False),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """PSI, Jensen-Shannon and Wasserstein per feature, with each feature's level."""
    from fleet.api.schemas import DriftReportInfo

    params: dict[str, Any] = {"cohort": cohort, "against": against, "since": since}
    for key, value in (("model", model), ("version", version), ("until", until)):
        if value is not None:
            params[key] = value
    with cli_errors(), client(server, token) as api:
        reports = api.get("/api/v1/drift", list[DriftReportInfo], params=params)
    if json_output:
        print_json([r.model_dump(mode="json") for r in reports])
        return
    if not reports:
        what = f"{model} {version or ''}".strip() if model else "any model"
        console.print(
            f"no drift windows of {what} from cohort {cohort} since {since}: devices send them once they "
            "serve a bundle with reference statistics (see `edgefleet devices ls`)",
            highlight=False,
        )
        return
    for report in reports:
        _print_report(report)


def _print_report(report: DriftReportInfo) -> None:
    title = (
        f"{report.model} {report.version} — cohort {report.cohort} against {report.against}: "
        f"{_level(report.level)}"
    )
    console.print(title, highlight=False)
    baseline = (
        f"reference of {report.baseline_samples} samples"
        if report.against == "reference"
        else f"{report.baseline_samples} samples from {report.baseline_devices} device(s)"
    )
    console.print(
        f"[dim]{report.samples} samples in {report.windows} window(s) from {report.devices} device(s), "
        f"{report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC; baseline: {baseline}; "
        f"bins {report.reference}[/]",
        highlight=False,
    )
    if report.note:
        console.print(f"[yellow]note:[/] {report.note}", highlight=False)
    if not report.features:
        return
    table = Table()
    for column in ("feature", "samples", "PSI", "JS", "Wasserstein", "mean (baseline)", "level"):
        table.add_column(column, justify="left" if column in ("feature", "level") else "right")
    for feature in report.features:
        table.add_row(
            feature.feature,
            str(feature.samples),
            _number(feature.psi),
            _number(feature.js),
            _number(feature.wasserstein),
            _means(feature),
            _level(feature.level),
        )
    console.print(table)
    thresholds = report.thresholds
    console.print(
        f"[dim]alert at PSI ≥ {thresholds.get('psi_alert')} or JS ≥ {thresholds.get('js_alert')}, "
        f"warn at PSI ≥ {thresholds.get('psi_warn')} or JS ≥ {thresholds.get('js_warn')}; "
        f"judged from {thresholds.get('min_samples')} samples[/]\n",
        highlight=False,
    )


def _means(feature: DriftFeature) -> str:
    if feature.mean is None:
        return "-"
    base = "-" if feature.baseline_mean is None else f"{feature.baseline_mean:.3g}"
    return f"{feature.mean:.3g} ({base})"


@app.command("alerts")
def alerts_command(
    show_all: bool = typer.Option(False, "--all", help="Resolved alerts too, not only open ones."),
    model: str | None = typer.Option(None, "--model", "-m", help="Only this model's alerts."),
    limit: int = typer.Option(100, "--limit", min=1, max=1000, help="At most this many, newest first."),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Drift alerts, newest first (open ones only unless --all)."""
    from fleet.api.schemas import AlertInfo

    params: dict[str, Any] = {"state": "all" if show_all else "open", "limit": limit}
    if model is not None:
        params["model"] = model
    with cli_errors(), client(server, token) as api:
        alerts = api.get("/api/v1/alerts", list[AlertInfo], params=params)
    if json_output:
        print_json([a.model_dump(mode="json") for a in alerts])
        return
    if not alerts:
        console.print("no open alerts" if not show_all else "no alerts yet")
        return
    _print_alerts(alerts)


def _print_alerts(alerts: list[AlertInfo]) -> None:
    table = Table(title=f"{len(alerts)} alert(s)")
    for column in ("id", "opened", "model", "cohort", "against", "feature", "metric", "value", "state"):
        table.add_column(column, overflow="fold")
    for alert in alerts:
        state = (
            "[bold red]open[/]"
            if alert.resolved_at is None
            else f"[dim]resolved {alert.resolved_at:%m-%d %H:%M}[/]"
        )
        table.add_row(
            str(alert.id),
            f"{alert.created_at:%Y-%m-%d %H:%M}",
            f"{alert.model} {alert.version}",
            alert.cohort or "-",
            alert.against or "-",
            alert.feature or "-",
            alert.metric or "-",
            f"{_number(alert.value)} ≥ {alert.threshold:g}"
            if alert.threshold is not None
            else _number(alert.value),
            state,
        )
    console.print(table)


@app.command("evaluate")
def evaluate_command(
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Evaluate drift now, as the server's monitor does periodically; print alerts opened or resolved."""
    from fleet.api.schemas import DriftEvaluation

    with cli_errors(), client(server, token) as api:
        evaluation = api.send("POST", "/api/v1/drift/evaluate", DriftEvaluation)
    if json_output:
        print_json(evaluation.model_dump(mode="json"))
        return
    console.print(
        f"evaluated {evaluation.reports} report(s): {len(evaluation.opened)} alert(s) opened, "
        f"{len(evaluation.resolved)} resolved",
        highlight=False,
    )
    if evaluation.opened:
        _print_alerts(evaluation.opened)


@app.command("resolve")
def resolve_command(
    alert_id: int = typer.Argument(
        ..., help="The alert's id (see `edgefleet drift alerts`).", show_default=False
    ),
    note: str | None = typer.Option(None, "--note", help="Why (kept in the audit log)."),
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Resolve an alert by hand; it opens again if the feature still drifts at the next evaluation."""
    from fleet.api.schemas import AlertInfo

    with cli_errors():
        if note is not None and len(note) > 512:
            raise CLIError("the note is longer than 512 characters", exit_code=2)
        with client(server, token) as api:
            alert = api.send("POST", f"/api/v1/alerts/{alert_id}/resolve", AlertInfo, json={"note": note})
    console.print(f"[bold green]✓[/] alert {alert.id} resolved", highlight=False)
