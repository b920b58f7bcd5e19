"""Helpers for the OTA integration tests (no tests here; the module sits beside the tests).

- ``BundleServer``: a small HTTP server that serves bundles by sha256 with Range and If-Range,
  like the fleet server does, and records every request's ``Range`` header and what it sent.
  It can break its next response off after N bytes, or stall there, to test resuming.
- ``OtaAgent`` and ``main``: the real ``edgefleet agent run`` (its flags, configuration, logging,
  signals and ready line) with the updater wired in, until ``edge_agent.agent`` wires it itself:
  ``python -m tests.integration.test_ota_agent_support --mqtt ... --device-id ...``. The updater's
  own settings come from ``EDGEFLEET_OTA_SETTINGS`` (JSON; see ``ota_settings``).
- ``publish_desired``: the fleet's half of the contract, a retained desired state on the broker.
- ``OtaAgentProcess``: that agent as a real, restartable (and killable) process on one data
  directory; ``InferenceLoad``: tritonclient traffic from a thread; ``Fleet``: a real fleet server
  with devices provisioned and bundles pushed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.ota import (
    PAUSE_ENV,
    PAUSE_MARKER,
    Credentials,
    DownloadSettings,
    StepTimeouts,
    UpdaterSettings,
    WatchPolicy,
)
from edge_agent.ota.updater import JOURNAL_FILE
from edge_agent.ready import READY_LINE
from models.mqtt_contract import Channel, DesiredModel, DesiredState, encode, topic
from tests.support.fleet_process import FleetServer
from tests.support.net import free_port
from tests.support.ota_bundles import Release

OTA_SETTINGS_ENV = "EDGEFLEET_OTA_SETTINGS"
_RANGE = re.compile(r"bytes=(\d+)-$")


# --- a bundle server that remembers what it was asked ---------------------------------------------


@dataclass
class Seen:
    """One request, recorded when it arrives; ``sent`` grows as its body goes out."""

    path: str
    range: str | None
    status: int
    sent: int = 0


@dataclass
class BundleServer:
    """Serves registered releases at ``/bundles/<sha256>`` on a free port, in a thread."""

    username: str | None = None
    password: str | None = None
    chunk_bytes: int = 4096
    seen: list[Seen] = field(default_factory=list)
    cut_at: dict[str, int] = field(default_factory=dict)
    """sha256 → break the next response for it off after this many body bytes (once)."""
    stall_at: dict[str, int] = field(default_factory=dict)
    """sha256 → hold every response for it after this many body bytes, until ``unstall``/``stop``."""
    _files: dict[str, Path] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, release: Release) -> str:
        self._files[release.sha256] = release.path
        return self.url_for(release)

    def url_for(self, release: Release) -> str:
        return f"{self.base_url}/bundles/{release.sha256}"

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def requests_for(self, release: Release) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.seen if seen.path.endswith(release.sha256)]

    def unstall(self) -> None:
        self.stall_at.clear()

    def start(self) -> BundleServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> BundleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, handler: BaseHTTPRequestHandler, status: int) -> Seen:
        seen = Seen(handler.path, handler.headers.get("Range"), status)
        with self._lock:
            self.seen.append(seen)
        return seen

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        if self.username is not None:
            expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if handler.headers.get("Authorization") != f"Basic {expected}":
                self._record(handler, 401)
                handler.send_error(401)
                return
        sha = handler.path.rsplit("/", 1)[-1]
        path = self._files.get(sha)
        if path is None:
            self._record(handler, 404)
            handler.send_error(404)
            return
        data = path.read_bytes()
        first = 0
        match = _RANGE.match(handler.headers.get("Range") or "")
        if match and handler.headers.get("If-Range", f'"{sha}"') == f'"{sha}"':
            first = int(match.group(1))
        if first >= len(data) and first:
            self._record(handler, 416)
            handler.send_error(416)
            return
        status = 206 if first else 200
        seen = self._record(handler, status)
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(data) - first))
        handler.send_header("ETag", f'"{sha}"')
        if first:
            handler.send_header("Content-Range", f"bytes {first}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        cut = self.cut_at.pop(sha, None)
        position = first
        try:
            while position < len(data):
                stall = self.stall_at.get(sha)
                if stall is not None and seen.sent >= stall:
                    handler.wfile.flush()
                    if self._stopping.wait(0.02):
                        break
                    continue
                limit = min(
                    x
                    for x in (self.chunk_bytes, _left(cut, seen.sent), _left(stall, seen.sent))
                    if x is not None
                )
                if limit <= 0:
                    break  # the cut: the connection closes mid-body
                chunk = data[position : position + limit]
                handler.wfile.write(chunk)
                position += len(chunk)
                seen.sent += len(chunk)
            handler.wfile.flush()
        except OSError:
            pass  # the client went away (killed agents do)
        if cut is not None:
            handler.close_connection = True


def _left(limit: int | None, sent: int) -> int | None:
    return None if limit is None else limit - sent


# --- desired states ------------------------------------------------------------------------------


def desired_state(revision: int, releases: Mapping[str, tuple[Release, str]], **options: Any) -> DesiredState:
    """``releases``: model name → (release, bundle URL)."""
    return DesiredState(
        revision=revision,
        models={
            name: DesiredModel(
                version=release.version,
                bundle_sha256=release.sha256,
                bundle_size=release.size,
                bundle_url=url,
                **options,
            )
            for name, (release, url) in releases.items()
        },
    )


def publish_desired(
    broker_host: str, broker_port: int, fleet: str, device: str, desired: DesiredState
) -> None:
    """Publish ``desired`` retained, as the fleet server does, and wait for the broker's PUBACK."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"fleet-test-{time.monotonic_ns()}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.connect(broker_host, broker_port)
    client.loop_start()
    try:
        info = client.publish(topic(fleet, device, Channel.DESIRED), encode(desired), qos=1, retain=True)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), "the broker did not acknowledge the desired state"
    finally:
        client.disconnect()
        client.loop_stop()


# --- the agent process with the updater ----------------------------------------------------------


def ota_settings(config: AgentConfig, env: Mapping[str, str]) -> UpdaterSettings:
    """``EDGEFLEET_OTA_SETTINGS``: {"fleet_url", "watch": {...}, "timeouts": {...}, "download": {...},
    "max_attempts", "warmup_runs"}; download credentials are the agent's MQTT credentials."""
    raw: dict[str, Any] = json.loads(env.get(OTA_SETTINGS_ENV) or "{}")
    password = config.password()
    credentials = (
        Credentials(config.mqtt_username, password or "") if config.mqtt_username is not None else None
    )
    return UpdaterSettings(
        fleet_url=raw.get("fleet_url"),
        credentials=credentials,
        download=DownloadSettings(**raw.get("download", {})),
        watch=WatchPolicy(**raw.get("watch", {})),
        timeouts=StepTimeouts(**raw.get("timeouts", {})),
        warmup_runs=raw.get("warmup_runs", 3),
        max_attempts=raw.get("max_attempts", 3),
    )


def _agent_class() -> type[Agent]:
    class OtaAgent(Agent):
        """``Agent`` whose updater settings (short watch windows and timeouts) come from the test."""

        def updater_settings(self, config: AgentConfig) -> UpdaterSettings:
            return ota_settings(config, os.environ)

    return OtaAgent


def main() -> None:
    """``edgefleet agent run`` with ``OtaAgent`` in place of ``Agent``."""
    import typer

    import edge_agent.agent
    from edgefleet.cli import agent_run

    edge_agent.agent.Agent = _agent_class()  # type: ignore[misc]  # the test hook: see _agent_class
    typer.run(agent_run.run)


if __name__ == "__main__":
    main()


# --- agent processes -----------------------------------------------------------------------------


@dataclass
class OtaAgentProcess:
    """A real agent process (this module's ``main``) on one data directory, restartable."""

    workdir: Path
    broker_url: str
    device: str
    bundle: Path
    trusted_key: Path
    fleet: str = "lab"
    username: str | None = None
    password: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    grpc_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"agent-{self.runs}.log"

    def command(self) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "tests.integration.test_ota_agent_support",
            "--mqtt",
            self.broker_url,
            "--fleet",
            self.fleet,
            "--device-id",
            self.device,
            "--bundle",
            str(self.bundle),
            "--trusted-key",
            str(self.trusted_key),
            "--grpc",
            f"127.0.0.1:{self.grpc_port}",
            "--data-dir",
            str(self.data_dir),
            "--metrics-interval-s",
            "5",
            "--reconnect-min-s",
            "0.2",
            "--reconnect-max-s",
            "1",
            "--grace-s",
            "5",
        ]
        if self.username is not None:
            args += ["--mqtt-username", self.username, "--mqtt-password", self.password or ""]
        return args

    def start(self, *, pause_at: str | None = None, timeout: float = 120.0) -> OtaAgentProcess:
        """Start (again) and wait for the ready line; ``pause_at`` sets ``EDGEFLEET_OTA_PAUSE_AT``."""
        self.runs += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("EDGEFLEET_AGENT_", "EDGEFLEET_OTA_"))
        }
        env.update({"PYTHONUNBUFFERED": "1", OTA_SETTINGS_ENV: json.dumps(self.settings)})
        if pause_at is not None:
            env[PAUSE_ENV] = pause_at
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        self.wait_for_log(READY_LINE, timeout, what="the ready line")
        return self

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout: float, *, what: str = "") -> str:
        deadline = time.monotonic() + timeout
        regex = re.compile(re.escape(pattern)) if isinstance(pattern, str) else pattern
        while time.monotonic() < deadline:
            text = self.log()
            if regex.search(text):
                return text
            if not self.alive:
                raise AssertionError(f"the agent exited waiting for {what or pattern}:\n{text[-6000:]}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or pattern}:\n{self.log()[-6000:]}")

    def wait_paused(self, state: str, timeout: float = 60.0) -> None:
        self.wait_for_log(f"{PAUSE_MARKER} {state}", timeout)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        if self.process is not None and self.alive:
            self.process.kill()
        if self.process is not None:
            self.process.wait(30)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.alive:
            self.process.terminate()
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def journal(self) -> dict[str, Any]:
        path = self.data_dir / JOURNAL_FILE
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def job(self, model: str) -> dict[str, Any]:
        return dict(self.journal().get("jobs", {}).get(model, {}))

    def wait_for_job(self, model: str, version: str, state: str, timeout: float = 90.0) -> dict[str, Any]:
        """Until the journal says ``model`` reached ``state`` for ``version`` and finished it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(model)
            if job.get("version") == version and job.get("state") == state and job.get("finished"):
                return job
            if not self.alive:
                raise AssertionError(f"the agent exited:\n{self.log()[-6000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{model} {version} never {state}: {self.job(model)}\n{self.log()[-6000:]}")

    # --- inference through tritonclient ----------------------------------------------------------

    def infer(self, model: str, inputs: np.ndarray) -> tuple[str, np.ndarray]:
        """One request without a version: (the version that answered, its logits)."""
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")
        try:
            tensor = grpcclient.InferInput("input", list(inputs.shape), "FP32")
            tensor.set_data_from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
            result = client.infer(model, [tensor])
            return str(result.get_response().model_version), result.as_numpy("logits")
        finally:
            client.close()


class InferenceLoad:
    """Requests through tritonclient from a thread until stopped: every answer and every failure."""

    def __init__(
        self, agent: OtaAgentProcess, model: str, sample: np.ndarray, pause_s: float = 0.005
    ) -> None:
        self.answers: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(agent.grpc_port, model, sample, pause_s), daemon=True
        )
        self._thread.start()

    def _run(self, port: int, model: str, sample: np.ndarray, pause_s: float) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            while not self._stop.is_set():
                tensor = grpcclient.InferInput("input", list(sample.shape), "FP32")
                tensor.set_data_from_numpy(sample)
                try:
                    result = client.infer(model, [tensor], client_timeout=30)
                    self.answers.append(str(result.get_response().model_version))
                except InferenceServerException as exc:
                    self.failures.append(str(exc))
                self._stop.wait(pause_s)
        finally:
            client.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


# --- the fleet server's part -----------------------------------------------------------------------


@dataclass
class Fleet:
    """A real fleet server: devices provisioned with MQTT credentials, bundles pushed for download."""

    server: FleetServer
    pushed: dict[str, str] = field(default_factory=dict)

    def add_device(self, device: str) -> tuple[str, str]:
        with self.server.client(self.server.admin_token) as api:
            response = api.post("/api/v1/devices", json={"id": device, "fleet": "lab"})
            assert response.status_code == 201, response.text
            mqtt_credentials = response.json()["mqtt"]
            return mqtt_credentials["username"], mqtt_credentials["password"]

    def push(self, release: Release) -> str:
        """Push ``release`` (once) and return its download URL on the fleet server."""
        if release.sha256 not in self.pushed:
            with self.server.client(self.server.admin_token) as api:
                response = api.post(
                    "/api/v1/models",
                    content=release.path.read_bytes(),
                    headers={"Content-Type": "application/octet-stream"},
                )
                assert response.status_code in (200, 201), response.text
                assert response.json()["bundle"]["sha256"] == release.sha256
            self.pushed[release.sha256] = f"{self.server.url}/api/v1/bundles/{release.sha256}"
        return self.pushed[release.sha256]
