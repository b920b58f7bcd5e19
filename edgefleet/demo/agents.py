"""The simulated devices: one real ``edgefleet agent run`` process each, registered with the server.

Each agent gets the device's own MQTT credentials (which also authorise its bundle downloads),
its hardware profile (which picks the runtime options of its bundles), its own data directory
(OTA slots, journal, telemetry spool) and a gRPC port it chooses itself; the demo reads the port
from the agent's ready line. The agents start with no model at all: the first rollout installs v1.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from edge_agent.ready import READY_LINE
from edgefleet.demo.layout import DemoLayout
from edgefleet.demo.processes import ChildProcess, ProcessBook
from edgefleet.demo.settings import FLEET, DemoSettings, DeviceSpec

READY_TIMEOUT_S = 120.0
PROFILES_DIR_ENV = "EDGEFLEET_PROFILES_DIR"
_THREADS_LINE = re.compile(r"(?m)^threads:.*$")
SIMULATED_THREADS = "threads: 1  # edgefleet demo: six simulated devices share this host's cores"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class RunningAgent:
    spec: DeviceSpec
    child: ChildProcess
    address: str  # host:port of its Open Inference Protocol server, as tritonclient takes it


def simulated_profiles(directory: Path, names: tuple[str, ...]) -> Path:
    """Each profile as a simulated device runs it on this host: the real file, one thread.

    The real profiles ask for 4 to 6 runtime threads, one device per board. Six agents on a
    laptop's cores with that many spinning threads each would measure contention, not models;
    with one thread each their latencies stay comparable. The agents find these files first
    through ``EDGEFLEET_PROFILES_DIR``; names, runtimes and options are the real ones.
    """
    from hw_profiles.loader import profile_path

    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        text = profile_path(name).read_text(encoding="utf-8")
        (directory / f"{name}.yaml").write_text(_THREADS_LINE.sub(SIMULATED_THREADS, text), encoding="utf-8")
    return directory


def password_file(layout: DemoLayout, spec: DeviceSpec) -> Path:
    return layout.device_dir(spec.id) / "mqtt-password"


def write_password(path: Path, password: str) -> None:
    """The password in a file only its owner reads (not on the command line, where ps shows it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")


def agent_command(
    spec: DeviceSpec,
    credentials: Credentials,
    *,
    layout: DemoLayout,
    settings: DemoSettings,
    mqtt_url: str,
    fleet_url: str,
    trusted_key: Path,
) -> list[str]:
    """``edgefleet agent run`` for one device. Pure."""
    return [
        sys.executable,
        "-m",
        "edgefleet",
        "agent",
        "run",
        "--mqtt",
        mqtt_url,
        "--mqtt-protocol",
        "3.1.1",  # the embedded broker's only version
        "--mqtt-username",
        credentials.username,
        "--mqtt-password-file",
        str(password_file(layout, spec)),
        "--fleet",
        FLEET,
        "--device-id",
        spec.id,
        "--profile",
        spec.profile,
        "--trusted-key",
        str(trusted_key),
        "--data-dir",
        str(layout.device_dir(spec.id)),
        "--grpc",
        "127.0.0.1:0",
        "--fleet-url",
        fleet_url,
        "--metrics-interval-s",
        f"{settings.metrics_interval_s:g}",
        "--drift-window",
        str(settings.drift_window),
        "--drift-window-s",
        f"{settings.drift_window_s:g}",
        "--ota-watch-s",
        f"{settings.watch_s:g}",
        "--ota-min-requests",
        str(settings.watch_min_requests),
        "--ota-max-latency-ratio",
        f"{settings.watch_max_latency_ratio:g}",
        "--reconnect-min-s",
        "0.2",
        "--reconnect-max-s",
        "2",
        "--grace-s",
        "2",
        # Six agents share the host's cores: one gRPC worker pool each is plenty.
        "--workers",
        "4",
    ]


def start_agents(
    book: ProcessBook,
    layout: DemoLayout,
    settings: DemoSettings,
    devices: list[tuple[DeviceSpec, Credentials]],
    *,
    mqtt_url: str,
    fleet_url: str,
    trusted_key: Path,
) -> list[RunningAgent]:
    """Start every agent at once, then wait for each one's ready line."""
    # The agents take their settings from the flags above, never from a stray environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_AGENT_")}
    env["PYTHONUNBUFFERED"] = "1"
    env[PROFILES_DIR_ENV] = str(
        simulated_profiles(layout.profiles_dir, tuple(sorted({spec.profile for spec, _ in devices})))
    )
    started = []
    for spec, credentials in devices:
        write_password(password_file(layout, spec), credentials.password)
        command = agent_command(
            spec,
            credentials,
            layout=layout,
            settings=settings,
            mqtt_url=mqtt_url,
            fleet_url=fleet_url,
            trusted_key=trusted_key,
        )
        child = book.start(f"agent {spec.id}", "agent", command, layout.agent_log(spec.id), env=env)
        started.append((spec, child))
    running = []
    for spec, child in started:
        match = child.wait_for_log(READY_LINE, READY_TIMEOUT_S, what="its ready line")
        running.append(RunningAgent(spec, child, match["tcp"]))
    return running
