"""Steps 5 to 8: traffic, and three rollouts: v1 to devices that run nothing, a good v2, a broken v3."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.table import Table

from edgefleet.cli._console import CLIError
from edgefleet.demo.rollouts import assigned_devices, describe_plan, follow_rollout
from edgefleet.demo.settings import MODEL, V1, V2, V3, RolloutPlan
from edgefleet.demo.state import DemoRun
from edgefleet.demo.traffic import Target, TrafficGenerator

if TYPE_CHECKING:
    from fleet.rollouts.schemas import RolloutDetail


def v1_step(run: DemoRun) -> None:
    from edgefleet.demo.releases import evaluation_inputs

    _push(run, V1)
    models = run.models
    assert models is not None
    run.traffic = TrafficGenerator(
        MODEL,
        models.input_name,
        evaluation_inputs(models),
        [Target(a.spec.id, a.spec.site, a.address) for a in run.agents],
        pause_s=run.settings.request_pause_s,
    )
    run.traffic.start()
    run.narrator.say(
        "the traffic generator (step 6) starts now: it sends to each device as soon as it serves "
        f"{MODEL}, so the watch windows and gates have requests to judge"
    )
    settings = run.settings
    run.narrator.say(
        "[dim]six devices on one host's cores: the rollouts widen the p95 latency gate to "
        f"{settings.v1.gates['max_p95_latency_ratio']:g}x (default 1.5x) and the devices' watch window to "
        f"{settings.watch_max_latency_ratio:g}x (default 2x), as a scheduler time slice dwarfs a sub-millisecond "
        f"inference; and the output drift gate to {settings.v1.gates['max_output_drift_delta']:g} "
        "(default 0.1), as a wave is judged from a few hundred samples. Failures and errors keep "
        "their defaults.[/]"
    )
    _roll_out(run, settings.v1, expect="completed")


def traffic_step(run: DemoRun) -> None:
    traffic = run.traffic
    assert traffic is not None
    before = traffic.counts()
    time.sleep(run.settings.traffic_show_s)
    after = traffic.counts()
    table = Table(
        title=f"{run.settings.traffic_show_s:g} s of traffic: one image per request, from the evaluation set",
        title_justify="left",
    )
    for column in ("device", "answered", "failed", "answered by", "total so far"):
        table.add_column(column)
    for agent in run.agents:
        device = agent.spec.id
        now, then = after[device], before[device]
        table.add_row(
            device,
            str(now.ok - then.ok),
            str(now.failed - then.failed),
            ", ".join(sorted(now.versions)) or "-",
            f"{now.ok} ok, {now.failed} failed",
        )
    run.narrator.show(table)
    ok, failed = traffic.totals()
    run.narrator.ok(f"{ok} requests answered, {failed} failed; the thread keeps going until the end")


def v2_step(run: DemoRun) -> None:
    _push(run, V2)
    _roll_out(run, run.settings.v2, expect="completed")


def v3_step(run: DemoRun) -> None:
    _push(run, V3)
    detail = _roll_out(run, run.settings.v3, expect="aborted")
    canary = sorted(d.device_id for d in detail.device_list if d.wave == 0)
    got = assigned_devices(detail)
    for device in detail.device_list:
        if device.wave == 0:
            run.narrator.say(
                f"canary {device.device_id}: {device.state}, runs {device.running} again"
                + (f"; it reported: {device.reason}" if device.reason else "")
            )
    others = len(detail.device_list) - len(canary)
    if set(got) <= set(canary):
        run.narrator.ok(
            f"{V3} reached only the canary ({', '.join(got) or 'none'}); {others} other devices never got it"
        )
    else:
        run.narrator.warn(f"{V3} was assigned beyond the canary: {', '.join(got)}")
    assert run.traffic is not None
    answered = sum(c.versions.get(V3, 0) for c in run.traffic.counts().values())
    run.narrator.ok(f"requests answered by {V3}: {answered} (its golden check failed before it could serve)")


def _push(run: DemoRun, version: str) -> None:
    api = run.need_api()
    release = run.releases[version]
    for profile, bundle in release.bundles.items():
        result = api.push(bundle)
        run.narrator.ok(
            f"pushed {bundle.name} ({result.bundle.format} {result.bundle.precision}, "
            f"sha256 {result.bundle.sha256[:12]}…) for {profile}"
        )


def _roll_out(run: DemoRun, plan: RolloutPlan, *, expect: str) -> RolloutDetail:
    api = run.need_api()
    created = api.create_rollout(plan)
    gates = ", ".join(f"{k}={v:g}" for k, v in plan.gates.items())
    run.narrator.say(
        f"[bold]rollout {created.id}[/]: {MODEL} {plan.version} to {created.devices} devices: "
        f"{describe_plan(created)}; bake {plan.bake_s:g} s; on failure abort (gate overrides: {gates})"
    )
    detail = follow_rollout(api, created.id, run.console, timeout_s=run.settings.rollout_timeout_s)
    run.rollouts[plan.version] = detail
    if detail.state != expect:
        raise CLIError(
            f"rollout {detail.id} of {plan.version} ended {detail.state}, not {expect}: {detail.reason}",
            hint=f"see `edgefleet rollout status {detail.id}` and the logs in {run.layout.logs_dir}",
        )
    return detail
