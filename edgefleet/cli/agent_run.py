"""``edgefleet agent run``: serve bundles and report to the fleet over MQTT until SIGTERM or SIGINT.

Every key of ``edge_agent.config.AgentConfig`` is a flag here, an ``EDGEFLEET_AGENT_<KEY>``
environment variable, and a key of the ``--config`` YAML file; a flag beats the environment,
which beats the file. Flags default to ``None`` so that a flag left out never hides a value
from the environment or the file.

The agent group registers it with ``app.command(name="run")(agent_run.run)``; for a quick
check without the group, ``python -m edgefleet.cli.agent_run --help`` works too.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from edge_agent.config import CONFIG_ENV, AgentConfig, ConfigError, env_name, load_agent_config
from edge_agent.ready import ready_message
from edgefleet.cli._console import CLIError, cli_errors

log = logging.getLogger("edgefleet.agent")

CONFIG_EXIT_CODE = 2


def _help(key: str) -> str:
    field = AgentConfig.model_fields[key]
    default = (
        "required"
        if field.is_required()
        else f"default: {_shown(field.get_default(call_default_factory=True))}"
    )
    # Parentheses, not brackets: Rich reads [...] as markup and would drop it.
    return f"{field.description} ({default}; env {env_name(key)})"


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return "none" if not value else ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def run(
    config: Path | None = typer.Option(
        None, "--config", envvar=CONFIG_ENV, help="YAML file of config keys (flags and env vars override it)."
    ),
    mqtt: str | None = typer.Option(None, "--mqtt", help=_help("mqtt")),
    fleet: str | None = typer.Option(None, "--fleet", help=_help("fleet")),
    device_id: str | None = typer.Option(None, "--device-id", help=_help("device_id")),
    bundle: list[Path] | None = typer.Option(None, "--bundle", help=_help("bundle") + " Repeatable."),
    trusted_key: list[Path] | None = typer.Option(
        None, "--trusted-key", help=_help("trusted_key") + " Repeatable."
    ),
    profile: str | None = typer.Option(None, "--profile", help=_help("profile")),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=_help("data_dir")),
    grpc: str | None = typer.Option(None, "--grpc", help=_help("grpc")),
    uds: Path | None = typer.Option(None, "--uds", help=_help("uds")),
    max_batch: int | None = typer.Option(None, "--max-batch", help=_help("max_batch")),
    batch_delay_ms: float | None = typer.Option(None, "--batch-delay-ms", help=_help("batch_delay_ms")),
    max_message_mb: int | None = typer.Option(None, "--max-message-mb", help=_help("max_message_mb")),
    workers: int | None = typer.Option(None, "--workers", help=_help("workers")),
    grace_s: float | None = typer.Option(None, "--grace-s", help=_help("grace_s")),
    metrics_interval_s: float | None = typer.Option(
        None, "--metrics-interval-s", help=_help("metrics_interval_s")
    ),
    drift_window: int | None = typer.Option(None, "--drift-window", help=_help("drift_window")),
    drift_window_s: float | None = typer.Option(None, "--drift-window-s", help=_help("drift_window_s")),
    spool_max_bytes: str | None = typer.Option(None, "--spool-max-bytes", help=_help("spool_max_bytes")),
    spool_sync: str | None = typer.Option(None, "--spool-sync", help=_help("spool_sync")),
    mqtt_username: str | None = typer.Option(None, "--mqtt-username", help=_help("mqtt_username")),
    mqtt_password: str | None = typer.Option(None, "--mqtt-password", help=_help("mqtt_password")),
    mqtt_password_file: Path | None = typer.Option(
        None, "--mqtt-password-file", help=_help("mqtt_password_file")
    ),
    mqtt_ca: Path | None = typer.Option(None, "--mqtt-ca", help=_help("mqtt_ca")),
    mqtt_cert: Path | None = typer.Option(None, "--mqtt-cert", help=_help("mqtt_cert")),
    mqtt_key: Path | None = typer.Option(None, "--mqtt-key", help=_help("mqtt_key")),
    mqtt_protocol: str | None = typer.Option(None, "--mqtt-protocol", help=_help("mqtt_protocol")),
    mqtt_keepalive_s: int | None = typer.Option(None, "--mqtt-keepalive-s", help=_help("mqtt_keepalive_s")),
    mqtt_inflight: int | None = typer.Option(None, "--mqtt-inflight", help=_help("mqtt_inflight")),
    reconnect_min_s: float | None = typer.Option(None, "--reconnect-min-s", help=_help("reconnect_min_s")),
    reconnect_max_s: float | None = typer.Option(None, "--reconnect-max-s", help=_help("reconnect_max_s")),
    fleet_url: str | None = typer.Option(None, "--fleet-url", help=_help("fleet_url")),
    ota_watch_s: float | None = typer.Option(None, "--ota-watch-s", help=_help("ota_watch_s")),
    ota_watch_requests: int | None = typer.Option(
        None, "--ota-watch-requests", help=_help("ota_watch_requests")
    ),
    ota_min_requests: int | None = typer.Option(None, "--ota-min-requests", help=_help("ota_min_requests")),
    ota_max_error_rate_increase: float | None = typer.Option(
        None, "--ota-max-error-rate-increase", help=_help("ota_max_error_rate_increase")
    ),
    ota_max_latency_ratio: float | None = typer.Option(
        None, "--ota-max-latency-ratio", help=_help("ota_max_latency_ratio")
    ),
    ota_download_timeout_s: float | None = typer.Option(
        None, "--ota-download-timeout-s", help=_help("ota_download_timeout_s")
    ),
    capture: bool | None = typer.Option(None, "--capture/--no-capture", help=_help("capture")),
    capture_dir: Path | None = typer.Option(None, "--capture-dir", help=_help("capture_dir")),
    capture_per_minute: float | None = typer.Option(
        None, "--capture-per-minute", help=_help("capture_per_minute")
    ),
    capture_max_mb: float | None = typer.Option(None, "--capture-max-mb", help=_help("capture_max_mb")),
    log_level: str | None = typer.Option(None, "--log-level", help=_help("log_level")),
) -> None:
    """Serve bundles over gRPC and report metrics, drift and status to the fleet over MQTT."""
    flags = {key: value for key, value in locals().items() if key != "config"}
    with cli_errors():
        try:
            settings = load_agent_config(config_file=config, env=os.environ, flags=flags)
        except ConfigError as exc:
            raise CLIError(exc.message, hint=exc.hint, exit_code=CONFIG_EXIT_CODE) from exc
        _configure_logging(settings.log_level)
        _run(settings)


def _run(config: AgentConfig) -> None:
    # The serving stack and the telemetry load here, not when the CLI starts.
    from edge_agent.agent import Agent, AgentError
    from edge_agent.serving import ServingError
    from edge_agent.telemetry import SpoolError
    from hw_profiles import ProfileError
    from models.bundle import BundleError

    agent = Agent(config)
    try:
        listening = agent.start()
    except AgentError as exc:
        raise CLIError(exc.message, hint=exc.hint) from exc
    except BundleError as exc:
        raise CLIError(exc.message, hint=exc.hint, exit_code=exc.exit_code) from exc
    except ServingError as exc:
        raise CLIError(exc.message, hint=exc.hint) from exc
    except SpoolError as exc:
        raise CLIError(str(exc), hint=f"the spool lives under {config.data_dir}") from exc
    except ProfileError as exc:
        raise CLIError(str(exc), hint=exc.hint or "see `edgefleet profiles list`") from exc
    stop = _stop_on_signals()
    models = ",".join(f"{m.name}:{m.version}" for m in (agent.engine.loaded_models() if agent.engine else []))
    log.info(
        "%s",
        ready_message(
            listening.tcp,
            listening.uds,
            models=models or "-",
            fleet=config.fleet,
            device=config.device_id,
            mqtt=config.mqtt,
        ),
    )
    agent.run_until(stop)
    log.info("stopped")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    # paho logs every packet at DEBUG and a closed socket at shutdown as an ERROR; our own log
    # says what matters (connects, losses, refusals), so paho speaks only when asked to debug.
    paho_level = logging.DEBUG if level == "debug" else logging.CRITICAL
    logging.getLogger("edgefleet.agent.paho").setLevel(paho_level)


def main() -> None:
    typer.run(run)


if __name__ == "__main__":
    main()
