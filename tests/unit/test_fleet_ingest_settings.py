"""The ingest's and drift's settings: the MQTT protocol follows the broker kind unless told otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.config import (
    DriftSettings,
    EmbeddedBrokerSettings,
    IngestSettings,
    MqttProtocol,
    ServerConfig,
    ingest_client_id,
    parse_mqtt_protocol,
)
from fleet.errors import ConfigError
from fleet.ingest.consumer import BrokerEndpoint
from models.mqtt_contract import ingest_subscriptions


def test_the_embedded_broker_gets_mqtt_311_and_plain_subscriptions(tmp_path: Path) -> None:
    config = ServerConfig.build(data_dir=tmp_path)
    assert isinstance(config.broker, EmbeddedBrokerSettings)
    assert config.ingest is not None
    assert config.ingest.protocol is MqttProtocol.V311 and not config.ingest.shared
    assert BrokerEndpoint.of(config.broker) == BrokerEndpoint("127.0.0.1", 1884)


def test_an_external_broker_gets_mqtt_5_and_shared_subscriptions(tmp_path: Path) -> None:
    config = ServerConfig.build(data_dir=tmp_path, mqtt="mqtts://edgefleet-server:s3cret@broker.example:8883")
    assert config.ingest is not None and config.ingest.protocol is MqttProtocol.V5 and config.ingest.shared
    endpoint = BrokerEndpoint.of(config.broker)
    assert (endpoint.host, endpoint.port, endpoint.username, endpoint.password, endpoint.tls) == (
        "broker.example",
        8883,
        "edgefleet-server",
        "s3cret",
        True,
    )
    assert "s3cret" not in repr(endpoint) and "s3cret" not in str(endpoint)
    subscriptions = ingest_subscriptions(shared=config.ingest.shared)
    assert all(s.startswith("$share/fleet/edgefleet/v1/+/+/") for s in subscriptions)


def test_an_external_broker_can_be_told_to_speak_311(tmp_path: Path) -> None:
    config = ServerConfig.build(data_dir=tmp_path, mqtt="mqtt://127.0.0.1:1883", mqtt_protocol="3.1.1")
    assert (
        config.ingest is not None and config.ingest.protocol is MqttProtocol.V311 and not config.ingest.shared
    )


def test_mqtt_5_with_the_embedded_broker_is_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        ServerConfig.build(data_dir=tmp_path, mqtt_protocol="5")
    assert "3.1.1 only" in caught.value.message and caught.value.hint and "--mqtt" in caught.value.hint


@pytest.mark.parametrize(
    ("text", "protocol"),
    [
        ("5", MqttProtocol.V5),
        ("mqttv5", MqttProtocol.V5),
        ("3.1.1", MqttProtocol.V311),
        ("311", MqttProtocol.V311),
    ],
)
def test_protocol_spellings(text: str, protocol: MqttProtocol) -> None:
    assert parse_mqtt_protocol(text) is protocol


def test_an_unknown_protocol_is_refused() -> None:
    with pytest.raises(ConfigError, match="--mqtt-protocol"):
        parse_mqtt_protocol("4")


def test_the_client_id_is_stable_per_data_directory(tmp_path: Path) -> None:
    first = ingest_client_id(tmp_path / "a")
    assert first == ingest_client_id(tmp_path / "a")
    assert first != ingest_client_id(tmp_path / "b")
    assert first.startswith("edgefleet-ingest-") and len(first) <= 64


def test_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ConfigError):
        IngestSettings(protocol=MqttProtocol.V5, client_id="x", batch_max=10, queue_max=5)
    with pytest.raises(ConfigError):
        DriftSettings(interval_s=0)
    with pytest.raises(ConfigError, match="http"):
        DriftSettings(webhook_url="ftp://example.com/hook")
    assert DriftSettings(webhook_url="https://hooks.example.com/x").webhook_url


def test_drift_settings_from_command_line_options() -> None:
    settings = DriftSettings.from_options(
        webhook_url="https://hooks.example.com/x",
        cohorts=("tag:ring=canary",),
        thresholds={"psi_alert": 0.3, "min_samples": 200},
        interval_s=30.0,
    )
    assert settings.thresholds.psi_alert == 0.3 and settings.thresholds.min_samples == 200
    assert settings.thresholds.js_alert == 0.3 and settings.interval_s == 30.0
    assert settings.cohorts == ("tag:ring=canary",)
    with pytest.raises(ConfigError, match="psi"):
        DriftSettings.from_options(thresholds={"psi_warn": 0.5, "psi_alert": 0.2})
    with pytest.raises(ConfigError, match="unknown drift thresholds"):
        DriftSettings.from_options(thresholds={"psi_panic": 1.0})
    with pytest.raises(ConfigError, match="--drift-cohort"):
        DriftSettings.from_options(cohorts=("site=lab",))
