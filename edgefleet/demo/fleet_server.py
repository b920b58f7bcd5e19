"""Starting the demo's fleet server as a child process on free ports, and waiting until it serves."""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edgefleet.cli._console import CLIError
from edgefleet.demo.layout import DemoLayout
from edgefleet.demo.processes import ChildProcess, ProcessBook
from edgefleet.demo.server_main import PORT_IN_USE_EXIT
from edgefleet.demo.settings import SITES, DemoSettings

HOST = "127.0.0.1"
START_TIMEOUT_S = 90.0
PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class RunningServer:
    child: ChildProcess
    http_port: int
    mqtt_port: int
    admin_token: str

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{HOST}:{self.mqtt_port}"


def free_port(host: str = HOST) -> int:
    """A port the OS has just handed out; the server binds it a moment later (and a lost race is
    retried with new ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_command(
    layout: DemoLayout, settings: DemoSettings, trusted_key: Path, http_port: int, mqtt_port: int
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "edgefleet.demo.server_main",
        "--http",
        f"{HOST}:{http_port}",
        "--mqtt-listen",
        f"{HOST}:{mqtt_port}",
        "--data-dir",
        str(layout.server_dir),
        "--trusted-key",
        str(trusted_key),
        "--drift-interval-s",
        f"{settings.drift_interval_s:g}",
        "--drift-lookback-s",
        f"{settings.drift_lookback_s:g}",
        "--drift-min-samples",
        str(settings.drift_min_samples),
    ]
    for site in SITES:
        command += ["--drift-cohort", f"tag:site={site}"]
    return command


def start_server(
    book: ProcessBook, layout: DemoLayout, settings: DemoSettings, trusted_key: Path
) -> RunningServer:
    """The server on free ports, answering ``/healthz``, with its admin token read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env["PYTHONUNBUFFERED"] = "1"
    for _ in range(PORT_ATTEMPTS):
        http_port, mqtt_port = free_port(), free_port()
        command = server_command(layout, settings, trusted_key, http_port, mqtt_port)
        child = book.start("fleet-server", "server", command, layout.server_log, env=env)
        if _wait_healthy(child, f"http://{HOST}:{http_port}"):
            token = layout.admin_token.read_text(encoding="utf-8").strip()
            return RunningServer(child, http_port, mqtt_port, token)
        if child.process.returncode != PORT_IN_USE_EXIT:
            break
    raise CLIError(
        f"the fleet server did not start:\n{child.log_tail()}",
        hint=f"its whole log is {layout.server_log}",
    )


def _wait_healthy(child: ChildProcess, url: str) -> bool:
    """Until the API answers and the MQTT ingest has subscribed (devices' first messages count)."""
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not child.alive():
            return False
        try:
            metrics = httpx.get(f"{url}/metrics", timeout=2.0)
            if metrics.status_code == 200 and ingest_connected(metrics.text):
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    child.kill()
    child.process.wait()
    return False


def ingest_connected(prometheus_text: str) -> bool:
    """Whether ``edgefleet_ingest_connected`` reads 1 in a Prometheus exposition. Pure."""
    for line in prometheus_text.splitlines():
        name, _, value = line.partition(" ")
        if name == "edgefleet_ingest_connected":
            try:
                return float(value) == 1.0
            except ValueError:
                return False
    return False
