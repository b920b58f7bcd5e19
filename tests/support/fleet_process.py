"""A real ``edgefleet server run`` process on free ports, for integration tests.

``FleetServer(workdir).start()`` launches the server with its own data directory, waits until
``/healthz`` answers (or reports the process's log if it died), and ``stop()`` sends SIGTERM.
``cli_app()`` gives a Typer app with the fleet command groups, for driving the real CLI
in-process against the real server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import typer

from tests.support.net import free_port

START_TIMEOUT_S = 90.0


def server_command() -> list[str]:
    """``python -m edgefleet server run`` once the root CLI registers the group; the same Typer
    command through its own module until then."""
    from edgefleet.cli import app

    names = {group.name for group in app.registered_groups}
    if "server" in names:
        return [sys.executable, "-m", "edgefleet", "server", "run"]
    return [sys.executable, "-m", "edgefleet.cli.server", "run"]


def cli_app() -> typer.Typer:
    """The root CLI when it has the fleet groups; otherwise a root with just those groups."""
    from edgefleet.cli import app, devices, models_cmd, server, tokens

    wanted = {"server", "devices", "models", "tokens", "audit"}
    if wanted <= {group.name for group in app.registered_groups}:
        return app
    composite = typer.Typer()
    composite.add_typer(server.app, name="server")
    composite.add_typer(devices.app, name="devices")
    composite.add_typer(models_cmd.app, name="models")
    composite.add_typer(tokens.app, name="tokens")
    composite.add_typer(tokens.audit_app, name="audit")
    return composite


@dataclass
class FleetServer:
    workdir: Path
    db_url: str | None = None  # None: SQLite in the data directory
    trusted_keys: tuple[Path, ...] = ()
    http_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    mqtt_url: str | None = None  # an external broker instead of the embedded one
    extra_args: tuple[str, ...] = ()
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def args(self) -> list[str]:
        args = ["--http", f"127.0.0.1:{self.http_port}", "--data-dir", str(self.data_dir), "--no-access-log"]
        args += (
            ["--mqtt", self.mqtt_url] if self.mqtt_url else ["--mqtt-listen", f"127.0.0.1:{self.mqtt_port}"]
        )
        if self.db_url:
            args += ["--db", self.db_url]
        for key in self.trusted_keys:
            args += ["--trusted-key", str(key)]
        return [*args, *self.extra_args]

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it (for tests that expect it to fail)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
        env.pop("EDGEFLEET_DB", None)
        env.pop("EDGEFLEET_MQTT", None)
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [*server_command(), *self.args()], stdout=log, stderr=log, cwd=self.workdir, env=env
        )
        return self._process

    def start(self) -> FleetServer:
        process = self.launch()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the fleet server exited with {process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the fleet server did not answer within {START_TIMEOUT_S}s:\n{self.log()}")

    def wait(self, timeout: float = 60.0) -> int:
        assert self._process is not None
        return self._process.wait(timeout=timeout)

    def stop(self) -> int | None:
        if self._process is None:
            return None
        process, self._process = self._process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kwargs)
