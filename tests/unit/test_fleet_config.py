"""`edgefleet server run` options, parsed and checked before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.config import (
    DEFAULT_MQTT_SERVER_USERNAME,
    EmbeddedBrokerSettings,
    ExternalBrokerSettings,
    HostPort,
    ServerConfig,
    normalize_db_url,
    parse_host_port,
    parse_mqtt_url,
    redact_db_url,
    sqlite_path,
)
from fleet.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("0.0.0.0:1", "0.0.0.0", 1),
        ("[::1]:443", "::1", 443),
        (":9000", "0.0.0.0", 9000),
    ],
)
def test_host_port(text: str, host: str, port: int) -> None:
    assert parse_host_port(text, option="--http") == HostPort(host, port)


@pytest.mark.parametrize("text", ["8080", "localhost", "host:port", "host:0", "host:70000", "a b:1", "[::1]"])
def test_bad_host_port_names_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="--mqtt-listen"):
        parse_host_port(text, option="--mqtt-listen")


def test_urls_clients_can_connect_to() -> None:
    assert HostPort("0.0.0.0", 8080).url() == "http://127.0.0.1:8080"
    assert HostPort("::", 1884).url("mqtt") == "mqtt://[::1]:1884"
    assert str(HostPort("::1", 80)) == "[::1]:80"


def test_mqtt_urls() -> None:
    plain = parse_mqtt_url("mqtt://broker.local")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("broker.local", 1883, False, None)
    secure = parse_mqtt_url("mqtts://svc:p%40ss@10.0.0.5:9883")
    assert (secure.host, secure.port, secure.tls) == ("10.0.0.5", 9883, True)
    assert (secure.username, secure.password) == ("svc", "p@ss")
    assert secure.redacted() == "mqtts://svc:***@10.0.0.5:9883"
    assert "p@ss" not in repr(secure)


@pytest.mark.parametrize(
    "text", ["http://x:1883", "mqtt://", "mqtt://h:notaport", "mqtt://h:1883/topic", "h:1883"]
)
def test_bad_mqtt_urls(text: str) -> None:
    with pytest.raises(ConfigError, match="--mqtt"):
        parse_mqtt_url(text)


def test_defaults(tmp_path: Path) -> None:
    config = ServerConfig.build(data_dir=tmp_path / "d")
    assert config.http == HostPort("127.0.0.1", 8080)
    assert config.broker == EmbeddedBrokerSettings(HostPort("127.0.0.1", 1884))
    assert config.db_url == f"sqlite:///{tmp_path / 'd' / 'fleet.db'}"
    assert config.admin_token_path == tmp_path / "d" / "admin.token"
    assert config.bundles_dir == tmp_path / "d" / "bundles"
    assert config.mqtt_server_username == DEFAULT_MQTT_SERVER_USERNAME


def test_external_broker_and_postgres(tmp_path: Path) -> None:
    config = ServerConfig.build(
        data_dir=tmp_path, db="postgresql://u:pw@db:5432/fleet", mqtt="mqtt://svc:pw@broker:1883"
    )
    assert isinstance(config.broker, ExternalBrokerSettings)
    assert config.db_url == "postgresql+psycopg://u:pw@db:5432/fleet"
    assert config.mqtt_server_username == "svc"  # the server's own MQTT account is the one it uses


def test_embedded_and_external_broker_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--mqtt-listen and --mqtt") as refused:
        ServerConfig.build(data_dir=tmp_path, mqtt_listen="127.0.0.1:1884", mqtt="mqtt://h")
    assert refused.value.hint and "pick one" in refused.value.hint


def test_database_urls() -> None:
    assert normalize_db_url("postgres://h/db") == "postgresql+psycopg://h/db"
    assert normalize_db_url("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="only SQLite and PostgreSQL") as refused:
        normalize_db_url("mysql://root:hunter2@h/db")
    assert "hunter2" not in str(refused.value)
    assert redact_db_url("postgresql+psycopg://u:secret@h:5432/db") == "postgresql+psycopg://u:***@h:5432/db"
    assert sqlite_path("sqlite:////abs/f.db") == Path("/abs/f.db")
    assert sqlite_path("sqlite:///:memory:") is None and sqlite_path("postgresql+psycopg://h/db") is None
