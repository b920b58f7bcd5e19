"""The server's configuration: what ``edgefleet server run`` was asked to do, parsed and checked.

Pure: parsing addresses and URLs touches no socket or file, so every rule here is unit-tested.
"""

from __future__ import annotations

import hashlib
import re
import socket
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from fleet.drift.thresholds import DriftThresholds
from fleet.errors import ConfigError

DEFAULT_HTTP: Final = "127.0.0.1:8080"
# 1883 is Mosquitto's port and often taken by a system broker (BRIEF §8); the embedded broker
# uses the next one by default and fails loudly, naming the options, when that is taken too.
DEFAULT_MQTT_LISTEN: Final = "127.0.0.1:1884"
DEFAULT_DATA_DIR: Final = Path("edgefleet-data")
DB_FILE_NAME: Final = "fleet.db"
ADMIN_TOKEN_FILE_NAME: Final = "admin.token"
DEFAULT_MAX_BUNDLE_BYTES: Final = 4 * 1024**3
DEFAULT_MQTT_SERVER_USERNAME: Final = "edgefleet-server"

_MQTT_SCHEMES: Final = {
    "mqtt": (1883, False),
    "tcp": (1883, False),
    "mqtts": (8883, True),
    "ssl": (8883, True),
}


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def connect_host(self) -> str:
        """Where a client connects: a wildcard bind address is not one, so use loopback."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://{HostPort(self.connect_host, self.port)}"


def parse_host_port(text: str, *, option: str) -> HostPort:
    """``HOST:PORT`` or ``[IPv6]:PORT``; ``option`` names the flag in the error message."""
    value = text.strip()
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\s\[\]]*):(\d+)", value)
    if match is None:
        raise ConfigError(
            f"{option} {text!r} is not HOST:PORT",
            hint=f"write it like {option} 127.0.0.1:8080 (or [::1]:8080 for IPv6)",
        )
    host = match.group(1) if match.group(1) is not None else match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ConfigError(f"{option} {text!r}: port {port} is outside 1-65535")
    return HostPort(host or "0.0.0.0", port)


@dataclass(frozen=True)
class MqttUrl:
    """An external broker: ``mqtt://[user[:password]@]host[:port]`` (``mqtts://`` for TLS)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    def redacted(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username and self.password else ""
        if self.username and not self.password:
            user = f"{self.username}@"
        return f"{scheme}://{user}{HostPort(self.host, self.port)}"


def parse_mqtt_url(text: str) -> MqttUrl:
    hint = "write it like --mqtt mqtt://127.0.0.1:1883 or mqtt://user:password@broker:1883"
    parts = urlsplit(text.strip())
    if parts.scheme not in _MQTT_SCHEMES:
        raise ConfigError(f"--mqtt {text!r} is not an mqtt:// or mqtts:// URL", hint=hint)
    default_port, tls = _MQTT_SCHEMES[parts.scheme]
    try:
        port = parts.port or default_port
    except ValueError:
        raise ConfigError(f"--mqtt {text!r} has an invalid port", hint=hint) from None
    if not parts.hostname:
        raise ConfigError(f"--mqtt {text!r} names no host", hint=hint)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"--mqtt {text!r}: a broker URL has no path, query or fragment", hint=hint)
    return MqttUrl(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


@dataclass(frozen=True)
class EmbeddedBrokerSettings:
    """Run an amqtt broker inside the server process (the default, for a laptop or a demo)."""

    listen: HostPort

    @property
    def description(self) -> str:
        return f"embedded amqtt broker on {self.listen.url('mqtt')}"


@dataclass(frozen=True)
class ExternalBrokerSettings:
    """Use a broker someone else runs (Mosquitto, EMQX)."""

    url: MqttUrl

    @property
    def description(self) -> str:
        return f"external broker {self.url.redacted()}"


BrokerSettings = EmbeddedBrokerSettings | ExternalBrokerSettings


class MqttProtocol(StrEnum):
    """The MQTT version the server's ingest speaks to the broker."""

    V311 = "3.1.1"
    V5 = "5"


def parse_mqtt_protocol(text: str) -> MqttProtocol:
    value = text.strip().lower().removeprefix("mqtt").removeprefix("v").strip()
    aliases = {
        "3.1.1": MqttProtocol.V311,
        "311": MqttProtocol.V311,
        "5": MqttProtocol.V5,
        "5.0": MqttProtocol.V5,
    }
    if value not in aliases:
        raise ConfigError(
            f"--mqtt-protocol {text!r} is not an MQTT version this server speaks",
            hint="use --mqtt-protocol 5 (Mosquitto, EMQX) or --mqtt-protocol 3.1.1 (the embedded broker)",
        )
    return aliases[value]


def default_mqtt_protocol(broker: BrokerSettings) -> MqttProtocol:
    """amqtt 0.12, the embedded broker, speaks MQTT 3.1.1 only; external brokers get MQTT 5."""
    return MqttProtocol.V311 if isinstance(broker, EmbeddedBrokerSettings) else MqttProtocol.V5


@dataclass(frozen=True)
class IngestSettings:
    """How the MQTT ingest connects, subscribes and batches.

    ``shared`` subscribes through ``$share/fleet/...`` so that replicas split the load; shared
    subscriptions are an MQTT 5 feature, so they follow the protocol. ``client_id`` is stable per
    data directory and host: with a persistent session (``persistent``) the broker keeps queuing
    QoS 1 messages for the ingest while it restarts, up to the broker's own queue limit.
    """

    protocol: MqttProtocol
    client_id: str
    persistent: bool = True
    session_expiry_s: int = 3600
    keepalive_s: int = 30
    batch_max: int = 2000
    batch_wait_s: float = 0.05
    queue_max: int = 100_000
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0

    @property
    def shared(self) -> bool:
        return self.protocol is MqttProtocol.V5

    def __post_init__(self) -> None:
        if self.batch_max < 1 or self.queue_max < self.batch_max:
            raise ConfigError(
                f"ingest batch size {self.batch_max} must be at least 1 and at most the queue size"
            )
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ConfigError("the ingest's reconnect delays must be positive, the minimum below the maximum")


def ingest_client_id(data_dir: Path) -> str:
    """``edgefleet-ingest-<host>-<hash of the data dir>``: stable across restarts, one per replica."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:32] or "host"
    digest = hashlib.sha256(str(data_dir).encode("utf-8")).hexdigest()[:8]
    return f"edgefleet-ingest-{host}-{digest}"


@dataclass(frozen=True)
class DriftSettings:
    """Drift analysis: thresholds, how often the monitor evaluates, and the optional alert webhook.

    The monitor evaluates every ``interval_s``, and ``debounce_s`` after new drift windows arrive
    (but at most once per ``min_gap_s``), over the last ``lookback_s``: the whole fleet (cohort
    ``all``), each hardware profile when ``per_profile``, and each cohort in ``cohorts``
    (``tag:K=V``, ``profile:P``), all against the bundle's reference.
    """

    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    interval_s: float = 60.0
    debounce_s: float = 5.0
    min_gap_s: float = 30.0
    lookback_s: float = 3600.0
    per_profile: bool = True
    cohorts: tuple[str, ...] = ()
    webhook_url: str | None = None
    webhook_timeout_s: float = 5.0
    webhook_attempts: int = 6

    @classmethod
    def from_options(
        cls,
        *,
        webhook_url: str | None = None,
        cohorts: tuple[str, ...] = (),
        thresholds: dict[str, float | int | None] | None = None,
        **settings: float | bool,
    ) -> DriftSettings:
        """Settings from command-line options: ``thresholds`` overrides ``DriftThresholds`` fields
        (``psi_alert``, ``min_samples``, ...); every problem is a ``ConfigError`` naming the option."""
        from dataclasses import fields

        known = {f.name for f in fields(DriftThresholds)}
        unknown = sorted(set(thresholds or {}) - known)
        if unknown:
            raise ConfigError(f"unknown drift thresholds {unknown}; known: {sorted(known)}")
        try:
            chosen = DriftThresholds(**(thresholds or {}))  # type: ignore[arg-type]
        except ValueError as exc:
            raise ConfigError(
                f"drift thresholds: {exc}", hint="see docs/drift.md#thresholds for what each one means"
            ) from None
        from fleet.drift.cohort import CohortError, parse_cohort

        for cohort in cohorts:
            try:
                parse_cohort(cohort)
            except CohortError as exc:
                raise ConfigError(f"--drift-cohort: {exc}") from None
        return cls(thresholds=chosen, webhook_url=webhook_url, cohorts=tuple(cohorts), **settings)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.debounce_s < 0 or self.min_gap_s < 0 or self.lookback_s <= 0:
            raise ConfigError("drift intervals must be positive")
        if self.webhook_attempts < 1:
            raise ConfigError("the drift webhook needs at least one delivery attempt")
        if self.webhook_url is not None:
            parts = urlsplit(self.webhook_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    f"--drift-webhook {self.webhook_url!r} is not an http(s) URL",
                    hint="write it like --drift-webhook https://hooks.example.com/edgefleet",
                )


def normalize_db_url(url: str) -> str:
    """Accept ``sqlite:///path`` and ``postgresql[+psycopg]://...``; always use psycopg 3 for PostgreSQL."""
    text = url.strip()
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if text.startswith(prefix):
            return "postgresql+psycopg://" + text[len(prefix) :]
    if text.startswith(("postgresql+psycopg://", "sqlite://")):
        return text
    raise ConfigError(
        f"--db {redact_db_url(text)!r}: only SQLite and PostgreSQL are supported",
        hint="use sqlite:///path/fleet.db or postgresql+psycopg://user@host:5432/dbname",
    )


def redact_db_url(url: str) -> str:
    """The URL with its password replaced, for logs and messages."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL, or None for PostgreSQL and in-memory SQLite."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    http: HostPort
    db_url: str
    broker: BrokerSettings
    trusted_key_paths: tuple[Path, ...] = ()
    admin_token_file: Path | None = None
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
    mqtt_server_username: str = DEFAULT_MQTT_SERVER_USERNAME
    ingest: IngestSettings | None = None  # None: no MQTT ingest (tests of the REST API alone)
    drift: DriftSettings = field(default_factory=DriftSettings)

    @property
    def bundles_dir(self) -> Path:
        return self.data_dir / "bundles"

    @property
    def upload_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def admin_token_path(self) -> Path:
        return self.admin_token_file or self.data_dir / ADMIN_TOKEN_FILE_NAME

    @classmethod
    def build(
        cls,
        *,
        http: str = DEFAULT_HTTP,
        db: str | None = None,
        data_dir: Path | None = None,
        mqtt_listen: str | None = None,
        mqtt: str | None = None,
        trusted_keys: tuple[Path, ...] = (),
        admin_token_file: Path | None = None,
        max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
        mqtt_protocol: str | None = None,
        drift: DriftSettings | None = None,
    ) -> ServerConfig:
        """Check the command-line options together and fill in the defaults.

        ``mqtt_protocol`` defaults per broker kind: MQTT 3.1.1 for the embedded amqtt broker (the
        only version it speaks), MQTT 5 with ``$share`` subscriptions for an external broker.
        """
        if mqtt_listen is not None and mqtt is not None:
            raise ConfigError(
                "--mqtt-listen and --mqtt exclude each other",
                hint="--mqtt-listen runs the embedded broker; --mqtt points at an external one: pick one",
            )
        directory = (data_dir or DEFAULT_DATA_DIR).expanduser().absolute()
        broker: BrokerSettings = (
            ExternalBrokerSettings(parse_mqtt_url(mqtt))
            if mqtt is not None
            else EmbeddedBrokerSettings(
                parse_host_port(mqtt_listen or DEFAULT_MQTT_LISTEN, option="--mqtt-listen")
            )
        )
        if max_bundle_bytes <= 0:
            raise ConfigError(f"the bundle size limit must be positive, not {max_bundle_bytes}")
        protocol = parse_mqtt_protocol(mqtt_protocol) if mqtt_protocol else default_mqtt_protocol(broker)
        if isinstance(broker, EmbeddedBrokerSettings) and protocol is MqttProtocol.V5:
            raise ConfigError(
                "the embedded amqtt broker speaks MQTT 3.1.1 only, not MQTT 5",
                hint="leave --mqtt-protocol out (3.1.1 is the default with --mqtt-listen), or use an "
                "external broker with --mqtt mqtt://HOST:PORT",
            )
        return cls(
            data_dir=directory,
            http=parse_host_port(http, option="--http"),
            db_url=normalize_db_url(db) if db else f"sqlite:///{directory / DB_FILE_NAME}",
            broker=broker,
            trusted_key_paths=tuple(Path(p).expanduser() for p in trusted_keys),
            admin_token_file=admin_token_file.expanduser().absolute() if admin_token_file else None,
            max_bundle_bytes=max_bundle_bytes,
            # The server's own MQTT account is the one in --mqtt when it names a user.
            mqtt_server_username=(
                broker.url.username
                if isinstance(broker, ExternalBrokerSettings) and broker.url.username
                else DEFAULT_MQTT_SERVER_USERNAME
            ),
            ingest=IngestSettings(protocol=protocol, client_id=ingest_client_id(directory)),
            drift=drift or DriftSettings(),
        )
