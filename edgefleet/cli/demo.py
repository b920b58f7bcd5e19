"""`edgefleet demo` (and `make demo`): the whole toolkit end to end on one machine, narrated.

It builds the reference models, converts them for three hardware profiles, starts a fleet server
(SQLite, embedded MQTT broker) and six agent processes as devices at two sites, rolls out v1, a
good v2 (a canary, then gated waves) and a broken v3 (stopped by its canary and rolled back),
shifts one site's inputs until the server raises a drift alert, and ends with a summary. Every
process it starts is stopped before it exits, Ctrl-C included. The work is in ``edgefleet.demo``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from edgefleet.cli._console import cli_errors, console, fail
from edgefleet.demo.layout import KEY_NAME
from edgefleet.demo.settings import PROFILES

DEMO_KEY_NAME = KEY_NAME
DEMO_PROFILES = PROFILES
INTERRUPTED_EXIT = 130
RESTART_HTTP = "127.0.0.1:8080"
RESTART_MQTT = "127.0.0.1:1884"


def demo(
    out: Path = typer.Option(
        Path("edgefleet-demo"),
        "--out",
        "-o",
        help="Folder for everything the demo writes (a re-run replaces it, reusing identical conversions).",
    ),
    fast: bool = typer.Option(
        False, "--fast", help="A shorter run: fewer waves, shorter bakes and watch windows, fewer requests."
    ),
) -> None:
    """Run the end-to-end demo: convert, serve, roll out (and back), watch drift, on one machine."""
    from edgefleet.demo import run_demo

    with cli_errors():
        try:
            result = run_demo(out, fast=fast, console=console)
        except KeyboardInterrupt:
            console.print("\n[yellow]interrupted[/]: every process the demo started has been stopped")
            raise typer.Exit(INTERRUPTED_EXIT) from None
    summary = result.summary
    console.print(
        f"\n[dim]stopped {len(result.stopped)} processes"
        + (f" ({', '.join(result.killed)} had to be killed)" if result.killed else ", all cleanly")
        + "[/]",
        highlight=False,
    )
    if result.problems:
        fail(
            "the demo did not show everything it should have: " + "; ".join(result.problems),
            hint=f"see {out / 'summary.json'} and the logs in {out / 'logs'}",
        )
    console.print(
        f"\n[bold green]Done in {summary.elapsed_s:.0f} s.[/] Everything is in [cyan]{out}[/]. Poke at it:",
        highlight=False,
    )
    console.print(next_steps(out), highlight=False, soft_wrap=True, markup=False)


def next_steps(out: Path) -> str:
    """The commands to restart the demo's server on its data and look around. Pure."""
    q = shlex.quote
    server = f"http://{RESTART_HTTP}"
    token = f"$(cat {q(str(out / 'server' / 'admin.token'))})"
    auth = f"--server {server} --token {token}"
    pi_v3 = out / "release-3.0.0" / "digits-cnn-3.0.0-raspberry-pi-5.efb"
    lines = [
        "  # the demo's server, again, on its database (stop it with Ctrl-C):",
        f"  edgefleet server run --data-dir {q(str(out / 'server'))} --http {RESTART_HTTP} "
        f"--mqtt-listen {RESTART_MQTT} --trusted-key {q(str(out / 'keys' / f'{KEY_NAME}.pub.pem'))}",
        "  # then, in another terminal:",
        f"  edgefleet devices ls {auth}",
        f"  edgefleet models ls {auth}",
        f"  edgefleet rollout ls {auth}",
        f"  edgefleet drift alerts --all {auth}",
        f"  edgefleet audit ls {auth}",
        "  # and without a server:",
        f"  edgefleet bundle inspect {q(str(pi_v3))}",
        f"  cat {q(str(out / 'summary.json'))} {q(str(out / 'release-2.0.0' / 'report.md'))}",
    ]
    return "\n".join(lines)
