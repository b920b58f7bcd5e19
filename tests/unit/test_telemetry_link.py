"""The MQTT link's pure parts: broker URLs and PUBACK bookkeeping (the rest runs against Mosquitto)."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from edge_agent.telemetry.mqtt_link import BrokerAddress, LinkSettings, _Session, parse_mqtt_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1884", BrokerAddress("127.0.0.1", 1884, tls=False)),
        ("mqtt://broker.local", BrokerAddress("broker.local", 1883, tls=False)),
        ("mqtts://broker.example.com", BrokerAddress("broker.example.com", 8883, tls=True)),
        ("MQTTS://[::1]:9000/", BrokerAddress("::1", 9000, tls=True)),
    ],
)
def test_broker_urls(url: str, expected: BrokerAddress) -> None:
    assert parse_mqtt_url(url) == expected


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://broker:1883", "not an MQTT URL"),
        ("broker:1883", "not an MQTT URL"),
        ("mqtt://:1883", "names no host"),
        ("mqtt://broker:99999", "port"),
        ("mqtt://user:secret@broker", "--mqtt-username"),
        ("mqtt://broker/topic", "no path"),
    ],
)
def test_bad_broker_urls_say_what_to_write(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_mqtt_url(url)


def test_tls_follows_the_scheme_or_a_ca_file(tmp_path: object) -> None:
    from pathlib import Path

    plain = BrokerAddress("h", 1883)
    assert not LinkSettings(plain, "c").tls
    assert LinkSettings(plain, "c", ca_file=Path("ca.pem")).tls
    assert LinkSettings(BrokerAddress("h", 8883, tls=True), "c").tls


def test_acks_map_back_to_seqs_even_when_they_beat_publish() -> None:
    session = _Session(MagicMock(), will_seq=0)
    session.track(mid=1, seq=10)
    session.on_ack(mid=2, ok=True)  # the PUBACK for mid 2 came before publish() returned it
    session.track(mid=2, seq=11)
    session.track(mid=3, seq=12)
    session.on_ack(mid=3, ok=False)  # the broker refused this one
    assert session.in_flight == 1
    assert session.take_settled() == ([11], [12])
    session.on_ack(mid=1, ok=True)
    assert session.take_settled() == ([10], [])
    assert session.in_flight == 0
