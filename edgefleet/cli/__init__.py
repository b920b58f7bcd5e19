"""The ``edgefleet`` console script: one Typer app with a sub-app per command group.

Every group module imports only light packages at module level; torch, tensorflow and the
runtimes are imported inside the commands that need them, so ``edgefleet --help`` stays fast.
"""

from __future__ import annotations

import typer

from edgefleet import __version__
from edgefleet.cli import (
    agent,
    bundle,
    convert,
    demo,
    devices,
    drift,
    keys,
    models_cmd,
    profiles,
    rollout,
    server,
    tokens,
)

app = typer.Typer(
    name="edgefleet",
    help="Convert models per hardware profile, serve them on devices, and roll them out to a fleet.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
app.add_typer(profiles.app, name="profiles")
app.add_typer(keys.app, name="keys")
app.add_typer(bundle.app, name="bundle")
app.add_typer(agent.app, name="agent")
app.add_typer(server.app, name="server")
app.add_typer(devices.app, name="devices")
app.add_typer(models_cmd.app, name="models")
app.add_typer(drift.app, name="drift")
app.add_typer(rollout.app, name="rollout")
app.add_typer(tokens.app, name="tokens")
app.add_typer(tokens.audit_app, name="audit")
app.command(name="convert")(convert.convert)
app.command(name="demo")(demo.demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgefleet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """edgefleet: from a trained model to a healthy fleet of edge devices."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
