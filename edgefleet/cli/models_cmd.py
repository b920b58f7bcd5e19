"""`edgefleet models`: push signed bundles to the fleet server's registry, list and show models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from edgefleet.cli._client import SERVER_OPTION, TOKEN_OPTION, client
from edgefleet.cli._console import cli_errors, console, print_json

if TYPE_CHECKING:
    from fleet.api.schemas import BundleInfo

app = typer.Typer(help="The model registry: push bundles, list and show models.", no_args_is_help=True)

_JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")


@app.command("push")
def push_command(
    bundle: Path = typer.Argument(..., help="The signed bundle (.efb).", show_default=False),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Upload a bundle; the server verifies it against its trusted keys and stores it.

    A refused bundle exits with the verifier's own code (as `edgefleet bundle verify` does).
    """
    from fleet.api.schemas import PushResult

    with cli_errors(), client(server, token) as api:
        result = api.upload("/api/v1/models", bundle, PushResult)
    if json_output:
        print_json(result.model_dump(mode="json"))
        return
    info = result.bundle
    verb = "pushed" if result.created else "already in the registry (identical)"
    console.print(
        f"[bold green]✓ {info.name} {info.version}[/] for {info.profile} {verb}: "
        f"{info.format}/{info.precision}, {info.size} bytes, sha256 {info.sha256[:12]}…, "
        f"signed by {info.key_id}",
        highlight=False,
    )


@app.command("ls")
def list_command(
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Model names with their versions, profiles, formats and precisions."""
    from fleet.api.schemas import ModelSummary

    with cli_errors(), client(server, token) as api:
        models = api.get("/api/v1/models", list[ModelSummary])
    if json_output:
        print_json([m.model_dump(mode="json") for m in models])
        return
    if not models:
        console.print("no models yet: push one with `edgefleet models push FILE.efb`")
        return
    table = Table(title=f"{len(models)} model(s)")
    for column in ("name", "latest", "versions", "profiles", "formats", "precisions", "bundles"):
        table.add_column(column, overflow="fold")
    for model in models:
        table.add_row(
            model.name,
            model.latest_version,
            ", ".join(model.versions),
            ", ".join(model.profiles),
            ", ".join(model.formats),
            ", ".join(model.precisions),
            str(model.bundles),
        )
    console.print(table)


@app.command("show")
def show_command(
    name: str = typer.Argument(..., help="The model name.", show_default=False),
    version: str | None = typer.Argument(None, help="One version (default: all).", show_default=False),
    json_output: bool = _JSON,
    server: str | None = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """A model's versions, each with a bundle per profile and its validation and benchmark figures."""
    from fleet.api.schemas import ModelDetail, ModelVersionDetail

    with cli_errors(), client(server, token) as api:
        if version is None:
            detail: Any = api.get(f"/api/v1/models/{name}", ModelDetail)
            bundles = [b for v in detail.versions for b in v.bundles]
        else:
            detail = api.get(f"/api/v1/models/{name}/{version}", ModelVersionDetail)
            bundles = list(detail.bundles)
    if json_output:
        print_json(detail.model_dump(mode="json"))
        return
    title = f"{name} {version}" if version else f"{name} (latest {detail.latest_version})"
    _print_bundles(title, bundles)


def _print_bundles(title: str, bundles: list[BundleInfo]) -> None:
    table = Table(title=title)
    for column in ("version", "profile", "format", "precision", "size", "validation", "benchmark", "sha256"):
        table.add_column(column, overflow="fold")
    for bundle in bundles:
        table.add_row(
            bundle.version,
            bundle.profile,
            bundle.format,
            bundle.precision,
            _size(bundle.size),
            _figures(bundle.validation),
            _figures(bundle.benchmark),
            bundle.sha256[:12] + "…",
        )
    console.print(table)


def _figures(values: dict[str, Any]) -> str:
    shown = []
    for key, value in sorted(values.items()):
        if isinstance(value, float):
            shown.append(f"{key}={value:.4g}")
        elif isinstance(value, int | str | bool):
            shown.append(f"{key}={value}")
    return " ".join(shown) or "-"


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover
