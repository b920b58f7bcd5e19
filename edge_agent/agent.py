"""The agent process: local serving and fleet telemetry together, from start to a clean stop.

``Agent.start`` takes the data directory (one agent per directory: its spool numbers the
device's messages), opens the spool, verifies and loads the bundles, starts the gRPC server and
then the telemetry, which connects to the broker in the background: an agent serves even while
the broker is unreachable, and its telemetry waits in the spool. ``Agent.stop`` drains the calls
in flight first (their metrics and drift still count), then stops the telemetry (last metrics,
open drift windows and an offline status, delivered if the broker is reachable within a few
seconds) and releases the data directory.

If the process dies instead (SIGKILL, power loss), the broker publishes the Last Will, and
everything spooled is sent after the next start.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from pathlib import Path
from typing import IO, Any

from edge_agent.config import AgentConfig
from edge_agent.ota import (
    Credentials,
    DownloadSettings,
    Updater,
    UpdaterSettings,
    WatchPolicy,
    spool_reporter,
)
from edge_agent.serving import (
    AgentServer,
    BatchingConfig,
    InferenceEngine,
    InstalledBundle,
    Listening,
    ServerConfig,
)
from edge_agent.telemetry import (
    CaptureSettings,
    DeviceIdentity,
    LinkSettings,
    Spool,
    Telemetry,
    TelemetrySettings,
    parse_mqtt_url,
)
from edgefleet import __version__
from hw_profiles import HardwareProfile, load_profile
from models.bundle import load_trusted_keys
from models.mqtt_contract import DesiredState, EventLevel, ModelState, SlotState
from models.stats import ReferenceStats

log = logging.getLogger("edgefleet.agent")

SPOOL_FILE = "telemetry/spool.sqlite3"
LOCK_FILE = "agent.lock"


class AgentError(RuntimeError):
    """The agent cannot start; the message says why and what to do."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# --- pieces the agent derives from the engine ----------------------------------------------------


def load_reference(installed: InstalledBundle) -> ReferenceStats | None:
    """The bundle's frozen drift bins, or None when it carries none (or they cannot be read)."""
    name = installed.manifest.reference_stats
    if name is None:
        return None
    path = installed.directory / name
    try:
        return ReferenceStats.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot read %s of %s %s: %s", name, installed.name, installed.version, exc)
        return None


def model_states(engine: InferenceEngine) -> list[ModelState]:
    return [
        ModelState(
            name=model.name,
            version=model.version,
            format=model.installed.manifest.format.value,
            precision=model.installed.manifest.precision.value,
            provider=model.session.provider,
            ready=True,
            default=engine.repository.default_version(model.name) == model.version,
        )
        for model in engine.loaded_models()
    ]


def requests_in_flight(engine: InferenceEngine) -> dict[tuple[str, str], int]:
    return {(model.name, model.version): model.in_flight for model in engine.loaded_models()}


class DataDirLock:
    """One agent per data directory: two would hand out the same seqs from one spool."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise AgentError(
                f"the data directory {self.path.parent} is in use by agent pid {holder}",
                hint="stop that agent, or give this one its own --data-dir",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


# --- the agent -----------------------------------------------------------------------------------


def telemetry_settings(config: AgentConfig) -> TelemetrySettings:
    link = LinkSettings(
        broker=parse_mqtt_url(config.mqtt),
        client_id=f"edgefleet-{config.fleet}-{config.device_id}",
        username=config.mqtt_username,
        password=config.password(),
        ca_file=config.mqtt_ca,
        cert_file=config.mqtt_cert,
        key_file=config.mqtt_key,
        keepalive_s=config.mqtt_keepalive_s,
        inflight=config.mqtt_inflight,
        reconnect_min_s=config.reconnect_min_s,
        reconnect_max_s=config.reconnect_max_s,
        protocol=config.mqtt_protocol,
    )
    capture = (
        CaptureSettings(
            directory=config.capture_directory,
            per_minute=config.capture_per_minute,
            max_bytes=int(config.capture_max_mb * 1024 * 1024),
        )
        if config.capture
        else None
    )
    return TelemetrySettings(
        identity=DeviceIdentity(
            fleet=config.fleet,
            device_id=config.device_id,
            agent_version=__version__,
            profile=config.profile or "",
        ),
        link=link,
        metrics_interval_s=config.metrics_interval_s,
        drift_window=config.drift_window,
        drift_window_s=config.drift_window_s,
        capture=capture,
    )


class Agent:
    """Serving plus telemetry for one device."""

    def __init__(self, config: AgentConfig, *, profile: HardwareProfile | None = None) -> None:
        self.config = config
        self.profile = profile
        self.desired: DesiredState | None = None
        self.engine: InferenceEngine | None = None
        self.server: AgentServer | None = None
        self.telemetry: Telemetry | None = None
        self.spool: Spool | None = None
        self.updater: Updater | None = None
        self._lock = DataDirLock(config.data_dir)
        self._started = False
        # What served when the stop began: the offline status reports it, as the Last Will does
        # (the engine is closed by then, and an empty list would tell the fleet it runs nothing).
        self._models_at_stop: list[ModelState] | None = None

    def start(self) -> Listening:
        """Load, serve, report. Raises ``AgentError``, ``BundleError``, ``ServingError`` or ``SpoolError``."""
        config = self.config
        self._lock.acquire()
        try:
            return self._start(config)
        except BaseException:
            self.stop()
            raise

    def _start(self, config: AgentConfig) -> Listening:
        keys = load_trusted_keys(config.trusted_key)
        profile = self.profile or (load_profile(config.profile) if config.profile else None)
        self.spool = Spool(
            config.data_dir / SPOOL_FILE,
            max_bytes=int(config.spool_max_bytes),
            synchronous="FULL" if config.spool_sync == "full" else "NORMAL",
        )
        engine = self.engine = InferenceEngine.create(
            data_dir=config.data_dir,
            trusted_keys=keys,
            profile=profile,
            batching=BatchingConfig(max_batch=config.max_batch, max_delay_s=config.batch_delay_ms / 1000),
            drain_timeout_s=config.grace_s,
        )
        telemetry = self.telemetry = Telemetry(
            telemetry_settings(config),
            self.spool,
            models=lambda: model_states(engine) if self._models_at_stop is None else self._models_at_stop,
            in_flight=lambda: requests_in_flight(engine),
            on_desired=self._on_desired,
            ota=self._slot_state,
        )
        engine.add_observer(telemetry.observer)
        for bundle in config.bundle:
            installed = engine.install(bundle)
            telemetry.register_model(installed.name, installed.version, load_reference(installed))

        def loaded(installed: InstalledBundle) -> None:
            telemetry.register_model(installed.name, installed.version, load_reference(installed))

        self.updater = Updater(
            engine,
            data_dir=config.data_dir,
            trusted_keys=keys,
            device_id=config.device_id,
            report=spool_reporter(telemetry.outbox),
            settings=self.updater_settings(config),
            on_loaded=loaded,
            on_serving_changed=telemetry.publish_status,
        )
        self.updater.resume()  # serve the committed slots before the server opens
        self.server = AgentServer(
            engine,
            ServerConfig(
                grpc_address=config.grpc_address,
                uds_path=config.uds,
                max_message_bytes=config.max_message_mb * 1024 * 1024,
                workers=config.workers,
                grace_s=config.grace_s,
            ),
        )
        listening = self.server.start()
        telemetry.start()
        self._started = True
        return listening

    def _slot_state(self) -> SlotState:
        return self.updater.slot_state() if self.updater is not None else SlotState()

    def updater_settings(self, config: AgentConfig) -> UpdaterSettings:
        """Download credentials are the device's MQTT credentials (the fleet checks them the same way)."""
        password = config.password()
        credentials = Credentials(config.mqtt_username, password or "") if config.mqtt_username else None
        return UpdaterSettings(
            fleet_url=config.fleet_url,
            credentials=credentials,
            download=DownloadSettings(timeout_s=config.ota_download_timeout_s),
            watch=WatchPolicy(
                window_s=config.ota_watch_s,
                window_requests=config.ota_watch_requests,
                min_requests=config.ota_min_requests,
                max_error_rate_increase=config.ota_max_error_rate_increase,
                max_latency_ratio=config.ota_max_latency_ratio,
            ),
        )

    def stop(self) -> None:
        """Drain calls, stop telemetry (delivering what it can), release the data directory."""
        if self.engine is not None and self._models_at_stop is None:
            self._models_at_stop = model_states(self.engine)
        if self.updater is not None:  # first: its status stays readable while the rest stops
            self.updater.stop()
            self.updater = None
        if self.server is not None:
            self.server.stop()  # closes the engine too
            self.server = None
        elif self.engine is not None:
            self.engine.close()
        self.engine = None
        if self.telemetry is not None and self._started:
            self.telemetry.stop()
        self.telemetry = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        self._started = False
        self._lock.release()

    def run_until(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set (by a signal handler), then stop cleanly."""
        try:
            stop.wait()
        finally:
            self.stop()

    def _on_desired(self, desired: DesiredState) -> None:
        self.desired = desired
        if self.updater is not None:
            self.updater.on_desired(desired)
        if self.telemetry is not None:
            details: dict[str, Any] = {
                "revision": desired.revision,
                "models": {name: model.version for name, model in desired.models.items()},
            }
            self.telemetry.event(
                EventLevel.INFO,
                "desired_received",
                f"desired state revision {desired.revision} received",
                details,
            )
