"""Real agents as devices: `edgefleet agent run` processes reporting to a real `edgefleet server run`.

The agents meet the server through Mosquitto with MQTT 5, on SQLite and on PostgreSQL, and through
the server's embedded broker (amqtt, MQTT 3.1.1 only) with ``--mqtt-protocol 3.1.1``. Agents appear as devices, their metrics and drift windows land in the
database, ``edgefleet devices ls --json`` shows them, and an agent killed with SIGKILL shows offline
(its Last Will), while one stopped with SIGTERM says goodbye.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgefleet.cli import _console
from tests.support.fleet_process import FleetServer, cli_app
from tests.support.mosquitto import MosquittoBroker
from tests.support.postgres import fresh_database
from tests.support.sim_devices import count_rows, wait_ingest_ready, wait_until
from tests.support.telemetry import MODEL, AgentProcess, TelemetryBundle, telemetry_bundle

pytestmark = pytest.mark.integration

FLEET = "lab"
runner = CliRunner()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FleetServer, MosquittoBroker, TelemetryBundle, str]]:
    workdir = tmp_path_factory.mktemp(f"agents-{request.param}")
    bundle = telemetry_bundle(workdir / "bundle")
    with ExitStack() as stack:
        db_url = stack.enter_context(fresh_database()) if request.param == "postgresql" else None
        broker = MosquittoBroker(workdir=workdir / "mosquitto").start()
        stack.callback(broker.stop)
        server = FleetServer(
            workdir / "server", db_url=db_url, mqtt_url=broker.url, trusted_keys=(bundle.public_key,)
        ).start()
        stack.callback(server.stop)
        wait_ingest_ready(server.url)
        with server.client(server.admin_token) as api:
            pushed = api.post(
                "/api/v1/models",
                content=bundle.path.read_bytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert pushed.status_code == 201, pushed.text
        yield server, broker, bundle, db_url or f"sqlite:///{server.data_dir / 'fleet.db'}"


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_console.console, "_width", 300)


def devices_ls(server: FleetServer) -> dict[str, dict[str, Any]]:
    env = {
        "EDGEFLEET_SERVER": server.url,
        "EDGEFLEET_TOKEN": server.admin_token,
        "EDGEFLEET_CLI_CONFIG": str(server.workdir / "no-cli-config.yaml"),
    }
    result = runner.invoke(cli_app(), ["devices", "ls", "--fleet", FLEET, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return {d["id"]: d for d in json.loads(result.stdout)}


def test_agents_appear_report_and_go_offline(
    setup: tuple[FleetServer, MosquittoBroker, TelemetryBundle, str], tmp_path: Path
) -> None:
    server, broker, bundle, db_url = setup
    names = ("agent-killed", "agent-stopped")
    with server.client(server.admin_token) as api:
        for name in names:
            response = api.post(
                "/api/v1/devices", json={"id": name, "fleet": FLEET, "tags": {"kind": "real"}}
            )
            assert response.status_code == 201, response.text
    options = {"metrics-interval-s": "0.5", "drift-window": "16", "drift-window-s": "1"}
    agents = [
        AgentProcess(broker, bundle, tmp_path / name, device=name, fleet=FLEET, options=options)
        for name in names
    ]
    try:
        for agent in agents:
            agent.start()
            agent.infer(8, rows=4)

        def reporting() -> bool:
            listed = devices_ls(server)
            return all(
                name in listed and listed[name]["online"] and listed[name]["latest_metrics"] for name in names
            )

        wait_until(reporting, timeout=60, what="both agents online with metrics")
        listed = devices_ls(server)
        for name in names:
            assert listed[name]["models"] == {MODEL: "1.0.0"}
            assert listed[name]["agent_version"]
            assert listed[name]["tags"] == {"kind": "real"}
        wait_until(lambda: count_rows(db_url, "drift_windows", names) >= 2, timeout=60, what="drift windows")
        assert count_rows(db_url, "device_metrics", names) >= 2

        agents[0].stop(kill=True)  # SIGKILL: the broker publishes the agent's Last Will
        wait_until(
            lambda: not devices_ls(server)["agent-killed"]["online"], timeout=30, what="offline after SIGKILL"
        )
        assert devices_ls(server)["agent-stopped"]["online"]

        assert agents[1].stop() == 0  # SIGTERM: an offline status, then a clean disconnect
        wait_until(
            lambda: not devices_ls(server)["agent-stopped"]["online"],
            timeout=30,
            what="offline after SIGTERM",
        )
    finally:
        for agent in agents:
            agent.stop(kill=True)

    with server.client(server.admin_token) as api:
        reports = api.get("/api/v1/drift", params={"model": MODEL, "cohort": "tag:kind=real"}).json()
    assert reports and reports[0]["note"] is None and reports[0]["devices"] == 2
    assert {f["feature"] for f in reports[0]["features"]} >= {"x/col[0]", "y/class"}


@dataclass(frozen=True)
class EmbeddedBroker:
    url: str


def test_an_agent_reports_through_the_embedded_broker_with_mqtt_311(tmp_path: Path) -> None:
    bundle = telemetry_bundle(tmp_path / "bundle")
    server = FleetServer(tmp_path / "server", trusted_keys=(bundle.public_key,)).start()
    agent = AgentProcess(
        EmbeddedBroker(f"mqtt://127.0.0.1:{server.mqtt_port}"),
        bundle,
        tmp_path / "agent",
        device="agent-311",
        fleet=FLEET,
        options={"mqtt-protocol": "3.1.1", "metrics-interval-s": "0.5"},
    )
    try:
        wait_ingest_ready(server.url)
        with server.client(server.admin_token) as api:
            created = api.post("/api/v1/devices", json={"id": "agent-311", "fleet": FLEET})
            assert created.status_code == 201, created.text
        agent.start()
        agent.infer(4, rows=2)

        def online_with_metrics() -> bool:
            device = devices_ls(server).get("agent-311")
            return bool(device and device["online"] and device["latest_metrics"])

        wait_until(online_with_metrics, timeout=60, what="the agent online with metrics via amqtt")
        assert devices_ls(server)["agent-311"]["models"] == {MODEL: "1.0.0"}
        agent.stop(kill=True)
        wait_until(
            lambda: not devices_ls(server)["agent-311"]["online"], timeout=30, what="offline after SIGKILL"
        )
    finally:
        agent.stop(kill=True)
        server.stop()
