"""The MQTT ingest: devices' status, metrics, drift windows, events and OTA reports into the database.

- ``decode`` (pure): topic and payload checked against ``models.mqtt_contract`` and the
  database's limits, or a ``Dropped`` with its reason;
- ``status`` (pure): births, graceful goodbyes and Last Wills, ordered by seq;
- ``plan`` (pure): the rows a batch inserts and the changes it makes to each device;
- ``writer``: one transaction per batch, idempotent on (device, seq), enrollment on first birth;
- ``consumer``: the paho-mqtt client, reconnecting and re-subscribing, and the writer thread.

See docs/fleet-server.md, "MQTT ingest".
"""

from fleet.ingest.consumer import BrokerEndpoint, MqttIngest
from fleet.ingest.decode import Decoded, Dropped, DropReason, Message, decode_message
from fleet.ingest.plan import DeviceChange, RowPlan, device_changes, plan_rows
from fleet.ingest.status import DeviceState, StatusVerdict, after_status, judge_status
from fleet.ingest.writer import BatchResult, BatchWriter, TransientStoreError

__all__ = [
    "BatchResult",
    "BatchWriter",
    "BrokerEndpoint",
    "Decoded",
    "DeviceChange",
    "DeviceState",
    "DropReason",
    "Dropped",
    "Message",
    "MqttIngest",
    "RowPlan",
    "StatusVerdict",
    "TransientStoreError",
    "after_status",
    "decode_message",
    "device_changes",
    "judge_status",
    "plan_rows",
]
