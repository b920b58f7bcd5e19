"""MQTT ingest against a real `edgefleet server run`: simulated devices over a real broker.

Four servers, one per combination the issue asks for: a real Mosquitto (MQTT 5, ``$share``
subscriptions) and the embedded amqtt broker (MQTT 3.1.1, plain subscriptions), each on SQLite and
on PostgreSQL. Every test uses its own device ids, so the tests of one server do not depend on
each other's order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from edgefleet.cli import _console
from models.mqtt_contract import MAX_PAYLOAD_BYTES, UPSTREAM_CHANNELS, Channel, encode, topic
from tests.support.fleet_process import FleetServer, cli_app
from tests.support.mosquitto import MosquittoBroker
from tests.support.postgres import fresh_database
from tests.support.sim_devices import SimDevice, count_rows, metric, wait_ingest_ready, wait_until

pytestmark = pytest.mark.integration

runner = CliRunner()


@dataclass
class Fleet:
    server: FleetServer
    broker_port: int
    protocol: int  # 5 for Mosquitto, 3 (MQTT 3.1.1) for the embedded broker
    db_url: str
    label: str

    @property
    def url(self) -> str:
        return self.server.url

    def api(self) -> httpx.Client:
        return self.server.client(self.server.admin_token)

    def device(self, device_id: str, **kwargs: Any) -> SimDevice:
        return SimDevice("127.0.0.1", self.broker_port, device_id, protocol=self.protocol, **kwargs)

    def provision(self, *device_ids: str, **body: Any) -> None:
        with self.api() as api:
            for device_id in device_ids:
                response = api.post("/api/v1/devices", json={"id": device_id, **body})
                assert response.status_code == 201, response.text

    def get(self, device_id: str) -> dict[str, Any]:
        with self.api() as api:
            response = api.get(f"/api/v1/devices/{device_id}")
            assert response.status_code == 200, response.text
            return dict(response.json())

    def rows(self, table: str, *device_ids: str) -> int:
        return count_rows(self.db_url, table, device_ids)


@pytest.fixture(
    scope="module",
    params=[
        ("mosquitto", "sqlite"),
        ("mosquitto", "postgresql"),
        ("embedded", "sqlite"),
        ("embedded", "postgresql"),
    ],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    broker_kind, backend = request.param
    workdir = tmp_path_factory.mktemp(f"ingest-{broker_kind}-{backend}")
    with ExitStack() as stack:
        db_url = stack.enter_context(fresh_database()) if backend == "postgresql" else None
        broker = None
        if broker_kind == "mosquitto":
            broker = MosquittoBroker(workdir=workdir / "mosquitto").start()
            stack.callback(broker.stop)
        server = FleetServer(
            workdir / "server", db_url=db_url, mqtt_url=broker.url if broker else None
        ).start()
        stack.callback(server.stop)
        wait_ingest_ready(server.url)
        yield Fleet(
            server=server,
            broker_port=broker.port if broker else server.mqtt_port,
            protocol=5 if broker else 3,
            db_url=db_url or f"sqlite:///{server.data_dir / 'fleet.db'}",
            label=f"{broker_kind}-{backend}",
        )


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_console.console, "_width", 300)


def cli_json(fleet: Fleet, *args: str) -> Any:
    env = {
        "EDGEFLEET_SERVER": fleet.url,
        "EDGEFLEET_TOKEN": fleet.server.admin_token,
        "EDGEFLEET_CLI_CONFIG": str(fleet.server.workdir / "no-cli-config.yaml"),
    }
    result = runner.invoke(cli_app(), [*args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- devices, status and metrics -------------------------------------------------------------------


def test_devices_appear_go_offline_and_their_metrics_land(fleet: Fleet) -> None:
    a, b = "appear-a", "appear-b"
    fleet.provision(a, b, profile="generic-x86", tags={"site": "lab"})
    cam_a = fleet.device(a, models={"digits": "1.2.0"}).connect()
    cam_b = fleet.device(b, agent_version="sim-2.0").connect()
    for cam in (cam_a, cam_b):
        for _ in range(3):
            cam.publish(Channel.METRICS, cam.metrics())

    def both_reporting() -> bool:
        return all(
            fleet.get(d)["online"] and (fleet.get(d)["latest_metrics"] or {}).get("seq") == 5 for d in (a, b)
        )

    wait_until(both_reporting, what="both devices online with their latest metrics")
    assert fleet.rows("device_metrics", a, b) == 6

    listed = {d["id"]: d for d in cli_json(fleet, "devices", "ls", "--tag", "site=lab")}
    assert {a, b} <= listed.keys()
    assert listed[a]["online"] and listed[a]["models"] == {"digits": "1.2.0"}
    assert listed[b]["agent_version"] == "sim-2.0" and listed[b]["profile"] == "generic-x86"
    assert listed[a]["latest_metrics"]["models"][0]["requests"] == 10
    seen_before = fleet.get(a)["last_seen"]

    cam_a.vanish()  # as a SIGKILL would: the broker publishes the Last Will
    wait_until(lambda: not fleet.get(a)["online"], what=f"{a} offline after its will")
    assert fleet.get(b)["online"]
    assert fleet.get(a)["last_seen"] == seen_before  # the will is the broker speaking, not the device

    cam_b.disconnect(goodbye=True)
    wait_until(lambda: not fleet.get(b)["online"], what=f"{b} offline after its goodbye")
    offline = {d["id"] for d in cli_json(fleet, "devices", "ls", "--offline")}
    assert {a, b} <= offline


def test_a_device_that_comes_back_is_online_again(fleet: Fleet) -> None:
    device_id = "returns"
    fleet.provision(device_id)
    cam = fleet.device(device_id).connect()
    wait_until(lambda: fleet.get(device_id)["online"], what="first birth")
    cam.vanish()
    wait_until(lambda: not fleet.get(device_id)["online"], what="offline after the will")
    cam.connect()  # a new will seq, a newer birth
    wait_until(lambda: fleet.get(device_id)["online"], what="online after the second birth")
    with fleet.api() as api:
        status = api.get(f"/api/v1/devices/{device_id}").json()
    assert status["online"] is True
    cam.disconnect(goodbye=False)


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_on_every_topic_is_dropped_counted_and_harmless(fleet: Fleet) -> None:
    device_id = "bad-input"
    fleet.provision(device_id)
    cam = fleet.device(device_id).connect()
    before = {
        (channel.value, reason): metric(
            fleet.url, "edgefleet_ingest_dropped_total", channel=channel.value, reason=reason
        )
        for channel in UPSTREAM_CHANNELS
        for reason in ("malformed", "schema", "oversized")
    }
    duplicates_before = {
        channel.value: metric(
            fleet.url, "edgefleet_ingest_messages_total", channel=channel.value, outcome="duplicate"
        )
        for channel in UPSTREAM_CHANNELS
    }
    for channel in UPSTREAM_CHANNELS:
        cam.publish_raw(channel, b"\xde\xad\xbe\xef not json \xff")
        cam.publish_raw(
            channel, json.dumps({"device_id": device_id, "seq": "nope", "colour": "blue"}).encode()
        )
        cam.publish_raw(channel, b'{"pad": "' + b"x" * (MAX_PAYLOAD_BYTES + 1024) + b'"}')
    replayed = {
        Channel.STATUS: cam.status(cam.next_seq(), online=True, will_seq=cam.will_seq),
        Channel.METRICS: cam.metrics(),
        Channel.DRIFT: cam.drift("digits", "1.0.0", _tiny_window()),
        Channel.EVENTS: cam.event(),
        Channel.OTA: cam.ota(),
    }
    for channel, payload in replayed.items():
        cam.publish(channel, payload)
        cam.publish(channel, payload)  # the same seq again: QoS 1 redelivery, or a replay

    def counted() -> bool:
        return all(
            metric(fleet.url, "edgefleet_ingest_dropped_total", channel=channel, reason=reason) >= value + 1
            for (channel, reason), value in before.items()
        ) and all(
            metric(fleet.url, "edgefleet_ingest_messages_total", channel=channel, outcome="duplicate")
            >= value + 1
            for channel, value in duplicates_before.items()
        )

    wait_until(counted, what="every bad message counted by channel and reason")
    assert fleet.rows("device_metrics", device_id) == 1
    assert fleet.rows("drift_windows", device_id) == 1
    # events, OTA reports and the two statuses (birth and the replayed one)
    assert fleet.rows("device_events", device_id) == 4

    # The ingest is alive and well: a good message still lands.
    cam.publish(Channel.METRICS, cam.metrics())
    wait_until(lambda: fleet.rows("device_metrics", device_id) == 2, what="a good message after the bad ones")
    assert "dropped a events message from bad-input: malformed" in fleet.server.log_path.read_text()
    cam.disconnect(goodbye=False)


def test_impersonation_unknown_devices_and_wrong_fleets_are_dropped(fleet: Fleet) -> None:
    victim, intruder, ghost = "victim", "intruder", "ghost-device"
    fleet.provision(victim, intruder)
    fleet.provision("far-away", fleet="plant-7")
    cam = fleet.device(intruder).connect()
    identity = metric(fleet.url, "edgefleet_ingest_dropped_total", channel="metrics", reason="identity")
    unknown = metric(fleet.url, "edgefleet_ingest_dropped_total", channel="metrics", reason="unknown_device")
    wrong_fleet = metric(
        fleet.url, "edgefleet_ingest_dropped_total", channel="metrics", reason="fleet_mismatch"
    )

    # The intruder's own id in the payload, on the victim's topic.
    cam.publish_raw(topic("default", victim, Channel.METRICS), encode(cam.metrics()))
    # A device nobody registered.
    stranger = fleet.device(ghost).connect(birth=False)
    stranger.publish(Channel.METRICS, stranger.metrics())
    # A registered device publishing under a fleet it does not belong to.
    misplaced = fleet.device("far-away").connect(birth=False)
    misplaced.publish(Channel.METRICS, misplaced.metrics())

    wait_until(
        lambda: (
            metric(fleet.url, "edgefleet_ingest_dropped_total", channel="metrics", reason="identity")
            == identity + 1
            and metric(
                fleet.url, "edgefleet_ingest_dropped_total", channel="metrics", reason="unknown_device"
            )
            == unknown + 1
            and metric(
                fleet.url, "edgefleet_ingest_dropped_total", channel="metrics", reason="fleet_mismatch"
            )
            == wrong_fleet + 1
        ),
        what="the three refusals counted",
    )
    assert fleet.rows("device_metrics", victim, intruder, "far-away") == 0
    assert fleet.get(victim)["latest_metrics"] is None
    with fleet.api() as api:
        assert api.get(f"/api/v1/devices/{ghost}").status_code == 404
    for sim in (cam, stranger, misplaced):
        sim.disconnect(goodbye=False)


def test_a_device_enrolls_itself_with_a_one_time_token(fleet: Fleet) -> None:
    with fleet.api() as api:
        response = api.post(
            "/api/v1/enrollment-tokens",
            json={"profile": "generic-x86", "tags": {"site": "field", "batch": "7"}},
        )
        assert response.status_code == 201, response.text
        token = response.json()["token"]
    refused = metric(
        fleet.url, "edgefleet_ingest_dropped_total", channel="status", reason="enrollment_refused"
    )
    unknown = metric(fleet.url, "edgefleet_ingest_dropped_total", channel="status", reason="unknown_device")

    newcomer = fleet.device("newcomer-1").connect(enrollment_token=token)
    newcomer.publish(Channel.METRICS, newcomer.metrics())
    wait_until(lambda: fleet.rows("device_metrics", "newcomer-1") == 1, what="the enrolled device's metrics")
    record = fleet.get("newcomer-1")
    assert (record["enrollment"], record["online"], record["profile"]) == ("enrolled", True, "generic-x86")
    assert record["tags"] == {"batch": "7", "site": "field"}

    second = fleet.device("newcomer-2").connect(enrollment_token=token)  # one-time: already used
    wait_until(
        lambda: (
            metric(fleet.url, "edgefleet_ingest_dropped_total", channel="status", reason="enrollment_refused")
            == refused + 1
        ),
        what="the second use refused",
    )
    # Counted once, as refused, not a second time as an unknown device.
    assert (
        metric(fleet.url, "edgefleet_ingest_dropped_total", channel="status", reason="unknown_device")
        == unknown
    )
    with fleet.api() as api:
        assert api.get("/api/v1/devices/newcomer-2").status_code == 404
        audit = api.get("/api/v1/audit", params={"action": "device.enroll"}).json()
    assert any(entry["target"] == "newcomer-1" for entry in audit)
    stored = fleet.get("newcomer-1")
    assert "enrollment_token" not in json.dumps(stored)
    for sim in (newcomer, second):
        sim.disconnect(goodbye=False)


# --- the broker going away -----------------------------------------------------------------------


def test_the_ingest_reconnects_and_resubscribes_after_the_broker_restarts(tmp_path: Path) -> None:
    broker = MosquittoBroker(workdir=tmp_path / "mosquitto").start()
    server = FleetServer(tmp_path / "server", mqtt_url=broker.url)
    try:
        server.start()
        wait_ingest_ready(server.url)
        fleet = Fleet(server, broker.port, 5, f"sqlite:///{server.data_dir / 'fleet.db'}", "restart")
        fleet.provision("survivor")
        connects = metric(server.url, "edgefleet_ingest_connects_total")
        broker.stop()
        wait_until(
            lambda: metric(server.url, "edgefleet_ingest_connected") == 0.0, what="the ingest to notice"
        )
        broker.start()
        wait_until(
            lambda: (
                metric(server.url, "edgefleet_ingest_connects_total") > connects
                and metric(server.url, "edgefleet_ingest_connected") == 1.0
            ),
            timeout=60,
            what="the ingest to reconnect and subscribe again",
        )
        cam = fleet.device("survivor").connect()
        cam.publish(Channel.METRICS, cam.metrics())
        wait_until(lambda: fleet.rows("device_metrics", "survivor") == 1, what="a message after the restart")
        cam.disconnect(goodbye=False)
        assert "reconnecting with backoff" in server.log()
    finally:
        server.stop()
        broker.stop()


def _tiny_window() -> Any:
    import numpy as np

    from models.stats import build_reference_stats, count_window

    x = np.random.default_rng(3).standard_normal((32, 2))
    reference = build_reference_stats({"x": x}, {"y": x}, layouts={"x": "NC"})
    return count_window(reference, {"x": x}, {"y": x})
