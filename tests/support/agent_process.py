"""Start and stop a real ``edgefleet agent serve`` process for tests.

The agent listens on a free TCP port (``--grpc 127.0.0.1:0``: it picks one and logs it, so two
test runs never race for a port) and on a Unix socket in a short temporary directory (socket
paths are limited to about 107 bytes, which pytest's tmp paths can exceed). Its stdout and stderr
go to a log file; ``start_agent`` waits for the "agent ready" line and reads the addresses from
it, or raises with the log's tail if the process exits first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.ready import READY_LINE


class AgentFailedToStart(RuntimeError):
    pass


def agent_command() -> list[str]:
    """``python -m edgefleet agent serve`` once the root CLI registers the group; else the module itself."""
    from edgefleet.cli import app

    if any(group.name == "agent" for group in app.registered_groups):
        return [sys.executable, "-m", "edgefleet", "agent", "serve"]
    return [sys.executable, "-m", "edgefleet.cli.agent", "serve"]


def reporting_agent_command() -> list[str]:
    """``edgefleet agent run``: the same serving, plus status, metrics and drift windows over MQTT."""
    from tests.support.telemetry import agent_command as run_command

    return run_command()


@dataclass
class AgentProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    tcp: str | None
    uds: Path | None
    socket_dir: Path | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        """The TCP address, as tritonclient takes it (``host:port``)."""
        assert self.tcp is not None, "this agent has no TCP listener"
        return self.tcp

    @property
    def uds_url(self) -> str:
        """The Unix socket as a gRPC target (``unix:///path``), which tritonclient passes to grpc as is."""
        assert self.uds is not None, "this agent has no Unix socket"
        return f"unix://{self.uds}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful drain), then SIGKILL if it does not exit within ``timeout``; the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._cleanup()
        return int(self.process.returncode)

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(10)
        self._cleanup()

    def _cleanup(self) -> None:
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self.socket_dir = None


def serve_args(
    bundles: Sequence[Path],
    trusted_key: Path,
    data_dir: Path,
    *,
    uds: Path | None,
    extra: Sequence[str] = (),
) -> list[str]:
    args = ["--grpc", "127.0.0.1:0", "--data-dir", str(data_dir), "--trusted-key", str(trusted_key)]
    for bundle in bundles:
        args += ["--bundle", str(bundle)]
    if uds is not None:
        args += ["--uds", str(uds)]
    return args + list(extra)


def start_agent(
    bundles: Sequence[Path],
    trusted_key: Path,
    workdir: Path,
    *,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    with_uds: bool = True,
    timeout: float = 120.0,
    command: Sequence[str] | None = None,
) -> AgentProcess:
    """Start an agent serving ``bundles`` and wait until it is ready.

    ``command`` replaces ``agent_command()``: ``reporting_agent_command()`` also reports to a
    fleet over MQTT (pass ``--mqtt``, ``--device-id`` and ``--fleet`` in ``extra``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    socket_dir = Path(tempfile.mkdtemp(prefix="efa-", dir="/tmp")) if with_uds else None
    uds = socket_dir / "agent.sock" if socket_dir is not None else None
    log_path = workdir / f"agent-{time.monotonic_ns()}.log"
    argv = [
        *(command or agent_command()),
        *serve_args(bundles, trusted_key, workdir / "data", uds=uds, extra=extra),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    agent = AgentProcess(process, log_path, None, None, socket_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = READY_LINE.search(agent.log())
        if match:
            agent.tcp = None if match["tcp"] == "-" else match["tcp"]
            agent.uds = None if match["uds"] == "-" else Path(match["uds"])
            return agent
        if not agent.alive():
            agent.kill()
            raise AgentFailedToStart(
                f"the agent exited with {process.returncode} before it was ready:\n{agent.log()}"
            )
        time.sleep(0.05)
    agent.kill()
    raise AgentFailedToStart(f"the agent was not ready within {timeout:.0f} s:\n{agent.log()}")


def run_agent(
    bundles: Sequence[Path],
    trusted_key: Path,
    workdir: Path,
    *,
    extra: Sequence[str] = (),
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run an agent that is expected to exit by itself (a refused bundle, a taken port)."""
    command = agent_command() + serve_args(bundles, trusted_key, workdir / "data", uds=None, extra=extra)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


@contextlib.contextmanager
def running_agent(
    bundles: Sequence[Path],
    trusted_key: Path,
    workdir: Path,
    *,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> Iterator[AgentProcess]:
    """``start_agent`` as a context manager that always stops (and if need be kills) the process."""
    agent = start_agent(bundles, trusted_key, workdir, extra=extra, env=env, command=command)
    try:
        yield agent
    finally:
        agent.stop()
