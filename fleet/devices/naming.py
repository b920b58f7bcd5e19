"""What a device id, fleet name or tag may look like, and the MQTT topics a device owns.

Ids become MQTT topic levels, Mosquitto user names and ACL lines, so they are deliberately narrow:
no '/', '+', '#', ':', whitespace or control characters can ever reach a topic or a config file.
The topic layout and channels are the MQTT contract's (``models.mqtt_contract``), imported here,
never re-declared; the patterns below are at most as wide as the contract's topic segments, and
a fleet name is shorter (it is a 64-character column).
"""

from __future__ import annotations

import re
from typing import Final

from models.mqtt_contract import DEFAULT_FLEET as CONTRACT_DEFAULT_FLEET
from models.mqtt_contract import TOPIC_ROOT as CONTRACT_TOPIC_ROOT
from models.mqtt_contract import UPSTREAM_CHANNELS, Channel

DEVICE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
FLEET_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TAG_KEY_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$"
TAG_VALUE_MAX_LENGTH: Final = 256
PROFILE_PATTERN: Final = r"^[a-z0-9][a-z0-9._-]{0,63}$"
DEFAULT_FLEET: Final = CONTRACT_DEFAULT_FLEET

TOPIC_ROOT: Final = CONTRACT_TOPIC_ROOT
DEVICE_PUBLISHES: Final = tuple(channel.value for channel in UPSTREAM_CHANNELS)
DEVICE_SUBSCRIBES: Final = (Channel.DESIRED.value,)


def is_device_id(value: str) -> bool:
    return re.fullmatch(DEVICE_ID_PATTERN, value) is not None


def is_fleet_name(value: str) -> bool:
    return re.fullmatch(FLEET_PATTERN, value) is not None


def device_topic(fleet: str, device_id: str, leaf: str) -> str:
    """``edgefleet/v1/{fleet}/{device}/{leaf}``, refusing ids that could widen the topic."""
    if not is_fleet_name(fleet):
        raise ValueError(f"fleet {fleet!r} does not match {FLEET_PATTERN}")
    if not is_device_id(device_id):
        raise ValueError(f"device id {device_id!r} does not match {DEVICE_ID_PATTERN}")
    return f"{TOPIC_ROOT}/{fleet}/{device_id}/{leaf}"


def parse_tag(text: str) -> tuple[str, str]:
    """``key=value`` as given on the command line or in a query string."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"tag {text!r} is not KEY=VALUE")
    check_tag(key, value)
    return key, value


def check_tag(key: str, value: str) -> None:
    if re.fullmatch(TAG_KEY_PATTERN, key) is None:
        raise ValueError(f"tag key {key!r} must match {TAG_KEY_PATTERN}")
    if len(value) > TAG_VALUE_MAX_LENGTH or any(ord(c) < 32 for c in value):
        raise ValueError(
            f"tag value for {key!r} is longer than {TAG_VALUE_MAX_LENGTH} or has control characters"
        )
