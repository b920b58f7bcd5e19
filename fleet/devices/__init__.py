"""The device registry: naming rules, MQTT credentials, provisioning and enrollment."""

from fleet.devices.credentials import (
    DEFAULT_ITERATIONS,
    DeviceGrant,
    MqttAccount,
    acl_text,
    generate_mqtt_password,
    hash_mqtt_password,
    password_file_text,
    verify_mqtt_password,
)
from fleet.devices.naming import (
    DEFAULT_FLEET,
    DEVICE_ID_PATTERN,
    DEVICE_PUBLISHES,
    DEVICE_SUBSCRIBES,
    FLEET_PATTERN,
    TOPIC_ROOT,
    device_topic,
    is_device_id,
    is_fleet_name,
    parse_tag,
)

__all__ = [
    "DEFAULT_FLEET",
    "DEFAULT_ITERATIONS",
    "DEVICE_ID_PATTERN",
    "DEVICE_PUBLISHES",
    "DEVICE_SUBSCRIBES",
    "FLEET_PATTERN",
    "TOPIC_ROOT",
    "DeviceGrant",
    "MqttAccount",
    "acl_text",
    "device_topic",
    "generate_mqtt_password",
    "hash_mqtt_password",
    "is_device_id",
    "is_fleet_name",
    "parse_tag",
    "password_file_text",
    "verify_mqtt_password",
]
