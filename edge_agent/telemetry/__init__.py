"""Device telemetry over MQTT: metrics, drift windows, status and events, with a durable spool.

Inside out:

* pure parts: ``histogram`` (latency quantiles), ``backoff`` (full jitter), ``commands``
  (``interpret_desired``), the ``DriftAccumulator`` and ``TokenBucket``;
* observers on the inference path: ``MetricsCollector``, ``DriftMonitor``, ``RawCapture``, behind
  ``ObserverFanOut`` (see ``InferenceObserver``);
* ``spool`` (SQLite: seq, durability, byte limit with priorities) and ``outbox`` (payloads to
  spooled messages);
* ``mqtt_link`` (paho-mqtt 2, MQTT 5: connection, Last Will, replay, backoff);
* ``service.Telemetry``, which wires them for the agent.

Nothing here imports a runtime or a training framework.
"""

from edge_agent.telemetry.backoff import Backoff, backoff_ceiling, backoff_delay
from edge_agent.telemetry.capture import CaptureSettings, RawCapture, TokenBucket
from edge_agent.telemetry.commands import (
    Accepted,
    CommandHandler,
    CommandOutcome,
    Ignored,
    Rejected,
    interpret_desired,
)
from edge_agent.telemetry.drift import ClosedWindow, DriftAccumulator, DriftMonitor
from edge_agent.telemetry.histogram import DEFAULT_BOUNDS_MS, LatencyHistogram, quantile_from_buckets
from edge_agent.telemetry.metrics import MetricsCollector
from edge_agent.telemetry.mqtt_link import BrokerAddress, LinkSettings, MqttLink, parse_mqtt_url
from edge_agent.telemetry.observer import OK, InferenceObserver, ObserverFanOut
from edge_agent.telemetry.outbox import Outbox
from edge_agent.telemetry.service import Telemetry, TelemetrySettings
from edge_agent.telemetry.spool import DROP_ORDER, DropReport, Spool, SpooledMessage, SpoolError
from edge_agent.telemetry.status import DeviceIdentity, StatusBuilder
from edge_agent.telemetry.system import SystemSampler, host_facts, read_thermal_zones

__all__ = [
    "DEFAULT_BOUNDS_MS",
    "DROP_ORDER",
    "OK",
    "Accepted",
    "Backoff",
    "BrokerAddress",
    "CaptureSettings",
    "ClosedWindow",
    "CommandHandler",
    "CommandOutcome",
    "DeviceIdentity",
    "DriftAccumulator",
    "DriftMonitor",
    "DropReport",
    "Ignored",
    "InferenceObserver",
    "LatencyHistogram",
    "LinkSettings",
    "MetricsCollector",
    "MqttLink",
    "ObserverFanOut",
    "Outbox",
    "RawCapture",
    "Rejected",
    "Spool",
    "SpoolError",
    "SpooledMessage",
    "StatusBuilder",
    "SystemSampler",
    "Telemetry",
    "TelemetrySettings",
    "TokenBucket",
    "backoff_ceiling",
    "backoff_delay",
    "host_facts",
    "interpret_desired",
    "parse_mqtt_url",
    "quantile_from_buckets",
    "read_thermal_zones",
]
