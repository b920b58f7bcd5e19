"""The README tour's rollout (step 4) against a real fleet server, with one simulated device on the
server's embedded broker (issue 18, items 3 to 6):

one lab device serving no traffic, a canary of 1 and one wave; the device installs the version
as the agent does (two versions loaded from staged to committed); the gates wait for data; the
operator promotes with a reason. What `rollout status`, `rollout ls`, `audit ls` and `status
--watch` say at each point is what the issue found wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner, Result

from edgefleet.cli import rollout as rollout_cli
from models.mqtt_contract import Channel, ModelState, OtaPayload, SlotState, StatusPayload
from tests.support.bundles import build_test_bundle, fixed_private_key
from tests.support.fleet_process import FleetServer, cli_app
from tests.support.sim_devices import SimDevice, wait_ingest_ready, wait_until

pytestmark = pytest.mark.integration

MODEL = "digits"
PROFILE = "test-x86_64"  # the tiny test bundle's profile
DEVICE = "nuc-01"
WIDE = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetServer]:
    workdir = tmp_path_factory.mktemp("rollout-tour")
    key = workdir / "signer.pub.pem"
    key.write_bytes(
        fixed_private_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    server = FleetServer(workdir / "server", trusted_keys=(key,)).start()
    try:
        wait_ingest_ready(server.url)
        with server.client(server.admin_token) as api:
            for version in ("1.0.0", "1.1.0"):
                bundle = build_test_bundle(workdir / version, name=MODEL, version=version)
                pushed = api.post(
                    "/api/v1/models",
                    content=bundle.path.read_bytes(),
                    headers={"Content-Type": "application/octet-stream"},
                )
                assert pushed.status_code == 201, pushed.text
        yield server
    finally:
        server.stop()


class Tour:
    def __init__(self, server: FleetServer, workdir: Path) -> None:
        self.server = server
        self.runner = CliRunner()
        self.env = {
            **WIDE,
            "EDGEFLEET_SERVER": server.url,
            "EDGEFLEET_TOKEN": server.admin_token,
            "EDGEFLEET_CLI_CONFIG": str(workdir / "no-cli-config.yaml"),
        }

    def rollout(self, *args: str) -> Result:
        return self.runner.invoke(rollout_cli.app, list(args), env=self.env)

    def cli(self, *args: str) -> Result:
        return self.runner.invoke(cli_app(), list(args), env=self.env)

    def get(self, path: str, **params: Any) -> Any:
        with self.server.client(self.server.admin_token) as api:
            response = api.get(path, params=params)
            assert response.status_code == 200, response.text
            return response.json()


def status(
    device: SimDevice, loaded: list[str], slots: dict[str, str], active: str | None, state: str
) -> None:
    """The agent's status: every loaded version, and the updater's slots and state."""
    payload = StatusPayload(
        device_id=device.device_id,
        seq=device.next_seq(),
        online=True,
        profile=PROFILE,
        models=[ModelState(name=MODEL, version=v, format="onnx", precision="fp32") for v in loaded],
        ota=SlotState(
            active=active,
            slots={MODEL: {"active": active, **{s: {"version": v, "sha256": "0"} for s, v in slots.items()}}},
            state=state,
        ),
        will_seq=device.will_seq,
    )
    device.publish(Channel.STATUS, payload, retain=True)


def stored(tour: Tour, device: SimDevice) -> None:
    """Until the server stored what the device sent so far: a metrics message after it has landed
    (one connection, one subscription: the ingest gets the messages in order)."""
    device.publish(Channel.METRICS, device.metrics(requests=0))
    wait_until(
        lambda: (tour.get(f"/api/v1/devices/{DEVICE}")["latest_metrics"] or {}).get("seq") == device.seq,
        what="the device's messages stored",
    )


def ota(device: SimDevice, state: str, rollout_id: str) -> None:
    payload = OtaPayload(
        device_id=device.device_id,
        seq=device.next_seq(),
        model=MODEL,
        version="1.1.0",
        state=state,
        previous_version="1.0.0",
        rollout_id=rollout_id,
    )
    device.publish(Channel.OTA, payload)


def test_the_tours_rollout_with_an_idle_lab_device(fleet: FleetServer, tmp_path: Path) -> None:
    tour = Tour(fleet, tmp_path)
    with fleet.client(fleet.admin_token) as api:
        added = api.post("/api/v1/devices", json={"id": DEVICE, "profile": PROFILE, "tags": {"site": "a"}})
        assert added.status_code == 201, added.text
        credentials = added.json()["mqtt"]
    device = SimDevice(
        "127.0.0.1",
        fleet.mqtt_port,
        DEVICE,
        protocol=3,
        profile=PROFILE,
        models={MODEL: "1.0.0"},
        username=credentials["username"],
        password=credentials["password"],
    ).connect()
    try:
        stored(tour, device)  # its birth, and metrics of an idle device: it serves nothing
        created = tour.rollout(
            "create", f"{MODEL}:1.1.0", "--target", f"profile={PROFILE}", "--canary", "1", "--waves",
            "100%", "--bake", "1s", "--on-failure", "abort", "--json",
        )  # fmt: skip
        assert created.exit_code == 0, created.output
        rollout_id = json.loads(created.stdout)["id"]

        def detail() -> dict[str, Any]:
            return dict(tour.get(f"/api/v1/rollouts/{rollout_id}"))

        def running() -> str | None:
            return {d["device_id"]: d["running"] for d in detail()["device_list"]}[DEVICE]

        wait_until(lambda: detail()["wave"] == 0, what="the canary to start")
        # 5. The updater installs 1.1.0 beside 1.0.0; the version the device runs follows its switch.
        for state in ("downloading", "verifying", "staged"):
            ota(device, state, rollout_id)
        status(device, ["1.0.0", "1.1.0"], {"a": "1.1.0"}, None, "staged")
        stored(tour, device)
        assert running() == "1.0.0"
        ota(device, "switching", rollout_id)
        status(device, ["1.0.0", "1.1.0"], {"a": "1.1.0"}, None, "switching")
        stored(tour, device)
        assert running() == "1.1.0"
        ota(device, "watching", rollout_id)
        ota(device, "committed", rollout_id)
        status(device, ["1.1.0"], {"a": "1.1.0"}, "a", "committed")
        wait_until(
            lambda: (detail()["decision"] or {}).get("figures", {}).get("baseline") is not None,
            what="the gates to judge the committed canary",
        )

        # 4. No control: the gates compare against the canary's own past, which holds nothing.
        shown = tour.rollout("status", rollout_id)
        assert shown.exit_code == 0, shown.output
        assert "… waiting" in shown.output and "0/20 requests" in shown.output
        assert "control: none (no device outside the canary runs the old version)" in shown.output
        assert (
            "baseline: the canary's own 1.0.0 telemetry in the 10 min before its wave started" in shown.output
        )
        assert "nothing to compare against" in shown.output

        # 3. The operator promotes: promoted, by whom and why, everywhere.
        promoted = tour.rollout("promote", rollout_id, "--reason", "idle lab device")
        assert promoted.exit_code == 0, promoted.output
        after = detail()
        assert after["state"] == "completed"
        assert after["reason"] == "completed: canary promoted by admin (idle lab device)"
        assert after["wave_list"][0]["ended"]["how"] == "promoted"
        assert [(p["by"], p["reason"]) for p in after["promotions"]] == [("admin", "idle lab device")]
        shown = tour.rollout("status", rollout_id)
        assert "every wave committed and passed its gates" not in shown.output
        assert "completed: canary promoted by admin (idle lab device)" in shown.output
        assert "gates of the canary when admin promoted it" in shown.output
        assert "… waiting" not in shown.output
        listed = tour.rollout("ls")
        row = next(line for line in listed.output.splitlines() if rollout_id in line)
        assert "promoted by admin" in row
        audit = tour.cli("audit", "ls", "--target", rollout_id)
        assert audit.exit_code == 0, audit.output
        line = next(line for line in audit.output.splitlines() if "rollout.promote" in line)
        assert "token:admin" in line and "reason=idle lab device" in line
        (entry,) = tour.get("/api/v1/audit", action="rollout.promote", target=rollout_id)
        assert entry["actor"] == "token:admin" and entry["details"]["reason"] == "idle lab device"

        # 6. Watching a finished rollout says there is nothing to watch.
        wait_until(lambda: detail()["settled"], what="the rollout settled")
        watched = tour.rollout("status", rollout_id, "--watch", "--interval", "0.2")
        assert watched.exit_code == 0, watched.output
        assert watched.output.count(f"{rollout_id}  {MODEL} 1.1.0") == 1
        assert watched.output.rstrip().endswith("rollout completed; nothing to watch")
    finally:
        device.disconnect()
