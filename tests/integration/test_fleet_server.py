"""The fleet server as operators and devices meet it: a real `edgefleet server run` process, on
SQLite and on PostgreSQL, driven through the real CLI and plain HTTP.

One server per backend serves the whole module (starting one costs seconds); every test uses
its own device ids and model names, so tests do not depend on each other's order.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import queue
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from edgefleet.cli import _console
from fleet.devices.credentials import verify_mqtt_password
from models.bundle import BundleError, load_public_key, verify_bundle
from tests.support.bundles import TAMPER_CASES, BuiltBundle, build_test_bundle, fixed_private_key
from tests.support.fleet_process import FleetServer, cli_app
from tests.support.mosquitto import MosquittoBroker
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.integration

runner = CliRunner()


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signer_public_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "signer.pub.pem"
    public = fixed_private_key().public_key()
    path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, signer_public_key: Path
) -> Iterator[FleetServer]:
    with ExitStack() as stack:
        db_url = stack.enter_context(fresh_database()) if request.param == "postgresql" else None
        server = FleetServer(
            tmp_path_factory.mktemp(f"fleet-{request.param}"),
            db_url=db_url,
            trusted_keys=(signer_public_key,),
        ).start()
        stack.callback(server.stop)
        yield server


@pytest.fixture(scope="module")
def tokens(fleet: FleetServer) -> dict[str, str]:
    """A token per role; the admin's is the one the server wrote on first start."""
    result = {"admin": fleet.admin_token}
    with fleet.client(fleet.admin_token) as api:
        for role in ("operator", "viewer"):
            response = api.post("/api/v1/tokens", json={"name": f"test-{role}", "role": role})
            assert response.status_code == 201, response.text
            result[role] = response.json()["token"]
    return result


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_console.console, "_width", 300)
    monkeypatch.setattr(_console.err_console, "_width", 300)


def cli(fleet: FleetServer, token: str | None, *args: str, tmp_path: Path | None = None) -> Any:
    env = {
        "EDGEFLEET_SERVER": fleet.url,
        "EDGEFLEET_TOKEN": token or "",
        "EDGEFLEET_CLI_CONFIG": str((tmp_path or fleet.workdir) / "no-cli-config.yaml"),
    }
    return runner.invoke(cli_app(), list(args), env=env)


def cli_json(fleet: FleetServer, token: str, *args: str) -> Any:
    result = cli(fleet, token, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def make_bundle(tmp_path: Path, name: str, version: str = "1.0.0", **overrides: Any) -> BuiltBundle:
    return build_test_bundle(tmp_path / f"{name}-{version}", name=name, version=version, **overrides)


# --- devices through the CLI ---------------------------------------------------------------------


def test_cli_round_trip_add_then_list(fleet: FleetServer, tokens: dict[str, str]) -> None:
    created = cli_json(
        fleet,
        tokens["operator"],
        "devices",
        "add",
        "rt-cam-1",
        "--profile",
        "raspberry-pi-5",
        "--tag",
        "site=lab",
    )
    assert created["device"]["id"] == "rt-cam-1"
    assert created["mqtt"]["username"] == "rt-cam-1"
    assert len(created["mqtt"]["password"]) >= 32
    assert created["mqtt"]["topic_prefix"] == "edgefleet/v1/default/rt-cam-1"
    cli_json(
        fleet,
        tokens["operator"],
        "devices",
        "add",
        "rt-cam-2",
        "--profile",
        "jetson-orin-nano",
        "--tag",
        "site=field",
    )

    listed = {d["id"]: d for d in cli_json(fleet, tokens["viewer"], "devices", "ls")}
    assert {"rt-cam-1", "rt-cam-2"} <= listed.keys()
    assert listed["rt-cam-1"]["tags"] == {"site": "lab"}
    assert listed["rt-cam-1"]["profile"] == "raspberry-pi-5"
    assert listed["rt-cam-1"]["online"] is False
    assert listed["rt-cam-1"]["has_credentials"] is True

    by_tag = [d["id"] for d in cli_json(fleet, tokens["viewer"], "devices", "ls", "--tag", "site=lab")]
    assert "rt-cam-1" in by_tag and "rt-cam-2" not in by_tag
    by_profile = [
        d["id"] for d in cli_json(fleet, tokens["viewer"], "devices", "ls", "--profile", "jetson-orin-nano")
    ]
    assert "rt-cam-2" in by_profile and "rt-cam-1" not in by_profile
    online = [d["id"] for d in cli_json(fleet, tokens["viewer"], "devices", "ls", "--online")]
    offline = [d["id"] for d in cli_json(fleet, tokens["viewer"], "devices", "ls", "--offline")]
    assert "rt-cam-1" not in online and "rt-cam-1" in offline

    table = cli(fleet, tokens["viewer"], "devices", "ls", "--tag", "site=lab")
    assert table.exit_code == 0, table.output
    assert "rt-cam-1" in table.stdout and "raspberry-pi-5" in table.stdout and "rt-cam-2" not in table.stdout


def test_cli_tag_and_show(fleet: FleetServer, tokens: dict[str, str]) -> None:
    cli_json(fleet, tokens["operator"], "devices", "add", "tag-cam", "--tag", "site=lab", "--tag", "line=1")
    tagged = cli_json(
        fleet, tokens["operator"], "devices", "tag", "tag-cam", "site=field", "rack=7", "--remove", "line"
    )
    assert tagged["tags"] == {"site": "field", "rack": "7"}
    shown = cli_json(fleet, tokens["viewer"], "devices", "show", "tag-cam")
    assert shown["tags"] == {"site": "field", "rack": "7"}
    human = cli(fleet, tokens["viewer"], "devices", "show", "tag-cam")
    assert human.exit_code == 0 and "rack=7" in human.stdout


def test_cli_errors_say_what_to_do(fleet: FleetServer, tokens: dict[str, str], tmp_path: Path) -> None:
    cli_json(fleet, tokens["operator"], "devices", "add", "dup-cam")
    again = cli(fleet, tokens["operator"], "devices", "add", "dup-cam")
    assert again.exit_code == 1
    assert "already registered" in again.stderr and "Traceback" not in again.output

    missing = cli(fleet, tokens["viewer"], "devices", "show", "no-such-device")
    assert missing.exit_code == 1 and "no device 'no-such-device'" in missing.stderr

    bad_tag = cli(fleet, tokens["operator"], "devices", "add", "x-cam", "--tag", "novalue")
    assert bad_tag.exit_code == 2 and "KEY=VALUE" in bad_tag.stderr

    with fleet.client(tokens["operator"]) as api:
        invalid = api.post("/api/v1/devices", json={"id": "bad/id", "colour": "red"})
    assert invalid.status_code == 422
    assert invalid.json()["error"] == "invalid_request"
    assert "id:" in invalid.json()["message"] and "colour" in invalid.json()["message"]

    unreachable = runner.invoke(
        cli_app(),
        ["devices", "ls", "--server", "http://127.0.0.1:9"],
        env={"EDGEFLEET_TOKEN": "x", "EDGEFLEET_CLI_CONFIG": str(tmp_path / "none.yaml")},
    )
    assert unreachable.exit_code == 1
    assert "cannot reach http://127.0.0.1:9" in unreachable.stderr
    assert "edgefleet server run" in unreachable.stderr and "--server" in unreachable.stderr


# --- auth ----------------------------------------------------------------------------------------


def test_no_token_is_401_and_viewer_is_403(
    fleet: FleetServer, tokens: dict[str, str], tmp_path: Path
) -> None:
    with fleet.client() as anonymous:
        response = anonymous.get("/api/v1/devices")
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    with fleet.client("eft_" + "x" * 43) as forged:
        assert forged.get("/api/v1/devices").status_code == 401
    with fleet.client(tokens["viewer"]) as viewer:
        assert viewer.get("/api/v1/devices").status_code == 200
        refused = viewer.post("/api/v1/devices", json={"id": "viewer-cam"})
        assert refused.status_code == 403
        assert refused.json()["error"] == "forbidden"
        assert viewer.patch("/api/v1/devices/any/tags", json={"set": {"a": "b"}}).status_code == 403
        assert viewer.post("/api/v1/enrollment-tokens", json={}).status_code == 403

    bundle = make_bundle(tmp_path, "viewer-model")
    as_viewer = cli(fleet, tokens["viewer"], "models", "push", str(bundle.path))
    assert as_viewer.exit_code == 1
    assert "HTTP 403" in as_viewer.stderr and "viewer" in as_viewer.stderr
    anonymous_push = cli(fleet, None, "models", "push", str(bundle.path))
    assert anonymous_push.exit_code == 1 and "HTTP 401" in anonymous_push.stderr
    assert "EDGEFLEET_TOKEN" in anonymous_push.stderr
    with fleet.client(tokens["viewer"]) as viewer:
        assert viewer.get("/api/v1/models/viewer-model").status_code == 404


def test_tokens_roles_and_revocation(fleet: FleetServer, tokens: dict[str, str]) -> None:
    made = cli_json(fleet, tokens["admin"], "tokens", "create", "--role", "viewer", "--name", "ci-reader")
    assert made["role"] == "viewer" and made["token"].startswith("eft_")
    assert cli_json(fleet, made["token"], "tokens", "whoami")["role"] == "viewer"

    by_operator = cli(fleet, tokens["operator"], "tokens", "create", "--role", "admin", "--name", "escalate")
    assert by_operator.exit_code == 1 and "HTTP 403" in by_operator.stderr

    listed = cli_json(fleet, tokens["admin"], "tokens", "ls")
    assert "ci-reader" in {t["name"] for t in listed}
    assert all("token" not in t for t in listed)  # hashes only, never the tokens

    assert cli(fleet, tokens["admin"], "tokens", "revoke", "ci-reader").exit_code == 0
    revoked = cli(fleet, made["token"], "tokens", "whoami")
    assert revoked.exit_code == 1 and "HTTP 401" in revoked.stderr


# --- the model registry --------------------------------------------------------------------------


def test_push_good_bundle_then_list_and_show(
    fleet: FleetServer, tokens: dict[str, str], tmp_path: Path
) -> None:
    first = make_bundle(tmp_path, "reg-model", "1.0.0")
    second = make_bundle(
        tmp_path, "reg-model", "1.2.0", precision="int8", validation={"top1_agreement": 0.97}
    )
    pushed = cli_json(fleet, tokens["operator"], "models", "push", str(first.path))
    assert pushed["created"] is True
    assert pushed["bundle"]["sha256"] == hashlib.sha256(first.path.read_bytes()).hexdigest()
    assert (
        fleet.data_dir / "bundles" / f"{pushed['bundle']['sha256']}.efb"
    ).read_bytes() == first.path.read_bytes()
    assert cli_json(fleet, tokens["operator"], "models", "push", str(second.path))["created"] is True

    repeat = cli_json(fleet, tokens["operator"], "models", "push", str(first.path))
    assert repeat["created"] is False and repeat["bundle"]["sha256"] == pushed["bundle"]["sha256"]

    summary = {m["name"]: m for m in cli_json(fleet, tokens["viewer"], "models", "ls")}["reg-model"]
    assert summary["versions"] == ["1.2.0", "1.0.0"]
    assert summary["latest_version"] == "1.2.0"
    assert summary["profiles"] == [first.manifest.profile]
    assert summary["formats"] == ["onnx"] and summary["precisions"] == ["fp32", "int8"]

    version = cli_json(fleet, tokens["viewer"], "models", "show", "reg-model", "1.2.0")
    (bundle,) = version["bundles"]
    assert bundle["validation"] == second.manifest.validation
    assert bundle["benchmark"] == second.manifest.benchmark
    assert bundle["manifest"]["precision"] == "int8"
    human = cli(fleet, tokens["viewer"], "models", "show", "reg-model")
    assert human.exit_code == 0 and "1.2.0" in human.stdout and "top1_agreement=0.97" in human.stdout


def test_same_version_with_other_bytes_is_a_conflict(
    fleet: FleetServer, tokens: dict[str, str], tmp_path: Path
) -> None:
    original = make_bundle(tmp_path / "a", "clash-model")
    changed = make_bundle(tmp_path / "b", "clash-model", labels={"note": "rebuilt"})
    assert original.path.read_bytes() != changed.path.read_bytes()
    assert cli(fleet, tokens["operator"], "models", "push", str(original.path)).exit_code == 0
    with fleet.client(tokens["operator"]) as api:
        response = api.post(
            "/api/v1/models",
            content=changed.path.read_bytes(),
            headers={"content-type": "application/octet-stream"},
        )
    assert response.status_code == 409
    assert (
        response.json()["details"]["existing_sha256"]
        == hashlib.sha256(original.path.read_bytes()).hexdigest()
    )
    assert "bump the version" in response.json()["hint"]


TAMPERED = {"model-byte", "manifest-field", "wrong-key", "extra-file", "not-a-tar"}


@pytest.mark.parametrize("case", [c for c in TAMPER_CASES if c.id in TAMPERED], ids=lambda c: c.id)
def test_tampered_bundle_is_refused_with_the_verifiers_message(
    fleet: FleetServer, tokens: dict[str, str], tmp_path: Path, signer_public_key: Path, case: Any
) -> None:
    good = make_bundle(tmp_path, f"tamper-{case.id}")
    bad = tmp_path / "tampered.efb"
    case.make(good, bad)
    with pytest.raises(BundleError) as expected:  # what the verifier itself says about this file
        verify_bundle(bad, [load_public_key(signer_public_key)])

    with fleet.client(tokens["operator"]) as api:
        response = api.post(
            "/api/v1/models", content=bad.read_bytes(), headers={"content-type": "application/octet-stream"}
        )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == expected.value.code
    assert body["message"] == expected.value.message.replace(str(bad), "the uploaded bundle")
    assert body["hint"] == expected.value.hint

    result = cli(fleet, tokens["operator"], "models", "push", str(bad))
    assert result.exit_code == expected.value.exit_code
    assert body["message"][:60] in result.stderr.replace("\n", "")
    with fleet.client(tokens["viewer"]) as api:
        assert api.get(f"/api/v1/models/tamper-{case.id}").status_code == 404
        audit = api.get("/api/v1/audit", params={"action": "model.push"}).json()
    assert any(e["outcome"] == "refused" and e["details"]["error"] == expected.value.code for e in audit)
    assert not list((fleet.data_dir / "uploads").glob("*.part"))


# --- downloads with Range ------------------------------------------------------------------------


def test_interrupted_download_resumes_with_range(
    fleet: FleetServer, tokens: dict[str, str], tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path, "range-model", extra_files={"weights.bin": bytes(range(256)) * 400})
    data = bundle.path.read_bytes()
    sha = cli_json(fleet, tokens["operator"], "models", "push", str(bundle.path))["bundle"]["sha256"]
    url = f"/api/v1/bundles/{sha}"
    etag = f'"{sha}"'

    received = bytearray()
    with fleet.client(tokens["viewer"]) as api:
        with api.stream("GET", url) as response:  # the connection drops part way through
            assert response.status_code == 200
            assert response.headers["accept-ranges"] == "bytes"
            assert response.headers["etag"] == etag
            assert int(response.headers["content-length"]) == len(data)
            for chunk in response.iter_bytes(4096):
                received += chunk
                if len(received) >= len(data) // 3:
                    break
        start = len(received)
        resumed = api.get(url, headers={"Range": f"bytes={start}-", "If-Range": etag})
        assert resumed.status_code == 206
        assert resumed.headers["content-range"] == f"bytes {start}-{len(data) - 1}/{len(data)}"
        assert int(resumed.headers["content-length"]) == len(data) - start
        received += resumed.content
        assert hashlib.sha256(received).hexdigest() == sha
        assert bytes(received) == data

        middle = api.get(url, headers={"Range": "bytes=100-199"})
        assert middle.status_code == 206 and middle.content == data[100:200]
        suffix = api.get(url, headers={"Range": "bytes=-50"})
        assert suffix.status_code == 206 and suffix.content == data[-50:]
        past_end = api.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert past_end.status_code == 416
        assert past_end.headers["content-range"] == f"bytes */{len(data)}"
        stale = api.get(url, headers={"Range": "bytes=0-9", "If-Range": '"0000"'})
        assert stale.status_code == 200 and stale.content == data  # a changed validator restarts
        head = api.head(url, headers={"Range": "bytes=10-19"})
        assert head.status_code == 206 and head.headers["content-length"] == "10" and head.content == b""
        assert api.get(url, headers={"If-None-Match": etag}).status_code == 304
        assert api.get("/api/v1/bundles/" + "0" * 64).status_code == 404


def test_devices_download_with_their_mqtt_credentials(
    fleet: FleetServer, tokens: dict[str, str], tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path, "device-download-model")
    sha = cli_json(fleet, tokens["operator"], "models", "push", str(bundle.path))["bundle"]["sha256"]
    mqtt_credentials = cli_json(fleet, tokens["operator"], "devices", "add", "dl-cam")["mqtt"]
    url = f"{fleet.url}/api/v1/bundles/{sha}"
    good = httpx.get(url, auth=(mqtt_credentials["username"], mqtt_credentials["password"]))
    assert good.status_code == 200 and good.content == bundle.path.read_bytes()
    assert httpx.get(url, auth=("dl-cam", "wrong-password")).status_code == 401
    assert httpx.get(url).status_code == 401


# --- audit, health, metrics, docs ----------------------------------------------------------------


def test_mutations_are_audited(fleet: FleetServer, tokens: dict[str, str]) -> None:
    cli_json(fleet, tokens["operator"], "devices", "add", "audit-cam", "--tag", "site=lab")
    cli_json(fleet, tokens["operator"], "devices", "tag", "audit-cam", "site=field")
    entries = cli_json(fleet, tokens["viewer"], "audit", "ls", "--action", "device.")
    mine = [e for e in entries if e["target"] == "audit-cam"]
    assert [e["action"] for e in mine] == ["device.tag", "device.add"]  # newest first
    assert all(e["actor"] == "token:test-operator" and e["actor_role"] == "operator" for e in mine)
    assert mine[0]["details"]["set"] == {"site": "field"}


def test_enrollment_token_is_shown_once_and_stored_hashed(fleet: FleetServer, tokens: dict[str, str]) -> None:
    made = cli_json(
        fleet, tokens["operator"], "devices", "enroll-token", "--fleet", "plant-7", "--ttl-hours", "2"
    )
    assert made["token"].startswith("efe_") and made["fleet"] == "plant-7"
    with fleet.client(tokens["viewer"]) as api:
        audit = api.get("/api/v1/audit", params={"action": "enrollment."}).json()
    assert any(e["target"] == str(made["id"]) for e in audit)
    assert all(made["token"] not in json.dumps(e) for e in audit)


def test_readiness_metrics_and_docs(fleet: FleetServer, tokens: dict[str, str]) -> None:
    with fleet.client() as api:
        assert api.get("/api/v1/models").status_code == 401  # counted as an auth failure
        ready = api.get("/readyz")
        assert ready.status_code == 200, ready.text
        checks = {c["name"]: c for c in ready.json()["checks"]}
        assert set(checks) == {"database", "migrations", "broker"} and all(c["ok"] for c in checks.values())
        assert api.get("/docs").status_code == 200
        paths = api.get("/openapi.json").json()["paths"]
        assert {"/api/v1/devices", "/api/v1/models", "/api/v1/bundles/{sha256}"} <= paths.keys()
        with fleet.client(tokens["viewer"]) as viewer:
            devices = viewer.get("/api/v1/devices").json()
            bundles = sum(m["bundles"] for m in viewer.get("/api/v1/models").json())
        text = api.get("/metrics").text
    samples = _samples(text)
    assert samples[("edgefleet_devices", 'state="offline"')] == sum(not d["online"] for d in devices)
    assert samples[("edgefleet_bundles", "")] == bundles
    assert (
        samples[("edgefleet_http_requests_total", 'method="GET",route="/api/v1/devices",status="200"')] >= 1
    )
    assert samples[("edgefleet_auth_failures_total", 'reason="missing"')] >= 1


def _samples(text: str) -> dict[tuple[str, str], float]:
    samples: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        samples[(name, labels.rstrip("}"))] = float(value)
    return samples


# --- MQTT credentials under a real Mosquitto ------------------------------------------------------


class _Client:
    """A paho MQTT 5 client that records what happens, for assertions."""

    def __init__(self, broker: MosquittoBroker, username: str, password: str) -> None:
        self.connected: queue.Queue[Any] = queue.Queue()
        self.acks: queue.Queue[tuple[int, Any]] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"{username}-test", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connected.put(rc)
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.acks.put((mid, rc))
        self.client.on_subscribe = lambda _c, _u, mid, rcs, _p: self.acks.put((mid, rcs))
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.connect_result = self.connected.get(timeout=10)

    def publish(self, topic: str, payload: bytes) -> Any:
        info = self.client.publish(topic, payload, qos=1)
        mid, reason = self.acks.get(timeout=10)
        assert mid == info.mid
        return reason

    def subscribe(self, topic: str) -> Any:
        _, mid = self.client.subscribe(topic, qos=1)
        got, reasons = self.acks.get(timeout=10)
        assert got == mid
        return reasons

    def next_message(self) -> tuple[str, bytes]:
        return self.messages.get(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker_auth_dir() -> Iterator[Path | None]:
    """Mosquitto started as root drops to the `mosquitto` user before it reads the password file,
    and pytest's temporary directories are private to root: that user gets its own directory, as
    an operator would give it /etc/mosquitto. None when the tests do not run as root."""
    if os.geteuid() != 0:
        yield None
        return
    target = Path(tempfile.mkdtemp(prefix="edgefleet-mosquitto-auth-"))
    account = pwd.getpwnam("mosquitto")
    os.chown(target, account.pw_uid, account.pw_gid)
    try:
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _hand_to_broker(directory: Path, target: Path | None, name: str) -> Path:
    if target is None:
        return directory / name
    copy = target / name
    shutil.copyfile(directory / name, copy)
    copy.chmod(0o600)
    account = pwd.getpwnam("mosquitto")
    os.chown(copy, account.pw_uid, account.pw_gid)
    return copy


def test_generated_acl_confines_each_device_to_its_own_topics(
    fleet: FleetServer,
    tokens: dict[str, str],
    mosquitto: MosquittoBroker,
    broker_auth_dir: Path | None,
    tmp_path: Path,
) -> None:
    a = cli_json(fleet, tokens["operator"], "devices", "add", "acl-a", "--fleet", "acl")["mqtt"]
    b = cli_json(fleet, tokens["operator"], "devices", "add", "acl-b", "--fleet", "acl")["mqtt"]
    out = tmp_path / "mosquitto-auth"
    exported = cli_json(fleet, tokens["admin"], "devices", "credentials", "--out", str(out))
    assert {"passwd", "acl", "server.password"} <= exported["files"].keys()
    assert (out / "passwd").stat().st_mode & 0o777 == 0o600
    server_user, server_password = exported["server_username"], (out / "server.password").read_text().strip()
    assert (
        cli(fleet, tokens["operator"], "devices", "credentials", "--out", str(out)).exit_code == 1
    )  # admin only

    mosquitto.stop()
    mosquitto.password_file = _hand_to_broker(out, broker_auth_dir, "passwd")
    mosquitto.acl_file = _hand_to_broker(out, broker_auth_dir, "acl")
    mosquitto.start()

    watcher = _Client(mosquitto, server_user, server_password)
    device_a = _Client(mosquitto, a["username"], a["password"])
    device_b = _Client(mosquitto, b["username"], b["password"])
    intruder = _Client(mosquitto, a["username"], "not-the-password")
    try:
        assert str(watcher.connect_result) == "Success" and str(device_a.connect_result) == "Success"
        assert str(intruder.connect_result) != "Success"
        watcher.subscribe("edgefleet/v1/#")

        # A publishes on B's topic first, then on its own: Mosquitto keeps one client's order, so
        # once A's own message arrives, the forged one would already have been delivered.
        assert str(device_a.publish("edgefleet/v1/acl/acl-b/metrics", b"forged by A")) == "Not authorized"
        assert str(device_a.publish("edgefleet/v1/acl/acl-a/metrics", b"from A")) == "Success"
        assert watcher.next_message() == ("edgefleet/v1/acl/acl-a/metrics", b"from A")
        assert str(device_b.publish("edgefleet/v1/acl/acl-b/metrics", b"from B")) == "Success"
        assert watcher.next_message() == ("edgefleet/v1/acl/acl-b/metrics", b"from B")
        assert str(device_a.publish("edgefleet/v1/acl/acl-a/desired", b"x")) == "Not authorized"

        # Desired state: each device reads its own only.
        device_a.subscribe("edgefleet/v1/acl/+/desired")
        watcher.publish("edgefleet/v1/acl/acl-b/desired", b"for B")
        watcher.publish("edgefleet/v1/acl/acl-a/desired", b"for A")
        assert device_a.next_message() == ("edgefleet/v1/acl/acl-a/desired", b"for A")
        assert device_a.messages.empty()
    finally:
        for client in (watcher, device_a, device_b, intruder):
            client.close()


def test_hashes_interoperate_with_mosquitto_passwd(tmp_path: Path) -> None:
    """mosquitto_passwd writes what we verify (the broker test above checks the other direction)."""
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "dev-x", "s3cret-pass"], check=True)
    username, encoded = passwd.read_text().strip().split(":", 1)
    assert username == "dev-x"
    assert verify_mqtt_password("s3cret-pass", encoded)
    assert not verify_mqtt_password("s3cret-pasS", encoded)
