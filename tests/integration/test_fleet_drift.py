"""Drift end to end: a real server, a pushed bundle with its reference, devices sending windows over MQTT.

The model is the digits nearest-centroid classifier of ``tests.support.sim_devices.DigitsScenario``,
its reference frozen from the calibration split as the converter does it. Three versions of the
bundle carry the same reference; devices send windows counted from:

- 1.0.0: the evaluation set as it is (four devices): no alert;
- 1.1.0: the evaluation set brightened x1.5 (two devices tagged ``site=bright``) beside two
  devices with plain traffic (``site=plain``): an alert on the input's channel mean, none on the
  predicted class;
- 1.2.0: only classes 0-2 of the evaluation set (two devices): an alert on the predicted class.

The drift monitor raises the alerts by itself (the ingest nudges it when windows arrive). PSI is
checked against a computation with numpy alone from the raw pixels. Two servers: Mosquitto with
SQLite, and the embedded broker with PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from edgefleet.cli import _console
from edgefleet.cli.drift import app as drift_app
from models.mqtt_contract import Channel
from tests.support.bundles import fixed_private_key
from tests.support.fleet_process import FleetServer
from tests.support.mosquitto import MosquittoBroker
from tests.support.postgres import fresh_database
from tests.support.sim_devices import DigitsScenario, SimDevice, metric, wait_ingest_ready, wait_until

pytestmark = pytest.mark.integration

MODEL = "digits-drift"
runner = CliRunner()


@dataclass
class DriftFleet:
    server: FleetServer
    broker_port: int
    protocol: int
    scenario: DigitsScenario

    def api(self) -> httpx.Client:
        return self.server.client(self.server.admin_token)

    def cli(self, *args: str) -> Any:
        env = {
            "EDGEFLEET_SERVER": self.server.url,
            "EDGEFLEET_TOKEN": self.server.admin_token,
            "EDGEFLEET_CLI_CONFIG": str(self.server.workdir / "no-cli-config.yaml"),
        }
        return runner.invoke(drift_app, list(args), env=env)

    def cli_json(self, *args: str) -> Any:
        result = self.cli(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def scenario() -> DigitsScenario:
    return DigitsScenario.build()


@pytest.fixture(
    scope="module", params=[("mosquitto", "sqlite"), ("embedded", "postgresql")], ids=lambda p: "-".join(p)
)
def drift_fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, scenario: DigitsScenario
) -> Iterator[DriftFleet]:
    broker_kind, backend = request.param
    workdir = tmp_path_factory.mktemp(f"drift-{broker_kind}-{backend}")
    key_path = workdir / "signer.pub.pem"
    key_path.write_bytes(
        fixed_private_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with ExitStack() as stack:
        db_url = stack.enter_context(fresh_database()) if backend == "postgresql" else None
        broker = None
        if broker_kind == "mosquitto":
            broker = MosquittoBroker(workdir=workdir / "mosquitto").start()
            stack.callback(broker.stop)
        server = FleetServer(
            workdir / "server",
            db_url=db_url,
            mqtt_url=broker.url if broker else None,
            trusted_keys=(key_path,),
        ).start()
        stack.callback(server.stop)
        wait_ingest_ready(server.url)
        fleet = DriftFleet(server, broker.port if broker else server.mqtt_port, 5 if broker else 3, scenario)
        _push_and_send(fleet, workdir)
        yield fleet


def _push_and_send(fleet: DriftFleet, workdir: Path) -> None:
    scenario = fleet.scenario
    with fleet.api() as api:
        for version in ("1.0.0", "1.1.0", "1.2.0"):
            bundle = scenario.bundle(workdir / "bundles", MODEL, version)
            pushed = api.post(
                "/api/v1/models",
                content=bundle.path.read_bytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert pushed.status_code == 201, pushed.text
        plan = {
            "1.0.0": [("eval", f"eval-{i}", "eval") for i in range(4)],
            "1.1.0": [("bright", f"bright-{i}", "bright") for i in range(2)]
            + [("eval", f"plain-{i}", "plain") for i in range(2)],
            "1.2.0": [("slice", f"slice-{i}", "slice") for i in range(2)],
        }
        for senders in plan.values():
            for _, device_id, site in senders:
                response = api.post(
                    "/api/v1/devices",
                    json={"id": device_id, "profile": "generic-x86", "tags": {"site": site}},
                )
                assert response.status_code == 201, response.text
    sent = 0
    for version, senders in plan.items():
        for seed, (kind, device_id, _) in enumerate(senders):
            device = SimDevice(
                "127.0.0.1", fleet.broker_port, device_id, protocol=fleet.protocol, models={MODEL: version}
            ).connect()
            repeats = 3 if kind == "slice" else 1  # a slice of three classes is 107 images
            for repeat in range(repeats):
                for window in scenario.windows(scenario.images(kind, seed=seed * 10 + repeat)):
                    device.publish(Channel.DRIFT, device.drift(MODEL, version, window))
                    sent += 1
            device.disconnect(goodbye=False)
    wait_until(
        lambda: (
            metric(fleet.server.url, "edgefleet_ingest_messages_total", channel="drift", outcome="stored")
            == sent
        ),
        what=f"{sent} drift windows stored",
    )


def alerts(fleet: DriftFleet, version: str, cohort: str = "all") -> dict[str, dict[str, Any]]:
    with fleet.api() as api:
        rows = api.get("/api/v1/alerts", params={"model": MODEL}).json()
    return {a["feature"]: a for a in rows if a["version"] == version and a["cohort"] == cohort}


def report(fleet: DriftFleet, version: str, **params: str) -> dict[str, Any]:
    with fleet.api() as api:
        response = api.get("/api/v1/drift", params={"model": MODEL, "version": version, **params})
    assert response.status_code == 200, response.text
    (only,) = response.json()
    return dict(only)


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_console.console, "_width", 300)


# --- the acceptance test -------------------------------------------------------------------------


def test_shifted_inputs_raise_alerts_on_the_right_features_and_eval_inputs_none(
    drift_fleet: DriftFleet,
) -> None:
    # The monitor evaluates by itself a few seconds after the windows arrived.
    wait_until(lambda: alerts(drift_fleet, "1.2.0"), timeout=60, what="the monitor's alerts")

    assert alerts(drift_fleet, "1.0.0") == {}
    plain = report(drift_fleet, "1.0.0")
    assert plain["samples"] == 4 * 360 and plain["devices"] == 4 and plain["level"] in ("ok", "warn")
    assert all(f["level"] in ("ok", "warn") and f["psi"] < 0.25 for f in plain["features"])

    bright = alerts(drift_fleet, "1.1.0")
    assert "input/channel_mean[0]" in bright
    assert "logits/class" not in bright
    assert bright["input/channel_mean[0]"]["metric"] in ("psi", "js")
    assert bright["input/channel_mean[0]"]["against"] == "reference"

    sliced = alerts(drift_fleet, "1.2.0")
    assert "logits/class" in sliced and sliced["logits/class"]["value"] > 0.25
    assert "input/channel_mean[0]" not in sliced

    # Evaluating again opens nothing new: an open alert is updated, not repeated.
    with drift_fleet.api() as api:
        evaluation = api.post("/api/v1/drift/evaluate").json()
    assert evaluation["opened"] == [] and evaluation["reports"] >= 6


def test_psi_agrees_with_numpy_on_the_raw_pixels(drift_fleet: DriftFleet) -> None:
    scenario = drift_fleet.scenario
    reference = json.loads(scenario.reference_json)
    (feature,) = [f for f in reference["features"] if f["name"] == "input/channel_mean[0]"]
    interior = np.asarray(feature["edges"], dtype=np.float64)
    k = len(interior) + 1
    calib_means = scenario.calib.astype(np.float64).mean(axis=(1, 2, 3))
    bright_means = np.concatenate(
        [scenario.images("bright", seed=seed).astype(np.float64).mean(axis=(1, 2, 3)) for seed in range(2)]
    )
    eps = 1e-4
    p = np.bincount(np.digitize(calib_means, interior), minlength=k) / len(calib_means)
    q = np.bincount(np.digitize(bright_means, interior), minlength=k) / len(bright_means)
    p, q = (p + eps) / (1 + k * eps), (q + eps) / (1 + k * eps)
    expected = float(np.sum((q - p) * np.log(q / p)))

    measured = report(drift_fleet, "1.1.0", cohort="tag:site=bright")
    (channel_mean,) = [f for f in measured["features"] if f["feature"] == "input/channel_mean[0]"]
    assert channel_mean["samples"] == 720
    assert abs(channel_mean["psi"] - expected) < 1e-6


def test_cohort_against_cohort_and_the_cli(drift_fleet: DriftFleet) -> None:
    reports = drift_fleet.cli_json(
        "show",
        "--model",
        MODEL,
        "--version",
        "1.1.0",
        "--cohort",
        "tag:site=bright",
        "--against",
        "cohort:tag:site=plain",
    )
    (only,) = reports
    assert (only["cohort"], only["against"]) == ("tag:site=bright", "cohort:tag:site=plain")
    assert (only["devices"], only["baseline_devices"], only["baseline_samples"]) == (2, 2, 720)
    levels = {f["feature"]: f["level"] for f in only["features"]}
    assert levels["input/channel_mean[0]"] == "alert" and levels["logits/class"] != "alert"

    table = drift_fleet.cli("show", "--model", MODEL, "--version", "1.2.0")
    assert table.exit_code == 0, table.output
    assert "logits/class" in table.stdout and "alert" in table.stdout and "1.2.0" in table.stdout

    every = drift_fleet.cli_json("show", "--model", MODEL)
    assert {r["version"] for r in every} == {"1.0.0", "1.1.0", "1.2.0"}

    listed = drift_fleet.cli_json("alerts", "--model", MODEL)
    assert {(a["version"], a["feature"]) for a in listed} >= {
        ("1.1.0", "input/channel_mean[0]"),
        ("1.2.0", "logits/class"),
    }
    human = drift_fleet.cli("alerts", "--model", MODEL)
    assert human.exit_code == 0 and "logits/class" in human.stdout

    bad = drift_fleet.cli("show", "--cohort", "site=bright")
    assert bad.exit_code == 1 and "tag:KEY=VALUE" in bad.output


def test_alerts_are_audited_counted_and_resolvable(drift_fleet: DriftFleet) -> None:
    wait_until(lambda: alerts(drift_fleet, "1.2.0"), timeout=60, what="the monitor's alerts")
    url = drift_fleet.server.url
    assert metric(url, "edgefleet_drift_alerts_total", event="opened") >= 2
    assert metric(url, "edgefleet_drift_evaluations_total") >= 1
    score = metric(
        url,
        "edgefleet_drift_score",
        model=MODEL,
        version="1.2.0",
        cohort="all",
        feature="logits/class",
        metric="psi",
    )
    assert score > 0.25
    with drift_fleet.api() as api:
        audit = api.get("/api/v1/audit", params={"action": "drift.alert"}).json()
        assert any(entry["target"] == f"{MODEL}:1.2.0:logits/class" for entry in audit)
        alert = alerts(drift_fleet, "1.2.0")["logits/class"]
        viewer = api.post("/api/v1/tokens", json={"name": "drift-viewer", "role": "viewer"}).json()["token"]
        refused = httpx.post(
            f"{url}/api/v1/alerts/{alert['id']}/resolve", headers={"Authorization": f"Bearer {viewer}"}
        )
        assert refused.status_code == 403
        resolved = api.post(
            f"/api/v1/alerts/{alert['id']}/resolve", json={"note": "known: a class-only site"}
        )
        assert resolved.status_code == 200 and resolved.json()["resolved_at"] is not None
        again = api.post(f"/api/v1/alerts/{alert['id']}/resolve")
        assert again.status_code == 409
        closed = api.get("/api/v1/alerts", params={"state": "resolved", "model": MODEL}).json()
    assert alert["id"] in {a["id"] for a in closed}
