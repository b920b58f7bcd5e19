"""Each device's desired state: kept in the database, published retained on its ``desired`` topic.

The database is the truth (``DesiredStateRecord``); MQTT is how devices hear it. The controller
changes a device's record in the same transaction as the rollout step that decides it, and only
then asks the publisher to send it, so a crash in between loses nothing: the publisher sends
every record whose revision the broker has not acknowledged yet, at start, on every reconnect,
and every ``reconcile_s``.

- Retained: an offline device gets its desired state when it reconnects and subscribes.
- Asked on connect: a device's birth (its status with ``online: true``) is its request; the
  publisher answers it with the device's current desired state, which also repairs a broker that
  lost its retained messages (a restart without persistence).
- One thread publishes, reading each record when it sends it, so a newer revision is never
  overtaken on the wire by an older one from this server.
- Revisions only grow, and are at least the time in milliseconds: a device that remembers
  revision N from before a database was restored still accepts the next one.

The publisher has its own MQTT connection with the server's account (the ingest's connection is
a tuned, receive-only client; see docs/rollouts.md).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from fleet.config import MqttProtocol
from fleet.db.models import Device
from fleet.db.session import Database
from fleet.db.types import utcnow
from fleet.ingest.consumer import BrokerEndpoint
from fleet.rollouts.models import DesiredStateRecord
from models.mqtt_contract import (
    TOPIC_ROOT,
    Channel,
    ContractError,
    DesiredModel,
    DesiredState,
    encode,
    parse_topic,
    topic,
)

log = logging.getLogger(__name__)

BIRTH_GROUP = "edgefleet-desired"


class DesiredNotifier(Protocol):
    """Told which devices' desired states changed (after the change committed)."""

    def nudge(self, device_ids: Iterable[str]) -> None: ...


# --- the records ----------------------------------------------------------------------------------


def next_revision(previous: int | None, now: datetime) -> int:
    return max((previous or 0) + 1, int(now.timestamp() * 1000))


def set_desired_models(
    session: Session, device_id: str, changes: Mapping[str, DesiredModel | None], *, now: datetime
) -> DesiredStateRecord:
    """Set (or, with None, remove) models in a device's desired state; a new revision."""
    record = session.get(DesiredStateRecord, device_id)
    if record is None:
        record = DesiredStateRecord(device_id=device_id, revision=0, models={}, published_revision=None)
        session.add(record)
    models = dict(record.models or {})
    for name, wanted in changes.items():
        if wanted is None:
            models.pop(name, None)
        else:
            models[name] = wanted.model_dump(mode="json")
    record.models = models
    record.revision = next_revision(record.revision, now)
    record.updated_at = now
    return record


def desired_state(record: DesiredStateRecord) -> DesiredState:
    return DesiredState(
        revision=record.revision,
        models={name: DesiredModel.model_validate(data) for name, data in (record.models or {}).items()},
        ts=record.updated_at,
    )


def unpublished(session: Session, *, limit: int = 1000) -> list[str]:
    query = (
        select(DesiredStateRecord.device_id)
        .where(
            or_(
                DesiredStateRecord.published_revision.is_(None),
                DesiredStateRecord.published_revision < DesiredStateRecord.revision,
            )
        )
        .order_by(DesiredStateRecord.updated_at)
        .limit(limit)
    )
    return list(session.scalars(query).all())


def birth_device(topic_name: str, payload: bytes, *, retained: bool) -> str | None:
    """The device whose live birth this is (a status with ``online: true``), else None. Pure.

    A retained status is the broker replaying the last one on subscribe, not a device connecting.
    """
    if retained:
        return None
    try:
        _, device, channel = parse_topic(topic_name)
        data = json.loads(payload)
    except (ContractError, ValueError):
        return None
    if channel is not Channel.STATUS or not isinstance(data, dict) or data.get("online") is not True:
        return None
    return device


# --- the publisher -------------------------------------------------------------------------------


class DesiredPublisher:
    """Publishes desired states, retained, QoS 1; marks each published once the broker acknowledged."""

    def __init__(
        self,
        database: Database,
        endpoint: BrokerEndpoint,
        *,
        protocol: MqttProtocol,
        client_id: str,
        reconcile_s: float = 10.0,
        ack_timeout_s: float = 10.0,
        answer_births: bool = True,
    ) -> None:
        self.database = database
        self.endpoint = endpoint
        self.protocol = protocol
        self.reconcile_s = reconcile_s
        self.ack_timeout_s = ack_timeout_s
        self.answer_births = answer_births
        self.published = 0
        self._queue: queue.Queue[tuple[str, ...] | None] = queue.Queue()
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = self._new_client(client_id)

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="rollout-desired", daemon=True)
        self._thread.start()
        self._client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
        self._client.loop_start()
        log.info("desired-state publisher connecting to %s", self.endpoint)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._queue.put(None)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def nudge(self, device_ids: Iterable[str]) -> None:
        ids = tuple(dict.fromkeys(device_ids))
        if ids:
            self._queue.put(ids)

    # --- paho ---------------------------------------------------------------------------------------

    def _new_client(self, client_id: str) -> mqtt.Client:
        v5 = self.protocol is MqttProtocol.V5
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else True,
        )
        if self.endpoint.username:
            client.username_pw_set(self.endpoint.username, self.endpoint.password)
        if self.endpoint.tls:
            client.tls_set()
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.error("the MQTT broker at %s refused the desired-state publisher: %s", self.endpoint, reason)
            return
        if self.answer_births:
            births = f"{TOPIC_ROOT}/+/+/{Channel.STATUS.value}"
            if self.protocol is MqttProtocol.V5:  # one replica answers each birth
                births = f"$share/{BIRTH_GROUP}/{births}"
            client.subscribe(births, qos=1)
        self._connected.set()
        self._queue.put(())  # publish whatever is pending
        log.info("desired-state publisher connected to %s", self.endpoint)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning(
                "desired-state publisher lost the broker at %s (%s); reconnecting", self.endpoint, reason
            )

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        device = birth_device(message.topic, bytes(message.payload), retained=bool(message.retain))
        if device is not None:
            self._queue.put((device,))

    # --- the publishing thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=self.reconcile_s)
            except queue.Empty:
                item = ()
            if item is None:
                return
            if not self._connected.is_set():
                continue  # the next connect queues a full reconcile
            try:
                self._publish_all(item or None)
            except SQLAlchemyError as exc:
                log.warning("desired states not published: the database is away (%s)", _first_line(exc))
            except Exception:  # the publisher must outlive a bug in one publication
                log.exception("publishing desired states failed")

    def _publish_all(self, device_ids: tuple[str, ...] | None) -> None:
        """The given devices' records, or (None) every record not yet acknowledged."""
        if device_ids is None:
            with self.database.session() as session:
                device_ids = tuple(unpublished(session))
        for device_id in device_ids:
            if self._stop.is_set() or not self._connected.is_set():
                return
            self._publish_one(device_id)

    def _publish_one(self, device_id: str) -> None:
        with self.database.session() as session:
            row = session.execute(
                select(DesiredStateRecord, Device.fleet)
                .join(Device, Device.id == DesiredStateRecord.device_id)
                .where(DesiredStateRecord.device_id == device_id)
            ).first()
            if row is None:
                return  # never desired anything: nothing to say (an empty retained message would clear)
            record, fleet = row
            payload = encode(desired_state(record))
            revision = record.revision
        info = self._client.publish(topic(fleet, device_id, Channel.DESIRED), payload, qos=1, retain=True)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning(
                "desired state of %s not sent (%s); retrying later", device_id, mqtt.error_string(info.rc)
            )
            return
        try:
            info.wait_for_publish(self.ack_timeout_s)
        except (RuntimeError, ValueError) as exc:
            log.warning("desired state of %s not acknowledged (%s); retrying later", device_id, exc)
            return
        if not info.is_published():
            log.warning(
                "desired state of %s not acknowledged in %.0f s; retrying later",
                device_id,
                self.ack_timeout_s,
            )
            return
        self.published += 1
        with self.database.session() as session:
            current = session.get(DesiredStateRecord, device_id)
            if current is not None and (current.published_revision or 0) < revision:
                current.published_revision = revision
                current.published_at = utcnow()
        log.debug("desired state of %s revision %d published", device_id, revision)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
