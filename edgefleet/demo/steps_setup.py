"""Steps 1 to 4: the models, their bundles, the fleet server and the devices."""

from __future__ import annotations

import time

from rich.table import Table

from edgefleet.cli._console import CLIError
from edgefleet.demo.agents import Credentials, start_agents
from edgefleet.demo.api import DemoApi
from edgefleet.demo.fleet_server import start_server
from edgefleet.demo.settings import FLEET, MODEL, SITES, V1, V2, V3
from edgefleet.demo.state import DemoRun

ONLINE_TIMEOUT_S = 60.0


def build_models_step(run: DemoRun) -> None:
    from edgefleet.demo.releases import V2_TRAINING, build_models, signing_key

    with run.console.status("training or loading digits-cnn v1 and v2 (cached after the first run)…"):
        run.models = models = build_models(run.layout)
    say = run.narrator.say
    say(f"[bold]{MODEL}[/] {V1}: {models.description}")
    say(
        f"[bold]{MODEL}[/] {V2}: the same network retrained "
        f"(seed {V2_TRAINING['seed']}, {V2_TRAINING['epochs']} epochs)"
    )
    say(f"calibration set [cyan]{models.calibration}[/], evaluation set [cyan]{models.evaluation}[/]")
    run.private_key, run.public_key = signing_key(run.layout)
    say(f"release key [cyan]{run.private_key}[/] signs; devices trust [cyan]{run.public_key}[/]")


def convert_step(run: DemoRun) -> None:
    from edgefleet.demo.broken import broken_release
    from edgefleet.demo.releases import convert_release

    models, key, public = run.models, run.private_key, run.public_key
    assert models is not None and key is not None and public is not None
    iterations = run.settings.benchmark_iterations
    for version, model, note in ((V1, models.v1, "the zoo's model"), (V2, models.v2, "retrained")):
        run.narrator.say(f"[bold]{MODEL} {version}[/] ({note}): quantize, validate, benchmark, package, sign")
        run.releases[version] = convert_release(
            model,
            version,
            models,
            run.layout,
            (key, public),
            run.console,
            benchmark_iterations=iterations,
            note=note,
        )
    broken, damages = broken_release(run.releases[V2], V3, run.layout, key, public)
    run.releases[V3] = broken
    run.narrator.say(f"[bold]{MODEL} {V3}[/]: {V2}'s bundles with {broken.note}, signed like any release:")
    for profile, damage in damages.items():
        run.narrator.say(f"  {profile}: {damage.describe()}")
    for version, release in run.releases.items():
        run.narrator.ok(f"{version}: {len(release.bundles)} bundles in {release.directory}")


def server_step(run: DemoRun) -> None:
    assert run.public_key is not None
    with run.console.status("starting the fleet server…"):
        run.server = server = start_server(run.book, run.layout, run.settings, run.public_key)
    run.api = DemoApi(server.url, server.admin_token)
    say = run.narrator.say
    say(f"REST API [cyan]{server.url}[/] (OpenAPI at {server.url}/docs), pid {server.child.pid}")
    say(f"embedded MQTT broker [cyan]{server.mqtt_url}[/] (MQTT 3.1.1), ingest connected")
    say(f"data directory [cyan]{run.layout.server_dir}[/]: fleet.db, bundles/, admin.token")
    say(f"drift cohorts watched: all, {', '.join(f'tag:site={s}' for s in SITES)}")


def devices_step(run: DemoRun) -> None:
    api = run.need_api()
    assert run.server is not None and run.public_key is not None
    registered = []
    for spec in run.specs:
        created = api.add_device(spec)
        registered.append((spec, Credentials(created.mqtt.username, created.mqtt.password)))
    with run.console.status(f"starting {len(registered)} agents…"):
        run.agents = start_agents(
            run.book,
            run.layout,
            run.settings,
            registered,
            mqtt_url=run.server.mqtt_url,
            fleet_url=run.server.url,
            trusted_key=run.public_key,
        )
        _wait_online(api, [s.id for s in run.specs])
    table = Table(title=f"fleet {FLEET!r}: {len(run.agents)} devices", title_justify="left")
    for column in ("device", "profile", "site", "gRPC (Open Inference Protocol v2)", "pid", "log"):
        table.add_column(column)
    for agent in run.agents:
        table.add_row(
            agent.spec.id,
            agent.spec.profile,
            agent.spec.site,
            agent.address,
            str(agent.child.pid),
            str(agent.child.log_path.relative_to(run.layout.root)),
        )
    run.narrator.show(table)
    run.narrator.ok("every device is online in the registry and runs no model yet")


def _wait_online(api: DemoApi, device_ids: list[str]) -> None:
    deadline = time.monotonic() + ONLINE_TIMEOUT_S
    while True:
        online = {d.id for d in api.devices() if d.online}
        missing = sorted(set(device_ids) - online)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise CLIError(
                f"devices not online after {ONLINE_TIMEOUT_S:.0f} s: {', '.join(missing)}",
                hint="their logs are in the demo folder's logs/",
            )
        time.sleep(0.3)
