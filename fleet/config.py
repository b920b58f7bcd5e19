"""The server's configuration: what ``edgefleet server run`` was asked to do, parsed and checked.

Pure: parsing addresses and URLs touches no socket or file, so every rule here is unit-tested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

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
    ) -> ServerConfig:
        """Check the command-line options together and fill in the defaults."""
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
        )
