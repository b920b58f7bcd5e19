"""`edgefleet devices`: list, show, add, tag and remove devices; MQTT credentials and enrollment tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from edgefleet.cli._client import SERVER_OPTION, TOKEN_OPTION, client
from edgefleet.cli._console import CLIError, cli_errors, console, print_json

if TYPE_CHECKING:
    from fleet.api.schemas import DeviceInfo

app = typer.Typer(help="The device registry: list, show, add and tag devices.", no_args_is_help=True)

_JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
_TAGS = typer.Option([], "--tag", "-t", help="KEY=VALUE; repeat for several.", show_default=False)


def _tags(values: list[str]) -> dict[str, str]:
    from fleet.devices.naming import parse_tag

    tags: dict[str, str] = {}
    for value in values:
        try:
            key, tag_value = parse_tag(value)
        except ValueError as exc:
            raise CLIError(str(exc), hint="write tags as --tag site=lab", exit_code=2) from None
        tags[key] = tag_value
    return tags


@app.command("ls")
def list_command(
    tag: list[str] = _TAGS,
    profile: str | None = typer.Option(None, "--profile", "-p", help="Only this hardware profile."),
    online: bool | None = typer.Option(None, "--online/--offline", help="Only online (or offline) devices."),
    fleet: str | None = typer.Option(None, "--fleet", help="Only this fleet."),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """List devices, filtered by tags, profile, fleet and online state."""
    from fleet.api.schemas import DeviceInfo

    with cli_errors():
        params: dict[str, Any] = {"tag": [f"{k}={v}" for k, v in _tags(tag).items()]}
        if profile is not None:
            params["profile"] = profile
        if online is not None:
            params["online"] = str(online).lower()
        if fleet is not None:
            params["fleet"] = fleet
        with client(server, token) as api:
            devices = api.get("/api/v1/devices", list[DeviceInfo], params=params)
    if json_output:
        print_json([d.model_dump(mode="json") for d in devices])
        return
    if not devices:
        console.print(
            "no devices match"
            if params != {"tag": []}
            else "no devices yet: add one with `edgefleet devices add`"
        )
        return
    table = Table(title=f"{len(devices)} device(s)")
    for column in ("id", "fleet", "profile", "state", "last seen", "agent", "models", "tags"):
        table.add_column(column, overflow="fold")
    for device in devices:
        table.add_row(
            device.id,
            device.fleet,
            device.profile or "-",
            "[green]online[/]" if device.online else "[dim]offline[/]",
            _ago(device.last_seen),
            device.agent_version or "-",
            ", ".join(f"{name} {version}" for name, version in sorted(device.models.items())) or "-",
            " ".join(f"{k}={v}" for k, v in sorted(device.tags.items())) or "-",
        )
    console.print(table)


@app.command("show")
def show_command(
    device_id: str = typer.Argument(..., help="The device id.", show_default=False),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Everything the registry knows about one device."""
    from fleet.api.schemas import DeviceInfo

    with cli_errors(), client(server, token) as api:
        device = api.get(f"/api/v1/devices/{device_id}", DeviceInfo)
    if json_output:
        print_json(device.model_dump(mode="json"))
        return
    _print_device(device)


@app.command("add")
def add_command(
    device_id: str = typer.Argument(
        ..., help="The device id (letters, digits, '.', '_', '-').", show_default=False
    ),
    profile: str | None = typer.Option(
        None, "--profile", "-p", help="Its hardware profile, e.g. raspberry-pi-5."
    ),
    tag: list[str] = _TAGS,
    fleet: str = typer.Option("default", "--fleet", help="The fleet (an MQTT topic level)."),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Provision a device ahead of its first connection, and print its MQTT credentials (once)."""
    from fleet.api.schemas import DeviceCreate, DeviceCreated

    with cli_errors():
        body = _body(DeviceCreate, id=device_id, fleet=fleet, profile=profile, tags=_tags(tag))
        with client(server, token) as api:
            created = api.send("POST", "/api/v1/devices", DeviceCreated, json=body)
    if json_output:
        print_json(created.model_dump(mode="json"))
        return
    console.print(
        f"[bold green]✓ device {created.device.id}[/] added to fleet {created.device.fleet}", highlight=False
    )
    _print_credentials(created.mqtt.username, created.mqtt.password, created.mqtt.topic_prefix)


@app.command("tag")
def tag_command(
    device_id: str = typer.Argument(..., help="The device id.", show_default=False),
    tags: list[str] = typer.Argument(None, help="KEY=VALUE pairs to set.", show_default=False),
    remove: list[str] = typer.Option(
        [], "--remove", "-r", help="A tag key to remove; repeat.", show_default=False
    ),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Set (add or overwrite) and remove a device's tags."""
    from fleet.api.schemas import DeviceInfo, TagUpdate

    with cli_errors():
        if not tags and not remove:
            raise CLIError("nothing to do", hint="give KEY=VALUE pairs to set, or --remove KEY", exit_code=2)
        body = _body(TagUpdate, set=_tags(tags or []), remove=remove)
        with client(server, token) as api:
            device = api.send("PATCH", f"/api/v1/devices/{device_id}/tags", DeviceInfo, json=body)
    if json_output:
        print_json(device.model_dump(mode="json"))
        return
    shown = " ".join(f"{k}={v}" for k, v in sorted(device.tags.items())) or "(none)"
    console.print(f"[bold green]✓[/] {device.id} tags: {shown}", highlight=False)


@app.command("rm")
def remove_command(
    device_id: str = typer.Argument(..., help="The device id.", show_default=False),
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Remove a device from the registry (its telemetry goes with it)."""
    with cli_errors(), client(server, token) as api:
        api.request("DELETE", f"/api/v1/devices/{device_id}")
    console.print(f"[bold green]✓[/] device {device_id} removed", highlight=False)


@app.command("rotate")
def rotate_command(
    device_id: str = typer.Argument(..., help="The device id.", show_default=False),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Give a device a new MQTT password (then re-export the broker files with `devices credentials`)."""
    from fleet.api.schemas import MqttCredentials

    with cli_errors(), client(server, token) as api:
        credentials = api.send("POST", f"/api/v1/devices/{device_id}/credentials", MqttCredentials)
    if json_output:
        print_json(credentials.model_dump(mode="json"))
        return
    _print_credentials(credentials.username, credentials.password, credentials.topic_prefix)


@app.command("credentials")
def credentials_command(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Directory for passwd, acl (and server.password).", show_default=False
    ),
    rotate_server_password: bool = typer.Option(
        False, "--rotate-server-password", help="Give the server's own MQTT account a new password."
    ),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Write a Mosquitto password file and ACL that confine each device to its own topics (admin).

    Point Mosquitto at them with `password_file DIR/passwd` and `acl_file DIR/acl`, and reload it.
    """
    from fleet.api.schemas import CredentialsExport, CredentialsExportRequest

    with cli_errors():
        body = _body(CredentialsExportRequest, rotate_server_password=rotate_server_password)
        with client(server, token) as api:
            export = api.send("POST", "/api/v1/mqtt/credentials", CredentialsExport, json=body)
        written = _write_credentials(out, export)
    if json_output:
        print_json(
            {
                "files": {name: str(path) for name, path in written.items()},
                "devices": export.devices,
                "server_username": export.server_username,
                "devices_without_credentials": export.devices_without_credentials,
            }
        )
        return
    console.print(
        f"[bold green]✓[/] credentials for {export.devices} device(s) and {export.server_username}",
        highlight=False,
    )
    for name, path in written.items():
        console.print(f"  {name:<16}{path}", highlight=False)
    if "server.password" in written:
        console.print(
            f"  [yellow]the server account's password is new:[/] restart the server with "
            f"--mqtt mqtt://{export.server_username}:$(cat {written['server.password']})@HOST:PORT",
            highlight=False,
        )
    if export.devices_without_credentials:
        console.print(
            f"  [yellow]left out (no credentials):[/] {', '.join(export.devices_without_credentials)}"
        )


@app.command("enroll-token")
def enroll_token_command(
    fleet: str = typer.Option("default", "--fleet", help="The fleet the device joins."),
    profile: str | None = typer.Option(None, "--profile", "-p", help="Require this hardware profile."),
    tag: list[str] = _TAGS,
    ttl_hours: float = typer.Option(
        24.0, "--ttl-hours", min=0.001, max=720, help="How long the token is valid."
    ),
    note: str | None = typer.Option(None, "--note", help="A reminder of what it is for."),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Create a one-time enrollment token: a device presents it in its first birth message."""
    from fleet.api.schemas import EnrollmentTokenCreate, EnrollmentTokenCreated

    with cli_errors():
        body = _body(
            EnrollmentTokenCreate,
            fleet=fleet,
            profile=profile,
            tags=_tags(tag),
            ttl_seconds=max(1, round(ttl_hours * 3600)),
            note=note,
        )
        with client(server, token) as api:
            created = api.send("POST", "/api/v1/enrollment-tokens", EnrollmentTokenCreated, json=body)
    if json_output:
        print_json(created.model_dump(mode="json"))
        return
    console.print(
        f"[bold green]✓ enrollment token[/] for fleet {created.fleet}, "
        f"valid until {created.expires_at:%Y-%m-%d %H:%M} UTC"
    )
    console.print(f"  token  [bold]{created.token}[/]  [dim](shown once; it works once)[/]", highlight=False)


# --- helpers -----------------------------------------------------------------------------------


def _body(model: Any, **fields: Any) -> dict[str, Any]:
    """Validate a request with the server's own schema before sending it: errors show here, early."""
    from pydantic import ValidationError

    try:
        return dict(model.model_validate(fields).model_dump(mode="json"))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise CLIError(f"{where}: {error['msg']}", exit_code=2) from None


def _write_credentials(out: Path, export: Any) -> dict[str, Path]:
    from fleet.secret_files import write_secret_file

    files = {"passwd": export.password_file, "acl": export.acl_file}
    if export.server_password:
        files["server.password"] = export.server_password + "\n"
    written: dict[str, Path] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            write_secret_file(out / name, text)
            written[name] = out / name
    except OSError as exc:
        raise CLIError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    return written


def _print_credentials(username: str, password: str, topic_prefix: str) -> None:
    console.print("  MQTT credentials [dim](shown once: the server keeps only a hash)[/]")
    console.print(f"    username  {username}", highlight=False)
    console.print(f"    password  [bold]{password}[/]", highlight=False)
    console.print(
        f"    topics    {topic_prefix}/{{status,metrics,drift,events,ota}} (publish), {topic_prefix}/desired"
    )
    console.print("  [dim]re-export the broker files with `edgefleet devices credentials --out DIR`[/]")


def _print_device(device: DeviceInfo) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = [
        ("id", device.id),
        ("fleet", device.fleet),
        ("profile", device.profile or "-"),
        ("state", "online" if device.online else "offline"),
        ("last seen", _ago(device.last_seen)),
        ("agent", device.agent_version or "-"),
        ("models", ", ".join(f"{k} {v}" for k, v in sorted(device.models.items())) or "-"),
        ("tags", " ".join(f"{k}={v}" for k, v in sorted(device.tags.items())) or "-"),
        ("enrollment", device.enrollment),
        ("credentials", "yes" if device.has_credentials else "no"),
        ("added", f"{device.created_at:%Y-%m-%d %H:%M:%S} UTC"),
    ]
    if device.latest_metrics:
        rows += [(f"metric {k}", str(v)) for k, v in sorted(device.latest_metrics.items())]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"
