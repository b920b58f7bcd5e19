"""Mosquitto password hashes and ACL text, and the naming rules that keep topics narrow."""

from __future__ import annotations

import base64
import hashlib

import pytest

from fleet.devices.credentials import (
    DeviceGrant,
    MqttAccount,
    acl_text,
    generate_mqtt_password,
    hash_mqtt_password,
    password_file_text,
    verify_mqtt_password,
)
from fleet.devices.naming import DEVICE_PUBLISHES, device_topic, is_device_id, parse_tag

# Written by Mosquitto 2.0.11's own `mosquitto_passwd -b passwd alice secret`: an independent
# implementation of the same format.
MOSQUITTO_PASSWD_LINE = (
    "alice:$7$101$bkMDR7helXo+UkkR$"
    "6weQKcxEV7xS1A0HC+NGlRkxFatZMGO5/jdYyC2th3bNCl4Yxsaadzhr47kak38bz/g7fdLq73D26FcFYljlOw=="
)


def test_verifies_a_hash_written_by_mosquitto_passwd() -> None:
    _, encoded = MOSQUITTO_PASSWD_LINE.split(":", 1)
    assert verify_mqtt_password("secret", encoded)
    assert not verify_mqtt_password("Secret", encoded)


def test_hash_layout_is_pbkdf2_sha512_with_the_raw_salt() -> None:
    salt = bytes(range(12))
    encoded = hash_mqtt_password("pw", iterations=101, salt=salt)
    tag, iterations, salt_b64, hash_b64 = encoded.split("$")[1:]
    assert (tag, iterations) == ("7", "101")
    assert base64.b64decode(salt_b64) == salt
    assert base64.b64decode(hash_b64) == hashlib.pbkdf2_hmac("sha512", b"pw", salt, 101, 64)


def test_round_trip_and_fresh_salts() -> None:
    password = generate_mqtt_password()
    first, second = hash_mqtt_password(password), hash_mqtt_password(password)
    assert first != second  # a new salt each time
    assert verify_mqtt_password(password, first) and verify_mqtt_password(password, second)
    assert not verify_mqtt_password(password + "x", first)


@pytest.mark.parametrize(
    "encoded",
    ["", "plain", "$6$abc$def", "$7$x$AAAA$AAAA", "$7$101$not base64$AAAA", "$7$0$AAAA$AAAA", "$7$101$AAAA"],
)
def test_malformed_hashes_never_verify(encoded: str) -> None:
    assert verify_mqtt_password("anything", encoded) is False


def test_generated_passwords_are_safe_in_files_and_urls() -> None:
    passwords = {generate_mqtt_password() for _ in range(100)}
    assert len(passwords) == 100
    assert all(len(p) >= 32 and all(c.isalnum() or c in "-_" for c in p) for p in passwords)


def test_password_file_is_sorted_user_colon_hash_lines() -> None:
    text = password_file_text([MqttAccount("zed", "$7$1$AA$BB"), MqttAccount("amy", "$7$1$CC$DD")])
    assert text == "amy:$7$1$CC$DD\nzed:$7$1$AA$BB\n"


@pytest.mark.parametrize(
    ("accounts", "problem"),
    [
        ([MqttAccount("a:b", "$7$1$A$B")], "MQTT user name"),
        ([MqttAccount("a b", "$7$1$A$B")], "MQTT user name"),
        ([MqttAccount("a", "$6$plain")], "PBKDF2"),
        ([MqttAccount("a", "$7$1$A$B"), MqttAccount("a", "$7$1$C$D")], "twice"),
    ],
)
def test_password_file_refuses_what_would_corrupt_it(accounts: list[MqttAccount], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        password_file_text(accounts)


def test_acl_gives_each_device_its_own_topics_only() -> None:
    text = acl_text([DeviceGrant("cam-b", "east"), DeviceGrant("cam-a", "west")], "srv")
    blocks = {
        block.splitlines()[0]: block.splitlines()[1:]
        for block in text.split("\n\n")
        if block.startswith("user")
    }
    assert blocks["user srv"] == ["topic readwrite #"]
    for device, fleet in (("cam-a", "west"), ("cam-b", "east")):
        lines = blocks[f"user {device}"]
        assert lines == [f"topic write edgefleet/v1/{fleet}/{device}/{leaf}" for leaf in DEVICE_PUBLISHES] + [
            f"topic read edgefleet/v1/{fleet}/{device}/desired"
        ]
    assert "%" not in text and "pattern" not in text  # no rights that depend on a client-chosen id
    assert text.index("user cam-a") < text.index("user cam-b")


def test_acl_refuses_a_device_named_like_the_server() -> None:
    with pytest.raises(ValueError, match="server"):
        acl_text([DeviceGrant("srv", "f")], "srv")


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "a b", "a:b", "-lead", "x" * 129, "é", "a\nb"])
def test_device_ids_cannot_widen_a_topic(bad: str) -> None:
    assert not is_device_id(bad)
    with pytest.raises(ValueError):
        device_topic("default", bad, "status")


def test_topics_and_tags() -> None:
    assert device_topic("plant-7", "cam.01", "metrics") == "edgefleet/v1/plant-7/cam.01/metrics"
    with pytest.raises(ValueError):
        device_topic("a/b", "cam", "status")
    assert parse_tag("site=lab=2") == ("site", "lab=2")
    for bad in ("novalue", "=x", "bad key=x", "k=\x01"):
        with pytest.raises(ValueError):
            parse_tag(bad)
