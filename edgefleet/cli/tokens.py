"""`edgefleet tokens` (API tokens and roles, admin only) and `edgefleet audit` (the audit log)."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from edgefleet.cli._client import SERVER_OPTION, TOKEN_OPTION, client
from edgefleet.cli._console import cli_errors, console, print_json

app = typer.Typer(help="API tokens: create, list, revoke (admin), and who you are.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log: who did what, when.", no_args_is_help=True)

_JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")


@app.command("create")
def create_command(
    name: str = typer.Option(..., "--name", "-n", help="Who or what the token is for.", show_default=False),
    role: str = typer.Option(
        "viewer", "--role", "-r", help="viewer (read), operator (push, devices, rollouts) or admin (tokens)."
    ),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Create an API token; it is printed once, and the server keeps only its hash."""
    from pydantic import ValidationError

    from edgefleet.cli._console import CLIError
    from fleet.api.schemas import TokenCreate, TokenCreated

    with cli_errors():
        try:
            body = TokenCreate.model_validate({"name": name, "role": role}).model_dump()
        except ValidationError as exc:
            error = exc.errors()[0]
            raise CLIError(f"--{error['loc'][0]}: {error['msg']}", exit_code=2) from None
        with client(server, token) as api:
            created = api.send("POST", "/api/v1/tokens", TokenCreated, json=body)
    if json_output:
        print_json(created.model_dump(mode="json"))
        return
    console.print(f"[bold green]✓ token {created.name}[/] ({created.role})", highlight=False)
    console.print(f"  token  [bold]{created.token}[/]  [dim](shown once)[/]", highlight=False)


@app.command("ls")
def list_command(
    include_revoked: bool = typer.Option(False, "--all", help="Include revoked tokens."),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """List API tokens (never the tokens themselves)."""
    from fleet.api.schemas import TokenInfo

    with cli_errors(), client(server, token) as api:
        tokens = api.get("/api/v1/tokens", list[TokenInfo], params={"include_revoked": include_revoked})
    if json_output:
        print_json([t.model_dump(mode="json") for t in tokens])
        return
    table = Table(title=f"{len(tokens)} token(s)")
    for column in ("id", "name", "role", "prefix", "created", "by", "last used", "revoked"):
        table.add_column(column)
    for row in tokens:
        table.add_row(
            str(row.id),
            row.name,
            row.role,
            row.prefix + "…",
            f"{row.created_at:%Y-%m-%d %H:%M}",
            row.created_by or "-",
            f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "-",
        )
    console.print(table)


@app.command("revoke")
def revoke_command(
    name_or_id: str = typer.Argument(..., help="The token's name or id.", show_default=False),
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Revoke an API token at once."""
    from fleet.api.schemas import TokenInfo

    with cli_errors(), client(server, token) as api:
        row = api.send("DELETE", f"/api/v1/tokens/{name_or_id}", TokenInfo)
    console.print(f"[bold green]✓[/] token {row.name} revoked", highlight=False)


@app.command("whoami")
def whoami_command(
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """The name and role of the token in use."""
    from fleet.api.schemas import WhoAmI

    with cli_errors(), client(server, token) as api:
        me = api.get("/api/v1/whoami", WhoAmI)
        where = api.settings.server
    if json_output:
        print_json({**me.model_dump(mode="json"), "server": where})
        return
    console.print(f"{me.name} ({me.role}) on {where}", highlight=False)


@audit_app.command("ls")
def audit_list_command(
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=1000, help="How many entries, newest first."),
    action: str | None = typer.Option(None, "--action", help="Only actions starting with this, e.g. model."),
    actor: str | None = typer.Option(None, "--actor", help="Only this actor, e.g. token:admin."),
    target: str | None = typer.Option(
        None, "--target", help="Only entries about this, e.g. a rollout id or a device id."
    ),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """The audit log, newest first."""
    from fleet.api.schemas import AuditRecord

    params: dict[str, str | int] = {"limit": limit}
    if action:
        params["action"] = action
    if actor:
        params["actor"] = actor
    if target:
        params["target"] = target
    with cli_errors(), client(server, token) as api:
        entries = api.get("/api/v1/audit", list[AuditRecord], params=params)
    if json_output:
        print_json([e.model_dump(mode="json") for e in entries])
        return
    table = Table(
        title=f"{len(entries)} audit entr{'y' if len(entries) == 1 else 'ies'}",
        caption="long details are shortened; --json has every one",
    )
    for column in ("when (UTC)", "actor", "action", "target", "outcome", "details"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        outcome = entry.outcome if entry.outcome == "ok" else f"[red]{entry.outcome}[/]"
        table.add_row(
            f"{entry.at:%Y-%m-%d %H:%M:%S}",
            entry.actor,
            entry.action,
            entry.target or "-",
            outcome,
            Text(details_text(entry.details)),
        )
    console.print(table)


_SHORT = 80  # characters of a nested value shown inline


def details_text(details: dict[str, Any]) -> str:
    """``reason=...; key=value; ...``: the reason first; a nested value in a few words (a gate
    decision as its verdict and reason), or its JSON cut at ``_SHORT`` characters."""
    keys = sorted(details, key=lambda key: (key != "reason", key))
    return "; ".join(f"{key}={_plain(details[key])}" for key in keys)


def _plain(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("verdict"), str):
        return f"{value['verdict']}: {value.get('reason', '')}"  # a gate decision (figures in --json)
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= _SHORT else text[: _SHORT - 1] + "…"
