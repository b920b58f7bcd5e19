"""The agent's configuration: one schema, read from a YAML file, the environment and flags.

Every key can come from three places; the first that sets it wins:

1. a command-line flag: ``--metrics-interval-s 5`` (the key with ``-`` for ``_``);
2. an environment variable: ``EDGEFLEET_AGENT_METRICS_INTERVAL_S=5`` (lists comma-separated);
3. the config file (``--config agent.yaml``): ``metrics_interval_s: 5``; relative paths in it
   are relative to the file;

and otherwise the default below. A key set in two places is replaced, never merged (a
``--bundle`` flag replaces the file's ``bundle`` list). A bad value, an unknown key in the file
or a missing required key gets a ``ConfigError`` that names the key and where it came from.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from models.mqtt_contract import DEFAULT_FLEET, ContractError, check_segment

ENV_PREFIX = "EDGEFLEET_AGENT_"
CONFIG_ENV = "EDGEFLEET_AGENT_CONFIG"
MIN_SPOOL_BYTES = 16 * 1024


class ConfigError(ValueError):
    """A configuration problem, tied to the key (when there is one) and with what to do next."""

    def __init__(self, message: str, *, key: str | None = None, hint: str | None = None) -> None:
        super().__init__(message if hint is None else f"{message} ({hint})")
        self.message = message
        self.key = key
        self.hint = hint


class AgentConfig(BaseModel):
    """Everything ``edgefleet agent run`` needs. Field names are the config keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- the fleet --------------------------------------------------------------------------------
    mqtt: str = Field(description="Broker URL: mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS.")
    fleet: str = Field(DEFAULT_FLEET, description="Fleet name (a topic segment).")
    device_id: str = Field(description="This device's id (a topic segment, unique in the fleet).")
    # --- serving ----------------------------------------------------------------------------------
    bundle: list[Path] = Field(default_factory=list, description="Signed bundles (.efb) to serve.")
    trusted_key: list[Path] = Field(
        min_length=1, description="Public keys (.pub.pem) or directories of them whose signatures to trust."
    )
    profile: str | None = Field(None, description="Hardware profile for runtime options.")
    data_dir: Path = Field(Path("edgefleet-data/agent"), description="Models, spool and captures live here.")
    grpc: str = Field(
        "127.0.0.1:8001", description="TCP HOST:PORT to serve on (port 0: any); 'none': --uds only."
    )
    uds: Path | None = Field(None, description="Unix socket to serve on as well.")
    max_batch: int = Field(8, ge=1, description="Dynamic batch size limit (1: no batching).")
    batch_delay_ms: float = Field(
        2.0, ge=0, description="How long a request may wait for others to batch with."
    )
    max_message_mb: int = Field(64, ge=1, description="Largest gRPC request or response.")
    workers: int = Field(32, ge=1, description="gRPC worker threads.")
    grace_s: float = Field(30.0, ge=0, description="How long a shutdown waits for calls in flight.")
    # --- telemetry --------------------------------------------------------------------------------
    metrics_interval_s: float = Field(10.0, gt=0, description="Seconds between metrics messages.")
    drift_window: int = Field(1000, ge=1, description="Samples per drift window.")
    drift_window_s: float = Field(300.0, gt=0, description="Longest a drift window stays open (seconds).")
    spool_max_bytes: ByteSize = Field(
        ByteSize(64 * 1024 * 1024), description="Spool size limit, e.g. 67108864 or '64MiB'."
    )
    spool_sync: Literal["full", "normal"] = Field(
        "full", description="SQLite synchronous mode: 'full' survives power loss, 'normal' only crashes."
    )
    # --- MQTT connection --------------------------------------------------------------------------
    mqtt_username: str | None = Field(None, description="MQTT user name (the device's credentials).")
    mqtt_password: SecretStr | None = Field(None, description="MQTT password (prefer mqtt_password_file).")
    mqtt_password_file: Path | None = Field(None, description="File holding the MQTT password.")
    mqtt_ca: Path | None = Field(None, description="CA certificate(s) to verify the broker (turns on TLS).")
    mqtt_cert: Path | None = Field(None, description="Client certificate for mutual TLS.")
    mqtt_key: Path | None = Field(None, description="Private key of the client certificate.")
    mqtt_protocol: Literal["5", "3.1.1"] = Field(
        "5", description="MQTT version: 5, or 3.1.1 for brokers without it (the fleet's embedded broker)."
    )
    mqtt_keepalive_s: int = Field(30, ge=5, le=65535, description="MQTT keep-alive (seconds).")
    mqtt_inflight: int = Field(20, ge=1, le=1000, description="Messages published but not yet acknowledged.")
    reconnect_min_s: float = Field(1.0, gt=0, description="First reconnect delay ceiling (full jitter).")
    reconnect_max_s: float = Field(60.0, gt=0, description="Largest reconnect delay.")
    # --- OTA updates ------------------------------------------------------------------------------
    fleet_url: str | None = Field(
        None, description="The fleet server's base URL, for bundle downloads with relative URLs."
    )
    ota_watch_s: float = Field(
        60.0, ge=0, description="Watch window after a switch, before commit (seconds)."
    )
    ota_watch_requests: int = Field(
        0, ge=0, description="Close the watch window early after this many requests (0: time only)."
    )
    ota_min_requests: int = Field(20, ge=1, description="Requests the watch window needs before it judges.")
    ota_max_error_rate_increase: float = Field(
        0.05, ge=0, le=1, description="Error-rate rise over the old version that rolls back (0.05: 5 points)."
    )
    ota_max_latency_ratio: float = Field(
        2.0, gt=0, description="p95 latency against the old version's that rolls back."
    )
    ota_download_timeout_s: float = Field(30.0, gt=0, description="Bundle download connect/read timeout.")
    # --- raw capture (opt-in, local only) ---------------------------------------------------------
    capture: bool = Field(False, description="Save a rate-limited sample of raw requests locally.")
    capture_dir: Path | None = Field(None, description="Where captures go (default: DATA_DIR/capture).")
    capture_per_minute: float = Field(6.0, gt=0, description="Captured requests per minute, at most.")
    capture_max_mb: float = Field(100.0, gt=0, description="Captures kept on disk, oldest deleted first.")
    # --- the process ------------------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log verbosity.")

    @field_validator("mqtt")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        # Imported here: the CLI reads this schema for its help, which must not load paho.
        from edge_agent.telemetry.mqtt_link import parse_mqtt_url

        parse_mqtt_url(value)
        return value

    @field_validator("fleet", "device_id")
    @classmethod
    def _segment(cls, value: str) -> str:
        try:
            return check_segment("name", value)
        except ContractError as exc:
            raise ValueError(str(exc).replace("name ", "", 1)) from None

    @field_validator("grpc")
    @classmethod
    def _grpc_address(cls, value: str) -> str:
        if value.lower() == "none":
            return "none"
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8001; port 0 picks a free one)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("mqtt_password_file", "mqtt_ca", "mqtt_cert", "mqtt_key")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} does not exist or is not a file")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AgentConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise _KeyProblem("reconnect_max_s", "must be at least reconnect_min_s")
        if self.mqtt_password is not None and self.mqtt_password_file is not None:
            raise _KeyProblem("mqtt_password_file", "give mqtt_password or mqtt_password_file, not both")
        if (self.mqtt_password is not None or self.mqtt_password_file is not None) and not self.mqtt_username:
            raise _KeyProblem("mqtt_username", "a password was given without a user name")
        if self.mqtt_key is not None and self.mqtt_cert is None:
            raise _KeyProblem("mqtt_cert", "mqtt_key was given without the client certificate")
        if self.grpc == "none" and self.uds is None:
            raise _KeyProblem("grpc", "'none' needs a Unix socket: set uds as well")
        if int(self.spool_max_bytes) < MIN_SPOOL_BYTES:
            raise _KeyProblem("spool_max_bytes", f"must be at least {MIN_SPOOL_BYTES // 1024}KiB")
        return self

    # --- derived values ---------------------------------------------------------------------------

    @property
    def grpc_address(self) -> str | None:
        return None if self.grpc == "none" else self.grpc

    def password(self) -> str | None:
        """The MQTT password, from the option or its file (first line, without the newline)."""
        if self.mqtt_password is not None:
            return self.mqtt_password.get_secret_value()
        if self.mqtt_password_file is not None:
            lines = self.mqtt_password_file.read_text(encoding="utf-8").splitlines()
            return lines[0] if lines else ""
        return None

    @property
    def capture_directory(self) -> Path:
        return self.capture_dir if self.capture_dir is not None else self.data_dir / "capture"


class _KeyProblem(ValueError):
    """A cross-field problem, tied to the key the operator should change."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


CONFIG_KEYS: tuple[str, ...] = tuple(AgentConfig.model_fields)


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


def _is_list(key: str) -> bool:
    return typing.get_origin(AgentConfig.model_fields[key].annotation) is list


def _is_path(key: str) -> bool:
    annotation = AgentConfig.model_fields[key].annotation
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for candidate in candidates:
        if candidate is Path or (
            typing.get_origin(candidate) is list and typing.get_args(candidate) == (Path,)
        ):
            return True
    return False


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's keys (``-`` read as ``_``), paths made relative to the file's directory."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist", hint="pass an existing --config file"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys to values, not {type(loaded).__name__}"
        )
    values: dict[str, Any] = {}
    for raw_key, value in loaded.items():
        key = str(raw_key).replace("-", "_")
        if key not in AgentConfig.model_fields:
            close = difflib.get_close_matches(key, CONFIG_KEYS, n=1)
            raise ConfigError(
                f"config file {path}: unknown key {raw_key!r}",
                key=key,
                hint=f"did you mean {close[0]!r}?"
                if close
                else "see `edgefleet agent run --help` for the keys",
            )
        values[key] = _relative_to(path.parent, key, value)
    return values


def _relative_to(base: Path, key: str, value: Any) -> Any:
    if not _is_path(key) or value is None:
        return value
    if isinstance(value, list):
        return [base / Path(str(item)).expanduser() for item in value]
    return base / Path(str(value)).expanduser()


def read_environment(env: Mapping[str, str]) -> dict[str, Any]:
    """``EDGEFLEET_AGENT_<KEY>`` variables; other names with the prefix are left alone (tools share it)."""
    values: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in AgentConfig.model_fields:
            continue
        values[key] = [item.strip() for item in raw.split(",") if item.strip()] if _is_list(key) else raw
    return values


def load_agent_config(
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """Merge file < environment < flags (unset flags are ``None`` or empty) and validate."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file is not None:
        for key, value in read_config_file(config_file).items():
            values[key], sources[key] = value, f"{config_file}, key {key}"
    for key, value in read_environment(env or {}).items():
        values[key], sources[key] = value, f"environment variable {env_name(key)}"
    for key, value in (flags or {}).items():
        if key not in AgentConfig.model_fields:
            raise ConfigError(f"unknown config key {key!r}", key=key)
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        values[key], sources[key] = value, flag_name(key)
    try:
        return AgentConfig.model_validate(values)
    except ValidationError as exc:
        raise _explain(exc, values, sources) from None


def _explain(exc: ValidationError, values: Mapping[str, Any], sources: Mapping[str, str]) -> ConfigError:
    error = exc.errors()[0]
    context = error.get("ctx") or {}
    inner = context.get("error")
    key = str(error["loc"][0]) if error["loc"] else getattr(inner, "key", None)
    if isinstance(inner, _KeyProblem):
        key = inner.key
    if key is None:
        return ConfigError(f"invalid configuration: {error['msg']}")
    if error["type"] == "missing":
        return ConfigError(
            f"config key {key!r} is required",
            key=key,
            hint=f"give {flag_name(key)}, set {env_name(key)}, or add '{key}:' to the --config file",
        )
    message = str(inner) if isinstance(inner, ValueError) else error["msg"].removeprefix("Value error, ")
    shown = "***" if "password" in key else repr(values.get(key))
    where = sources.get(key, "the default")
    return ConfigError(
        f"config key {key!r} = {shown} (from {where}): {message}",
        key=key,
        hint=f"fix {where}; `edgefleet agent run --help` describes {flag_name(key)}",
    )
