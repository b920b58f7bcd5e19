"""Issue 7, fleet side, end to end: a real Mosquitto, a real fleet server process, seven real agent
processes with the OTA updater, tritonclient traffic, and the operator CLI.

The agents, the server and the traffic are shared by the module's tests, which run in order and
move the fleet from version to version: a refused and then an explicit rollback on one device,
a good version everywhere, a broken one, a slow one, a drifted one (each stopped at the canary),
a server killed mid-rollout, and a device offline for a whole rollout.

Each agent's own watch window is lenient on latency here (``--ota-max-latency-ratio 1000``), so a slow
version commits on the device and the fleet's latency gate, which compares canary with control,
is what stops it (the agent's own latency rollback is tested in ``test_ota_agent.py``).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from edgefleet.cli import rollout as rollout_cli
from tests.integration.test_rollout_support import (
    RolloutAgent,
    RolloutReleases,
    Traffic,
    rollout_releases,
    wait_until,
)
from tests.support.fleet_process import FleetServer
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration

MODEL = "digits-cnn-onnx"
FLEET = "lab"
DEVICES = [f"dev-{i}" for i in range(1, 8)]
# Each wave bakes a few seconds; the p95 ratio allowed is 3x rather than the default 1.5x: on a
# shared, loaded test machine identical devices differ by 1.5x over a few seconds of traffic. The
# slow version (about 50x) keeps the default, and still trips it.
FAST = ["--bake", "3s", "--gate", "max_p95_latency_ratio=3"]


class Ops:
    """The operator: the REST API with the admin token, and the CLI against the same server."""

    def __init__(self, server: FleetServer) -> None:
        self.server = server
        self.runner = CliRunner()

    def http(self) -> httpx.Client:
        return self.server.client(self.server.admin_token)

    def cli(self, *args: str) -> Result:
        extra = ["--server", self.server.url, "--token", self.server.admin_token]
        return self.runner.invoke(rollout_cli.app, [*args, *extra])

    def create(self, version: str, *args: str) -> str:
        result = self.cli("create", f"{MODEL}:{version}", *args, "--json")
        assert result.exit_code == 0, result.output
        return str(httpx.Response(200, content=result.stdout).json()["id"])

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        with self.http() as api:
            response = api.get(f"/api/v1/rollouts/{rollout_id}")
            assert response.status_code == 200, response.text
            return dict(response.json())

    def wait(self, rollout_id: str, what: str, predicate: Any, timeout: float = 180.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            detail = self.rollout(rollout_id)
            if predicate(detail):
                return detail
            if detail["state"] in ("completed", "aborted") and detail["settled"]:
                raise AssertionError(f"{what}, but the rollout ended {detail['state']}: {detail}")
            return None

        try:
            return dict(wait_until(check, what, timeout, interval=0.5))
        except AssertionError:
            raise AssertionError(f"{what}: {self.rollout(rollout_id)}\n{self.server.log()}") from None

    def wait_state(
        self, rollout_id: str, state: str, *, settled: bool = False, timeout: float = 180.0
    ) -> dict[str, Any]:
        return self.wait(
            rollout_id,
            f"rollout {rollout_id} {state}{' and settled' if settled else ''}",
            lambda d: d["state"] == state and (d["settled"] or not settled),
            timeout,
        )

    def device(self, device_id: str) -> dict[str, Any]:
        with self.http() as api:
            return dict(api.get(f"/api/v1/devices/{device_id}").json())

    def desired(self, device_id: str) -> dict[str, Any]:
        with self.http() as api:
            response = api.get(f"/api/v1/desired/{device_id}")
            assert response.status_code == 200, response.text
            return dict(response.json())

    def audit(self, rollout_id: str) -> list[dict[str, Any]]:
        with self.http() as api:
            entries = api.get("/api/v1/audit", params={"action": "rollout.", "limit": 1000}).json()
        return [e for e in reversed(entries) if e["target"] == rollout_id]

    def running(self) -> dict[str, str | None]:
        return {d: self.device(d)["models"].get(MODEL) for d in DEVICES}


def states(detail: dict[str, Any]) -> dict[str, str]:
    return {d["device_id"]: d["state"] for d in detail["device_list"]}


def wave_members(detail: dict[str, Any], wave: int) -> list[str]:
    return sorted(d["device_id"] for d in detail["device_list"] if d["wave"] == wave)


# --- the shared fleet ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> RolloutReleases:
    return rollout_releases(tmp_path_factory)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    running = MosquittoBroker(workdir=tmp_path_factory.mktemp("mosquitto")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def ops(
    tmp_path_factory: pytest.TempPathFactory, broker: MosquittoBroker, releases: RolloutReleases
) -> Iterator[Ops]:
    server = FleetServer(
        tmp_path_factory.mktemp("fleet"), trusted_keys=(releases.public_key_path,), mqtt_url=broker.url
    ).start()
    operator = Ops(server)
    with operator.http() as api:
        for release in releases.releases.values():
            response = api.post(
                "/api/v1/models",
                content=release.path.read_bytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert response.status_code == 201, response.text
    yield operator
    server.stop()


@pytest.fixture(scope="module")
def agents(
    tmp_path_factory: pytest.TempPathFactory, ops: Ops, broker: MosquittoBroker, releases: RolloutReleases
) -> Iterator[dict[str, RolloutAgent]]:
    workdir = tmp_path_factory.mktemp("agents")
    started: dict[str, RolloutAgent] = {}
    with ops.http() as api:
        for device in DEVICES:
            response = api.post(
                "/api/v1/devices", json={"id": device, "fleet": FLEET, "tags": {"site": "lab"}}
            )
            assert response.status_code == 201, response.text
            credentials = response.json()["mqtt"]
            started[device] = RolloutAgent(
                workdir / device,
                broker.url,
                device,
                releases["v1"].path,
                releases.public_key_path,
                fleet=FLEET,
                username=credentials["username"],
                password=credentials["password"],
                fleet_url=ops.server.url,
                latency_ratio=1000.0,
            )
    try:
        with concurrent.futures.ThreadPoolExecutor(len(started)) as pool:
            list(pool.map(lambda agent: agent.start(), started.values()))
        wait_until(lambda: set(ops.running().values()) == {"1.0.0"}, "every device reporting 1.0.0", 60)
        yield started
    finally:
        for agent in started.values():
            agent.kill()


@pytest.fixture(scope="module")
def traffic(agents: dict[str, RolloutAgent], releases: RolloutReleases) -> Iterator[Traffic]:
    load = Traffic(MODEL, releases.golden_inputs)
    for agent in agents.values():
        load.start(agent)
    wait_until(lambda: all(load.loads[d].answers for d in DEVICES), "an answer from every device", 60)
    yield load
    load.stop_all()


@pytest.fixture(scope="module")
def sample(releases: RolloutReleases) -> Any:
    """One golden input, for a single request that says which version answers."""
    return releases.golden_inputs[:1]


@pytest.fixture
def fleet(ops: Ops, agents: dict[str, RolloutAgent], traffic: Traffic) -> Iterator[Ops]:
    """Every test starts with fresh traffic records and every device's metrics on the fleet, and
    ends with no failed request."""
    traffic.reset()
    wait_until(
        lambda: all(
            (ops.device(d)["latest_metrics"] or {}).get("models") for d in DEVICES if traffic.running(d)
        ),
        "metrics from every device with traffic",
        60,
    )
    yield ops
    assert traffic.failures() == {}


# --- the tests, in order -------------------------------------------------------------------------


def test_an_older_version_is_refused_at_creation_unless_the_rollback_is_explicit(
    fleet: Ops, agents: dict[str, RolloutAgent], sample: Any
) -> None:
    refused = fleet.cli("create", f"{MODEL}:0.9.0")
    assert refused.exit_code == 1
    assert "0.9.0 is older than what 7 of the 7 targeted devices run" in refused.output
    assert "--rollback" in refused.output
    with fleet.http() as api:
        assert api.get("/api/v1/rollouts").json() == []

    rollout_id = fleet.create("0.9.0", "--target", "device=dev-7", "--rollback", "--waves", "100%", *FAST)
    detail = fleet.wait_state(rollout_id, "completed", settled=True)
    assert states(detail) == {"dev-7": "committed"}
    desired = fleet.desired("dev-7")
    assert desired["models"][MODEL]["version"] == "0.9.0"
    assert desired["models"][MODEL]["allow_rollback"] is True
    assert desired["published_revision"] == desired["revision"]
    assert agents["dev-7"].infer(MODEL, sample)[0] == "0.9.0"
    assert fleet.device("dev-7")["models"][MODEL] == "0.9.0"


def test_a_good_version_goes_out_wave_by_wave_with_no_failed_request(
    fleet: Ops, agents: dict[str, RolloutAgent], traffic: Traffic, sample: Any
) -> None:
    rollout_id = fleet.create("2.0.0", "--canary", "1", "--waves", "50%,100%", *FAST)
    watched: list[Result] = []
    watcher = threading.Thread(
        target=lambda: watched.append(fleet.cli("status", rollout_id, "--watch", "--interval", "0.5"))
    )
    watcher.start()
    watcher.join(240)
    assert not watcher.is_alive(), "rollout status --watch did not return"
    assert watched[0].exit_code == 0, watched[0].output
    assert "completed" in watched[0].output and "output_drift_delta" in watched[0].output

    detail = fleet.rollout(rollout_id)
    assert (detail["state"], detail["settled"]) == ("completed", True)
    assert [(w["label"], w["cumulative"]) for w in detail["wave_list"]] == [
        ("canary", 1),
        ("wave 1", 4),
        ("wave 2", 7),
    ]
    assert set(states(detail).values()) == {"committed"}
    assert set(fleet.running().values()) == {"2.0.0"}
    for agent in agents.values():
        assert agent.infer(MODEL, sample)[0] == "2.0.0"
        assert agent.job(MODEL)["state"] == "committed" and agent.job(MODEL)["rollout_id"] == rollout_id
    assert traffic.failures() == {}
    assert all(
        "2.0.0" in load.answers and "1.0.0" in load.answers
        for d, load in traffic.loads.items()
        if d != "dev-7"
    )

    audit = fleet.audit(rollout_id)
    assert [e["action"] for e in audit] == [
        "rollout.create",
        "rollout.wave",
        "rollout.wave",
        "rollout.wave",
        "rollout.complete",
    ]
    for entry in audit[2:]:  # every decision after the canary comes with its figures
        decision = entry["details"].get("after", entry["details"])
        assert decision["decision"]["verdict"] == "proceed"
        assert decision["figures"]["canary"]["requests"] >= 20
        assert {g["name"] for g in decision["decision"]["gates"] if g["passed"]} == {
            "failure_rate",
            "error_rate_delta",
            "p95_latency_ratio",
            "output_drift_delta",
        }


def test_a_broken_version_fails_on_the_canary_and_goes_no_further(
    fleet: Ops, agents: dict[str, RolloutAgent]
) -> None:
    rollout_id = fleet.create("3.0.0", "--canary", "2", "--waves", "100%", *FAST)
    detail = fleet.wait_state(rollout_id, "aborted", settled=True)
    assert detail["reason"].startswith("failure_rate: ")
    canary = wave_members(detail, 0)
    assert len(canary) == 2
    others = [d for d in DEVICES if d not in canary]
    assert {states(detail)[d] for d in canary} == {"reverted"}
    assert {states(detail)[d] for d in others} == {"skipped"}
    failed = [agents[d].job(MODEL) for d in canary if agents[d].job(MODEL)["version"] == "3.0.0"]
    assert any(job["reason"].startswith("golden check failed") for job in failed)
    for device in others:  # never beyond the canary: not in their desired state, not on the device
        assert fleet.desired(device)["models"][MODEL]["version"] == "2.0.0"
        assert agents[device].job(MODEL)["version"] == "2.0.0"
    assert set(fleet.running().values()) == {"2.0.0"}
    abort = fleet.audit(rollout_id)[-1]
    assert abort["action"] == "rollout.abort" and abort["actor"] == "rollout-controller"
    assert abort["details"]["decision"]["verdict"] == "abort"


def test_a_slow_version_trips_the_latency_gate_and_pauses_as_configured(
    fleet: Ops, agents: dict[str, RolloutAgent], sample: Any
) -> None:
    rollout_id = fleet.create(
        "4.0.0", "--canary", "1", "--waves", "100%", "--on-failure", "pause", "--bake", "3s"
    )
    detail = fleet.wait_state(rollout_id, "paused")
    assert detail["reason"].startswith("p95_latency_ratio: canary p95")
    latency = next(g for g in detail["decision"]["gates"] if g["name"] == "p95_latency_ratio")
    assert latency["passed"] is False and latency["threshold"] == 1.5 and latency["value"] > 3
    (canary,) = wave_members(detail, 0)
    assert states(detail)[canary] == "committed"  # healthy on the device; slow against control
    assert agents[canary].infer(MODEL, sample)[0] == "4.0.0"
    assert {states(detail)[d] for d in DEVICES if d != canary} == {"pending"}

    status = fleet.cli("status", rollout_id)
    assert status.exit_code == 0 and "✗ fail" in status.output and "paused" in status.output
    aborted = fleet.cli("abort", rollout_id, "--reason", "too slow")
    assert aborted.exit_code == 0, aborted.output
    detail = fleet.wait_state(rollout_id, "aborted", settled=True)
    assert states(detail)[canary] == "reverted"
    assert detail["reason"] == "aborted by admin: too slow"
    assert agents[canary].infer(MODEL, sample)[0] == "2.0.0"
    assert (
        fleet.desired(canary)["models"][MODEL] | {"allow_rollback": True}
        == fleet.desired(canary)["models"][MODEL]
    )


def test_a_drifted_canary_trips_the_drift_gate(
    fleet: Ops, agents: dict[str, RolloutAgent], sample: Any
) -> None:
    rollout_id = fleet.create("5.0.0", "--canary", "1", "--waves", "100%", *FAST)
    detail = fleet.wait_state(rollout_id, "aborted", settled=True)
    assert detail["reason"].startswith("output_drift_delta: canary JS"), detail["reason"]
    figures = detail["decision"]["figures"]
    assert figures["canary"]["output_drift"] > figures["control"]["output_drift"] + 0.1
    assert figures["canary"]["drift_samples"] >= 200
    (canary,) = wave_members(detail, 0)
    assert agents[canary].infer(MODEL, sample)[0] == "2.0.0"
    assert set(fleet.running().values()) == {"2.0.0"}


def test_a_fleet_server_killed_mid_rollout_loses_no_progress(
    fleet: Ops, agents: dict[str, RolloutAgent]
) -> None:
    rollout_id = fleet.create("2.1.0", "--canary", "1", "--waves", "50%,100%", *FAST)
    before = fleet.wait(rollout_id, "the first wave after the canary", lambda d: d["wave"] >= 1)
    canary = wave_members(before, 0)[0]
    canary_desired = fleet.desired(canary)

    process = fleet.server._process  # SIGKILL: no clean shutdown of any kind
    assert process is not None
    process.kill()
    process.wait(30)
    fleet.server._process = None
    fleet.server.start()

    after = fleet.rollout(rollout_id)
    assert after["wave"] >= before["wave"]
    assert states(after)[canary] == "committed"
    detail = fleet.wait_state(rollout_id, "completed", settled=True)
    assert set(states(detail).values()) == {"committed"}
    assert fleet.desired(canary)["revision"] == canary_desired["revision"]  # not assigned twice
    waves = [e["details"]["label"] for e in fleet.audit(rollout_id) if e["action"] == "rollout.wave"]
    assert waves == ["canary", "wave 1", "wave 2"]
    for agent in agents.values():
        job = agent.job(MODEL)
        assert (job["version"], job["state"], job["attempt"]) == ("2.1.0", "committed", 1)
    assert set(fleet.running().values()) == {"2.1.0"}


def test_a_device_offline_for_the_whole_rollout_converges_when_it_reconnects(
    fleet: Ops, agents: dict[str, RolloutAgent], traffic: Traffic, sample: Any
) -> None:
    away = agents["dev-6"]
    traffic.stop(away.device)
    assert away.stop() == 0
    wait_until(lambda: not fleet.device(away.device)["online"], "dev-6 offline in the registry", 30)

    rollout_id = fleet.create("2.2.0", "--canary", "1", "--waves", "100%", *FAST)
    detail = fleet.wait_state(rollout_id, "completed")
    assert detail["settled"] is False
    assert states(detail)[away.device] == "assigned"
    assert wave_members(detail, 0) != [away.device]  # the canary is a device that can answer
    assert {s for d, s in states(detail).items() if d != away.device} == {"committed"}

    away.start()
    traffic.start(away)
    detail = fleet.wait_state(rollout_id, "completed", settled=True)
    assert states(detail)[away.device] == "committed"
    assert away.infer(MODEL, sample)[0] == "2.2.0"
    assert set(fleet.running().values()) == {"2.2.0"}
