"""The demo, step by step: from a trained model to a fleet that rolls out, rolls back and sees drift.

``run_demo`` runs the ten steps in order and, whatever happens (an error, Ctrl-C, SIGTERM), stops
the traffic, then every agent, then the server, before it returns or raises. Each step is a
function of the shared ``DemoRun`` (``state``), in ``steps_setup`` (1-4), ``steps_rollouts``
(5-8) and ``steps_drift`` (9); what they claim at the end (every device on v2, v3 stopped at its
canary, a drift alert on the shifted site) is checked by ``claims.check_claims`` against what
the server answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from edgefleet.demo.claims import check_claims
from edgefleet.demo.interrupts import interrupts_raise, shielded
from edgefleet.demo.layout import DemoLayout
from edgefleet.demo.narration import Narrator
from edgefleet.demo.processes import ProcessBook
from edgefleet.demo.settings import MODEL, PROFILES, SHIFTED_SITE, SITES, V1, V2, V3, DemoSettings
from edgefleet.demo.state import DemoRun
from edgefleet.demo.steps_drift import drift_step
from edgefleet.demo.steps_rollouts import traffic_step, v1_step, v2_step, v3_step
from edgefleet.demo.steps_setup import build_models_step, convert_step, devices_step, server_step
from edgefleet.demo.summary import DemoSummary, build_summary, render_summary

STEPS = 10
STOP_GRACE_S = {"agent": 15.0, "server": 30.0}


@dataclass(frozen=True)
class DemoResult:
    summary: DemoSummary
    problems: list[str]
    stopped: list[str]  # processes stopped at the end
    killed: list[str]  # of those, the ones that needed SIGKILL


def run_demo(out: Path, *, fast: bool, console: Console) -> DemoResult:
    """Run the whole demo into ``out``; every process it started is stopped before this returns."""
    settings = DemoSettings.for_mode(fast=fast)
    layout = DemoLayout(out.absolute())
    layout.prepare()
    run = DemoRun(
        settings=settings,
        layout=layout,
        console=console,
        narrator=Narrator(console, STEPS),
        book=ProcessBook(layout.processes_file),
    )
    steps: list[tuple[str, Callable[[DemoRun], None]]] = [
        ("build the reference models", build_models_step),
        (f"convert them for {', '.join(PROFILES)}", convert_step),
        ("start the fleet server (SQLite, embedded MQTT broker)", server_step),
        (
            f"start {len(run.specs)} devices: real agent processes at sites {' and '.join(SITES)}",
            devices_step,
        ),
        (f"push {V1} and roll it out", v1_step),
        ("inference traffic through tritonclient", traffic_step),
        (f"roll out a good {V2}: a canary, then waves, each gated", v2_step),
        (f"roll out a broken {V3}: the canary catches it", v3_step),
        (f"shift the inputs at site {SHIFTED_SITE}: brightness x{settings.brightness:g}", drift_step),
    ]
    summary: DemoSummary | None = None
    with interrupts_raise():
        try:
            for number, (title, step) in enumerate(steps, start=1):
                with run.narrator.step(number, title):
                    step(run)
            with run.narrator.step(STEPS, "summary"):
                summary = summary_step(run)
        finally:
            with shielded(lambda: console.print("[yellow]stopping the demo's processes; one moment[/]")):
                stopped, killed = shut_down(run)
    assert summary is not None
    return DemoResult(summary, check_claims(summary), stopped, killed)


# --- step 10: summary, and shutdown --------------------------------------------------------------


def summary_step(run: DemoRun) -> DemoSummary:
    api = run.need_api()
    traffic = run.traffic
    assert run.server is not None and traffic is not None
    rollouts = [api.rollout(r.id) for r in api.rollouts()]
    summary = build_summary(
        model=MODEL,
        fast=run.settings.fast,
        server_url=run.server.url,
        out=run.layout.root,
        elapsed_s=run.narrator.elapsed_s,
        specs=run.specs,
        devices=api.devices(),
        rollouts=rollouts,
        alerts=api.alerts("all"),
        traffic=traffic.counts(),
        shifted_site=SHIFTED_SITE,
        steps={f"{t.number}. {t.title}": t.seconds for t in run.narrator.timings},
    )
    summary.write(run.layout.summary_file)
    run.narrator.show(render_summary(summary))
    run.narrator.ok(f"written to {run.layout.summary_file}")
    return summary


def shut_down(run: DemoRun) -> tuple[list[str], list[str]]:
    """Traffic first, then the agents, then the server; the names stopped and those killed."""
    if run.traffic is not None:
        run.traffic.stop()
    if run.api is not None:
        run.api.close()
    running = [c.name for c in run.book.running()]
    if running:
        with run.console.status(f"stopping {len(running)} processes: the agents, then the server…"):
            killed = run.book.stop_all(("agent", "server"), grace_s=STOP_GRACE_S)
    else:
        killed = []
    return running, killed
