"""The MQTT side of the ingest: one paho-mqtt 2.x client and one writer thread.

- paho's network thread (``loop_start``) receives messages and puts each, with its arrival time,
  on a bounded queue; nothing else happens there. When the writer falls behind and the queue is
  full, the network thread waits, TCP pushes back on the broker, and the broker queues for the
  ingest (its persistent session) instead of the server growing without bound.
- The writer thread takes up to ``batch_max`` messages, waiting at most ``batch_wait_s`` for a
  batch to fill, and hands them to ``BatchWriter`` (one transaction per batch). When the
  database is away it keeps the batch and retries with backoff.

paho reconnects by itself (``reconnect_delay_set``: doubling from the minimum to the maximum
delay) and ``on_connect`` subscribes again every time. The session is persistent by default
(MQTT 3.1.1 ``clean_session=False``; MQTT 5 ``clean_start=False`` with a session expiry), so the
broker keeps QoS 1 messages for the ingest while it is away. Messages are acknowledged to the
broker when they are queued here, so a crash of the server loses what was queued and not yet
written (at most ``queue_max`` messages; normally a batch).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet.config import BrokerSettings, EmbeddedBrokerSettings, IngestSettings, MqttProtocol
from fleet.db.types import utcnow
from fleet.ingest.decode import UNKNOWN_CHANNEL, DropReason, Message
from fleet.ingest.fastpaho import BufferedClient
from fleet.ingest.writer import BatchWriter, TransientStoreError
from fleet.metrics import IngestMetrics
from models.mqtt_contract import ingest_subscriptions

log = logging.getLogger(__name__)

_PUT_WAIT_S = 0.5
_STORE_RETRY_MIN_S = 0.5
_STORE_RETRY_MAX_S = 10.0


@dataclass(frozen=True)
class BrokerEndpoint:
    """Where the ingest connects, and as whom."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    @classmethod
    def of(cls, settings: BrokerSettings) -> BrokerEndpoint:
        if isinstance(settings, EmbeddedBrokerSettings):
            return cls(settings.listen.connect_host, settings.listen.port)
        url = settings.url
        return cls(url.host, url.port, url.username, url.password, url.tls)

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class MqttIngest:
    """Subscribes to every device's upward channels and writes what arrives, until ``stop``."""

    def __init__(
        self,
        settings: IngestSettings,
        endpoint: BrokerEndpoint,
        writer: BatchWriter,
        metrics: IngestMetrics,
        *,
        fleet: str = "+",
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.writer = writer
        self.metrics = metrics
        self.subscriptions = ingest_subscriptions(fleet, shared=settings.shared)
        self._queue: queue.Queue[Message] = queue.Queue(maxsize=settings.queue_max)
        self._client = self._new_client()
        self._ready = threading.Event()
        self._closing = threading.Event()
        self._writer_thread: threading.Thread | None = None
        self.metrics.queue_depth.set_function(self._queue.qsize)

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (a broker that is not up yet is retried) and start writing."""
        if self._writer_thread is not None:
            return
        self._writer_thread = threading.Thread(target=self._run_writer, name="ingest-writer", daemon=True)
        self._writer_thread.start()
        kwargs: dict[str, Any] = {"keepalive": self.settings.keepalive_s}
        if self.settings.protocol is MqttProtocol.V5:
            kwargs["clean_start"] = not self.settings.persistent
            if self.settings.persistent:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = self.settings.session_expiry_s
                kwargs["properties"] = properties
        self._client.connect_async(self.endpoint.host, self.endpoint.port, **kwargs)
        self._client.loop_start()
        log.info(
            "MQTT ingest connecting to %s as %s (MQTT %s, %s subscriptions)",
            self.endpoint,
            self.settings.client_id,
            self.settings.protocol.value,
            "shared" if self.settings.shared else "plain",
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop receiving, write what was received, and return (within about ``timeout``)."""
        self._closing.set()
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
        self._ready.clear()
        self.metrics.connected.set(0)
        thread, self._writer_thread = self._writer_thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.error(
                    "the ingest writer did not finish within %.0f s; %d messages unwritten",
                    timeout,
                    self._queue.qsize(),
                )

    @property
    def ready(self) -> bool:
        """Connected and subscribed."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    # --- paho ---------------------------------------------------------------------------------------

    def _new_client(self) -> mqtt.Client:
        settings = self.settings
        v5 = settings.protocol is MqttProtocol.V5
        client = BufferedClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else not settings.persistent,
        )
        paho_log = logging.getLogger("fleet.ingest.paho")
        if paho_log.isEnabledFor(logging.DEBUG):  # paho logs twice per message: only when asked
            client.enable_logger(paho_log)
        if self.endpoint.username:
            client.username_pw_set(self.endpoint.username, self.endpoint.password)
        if self.endpoint.tls:
            client.tls_set()
        client.reconnect_delay_set(
            max(1, round(settings.reconnect_min_s)), max(1, round(settings.reconnect_max_s))
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.error(
                "the MQTT broker at %s refused the ingest: %s%s",
                self.endpoint,
                reason,
                " (check the user name and password in --mqtt)" if "auth" in str(reason).lower() else "",
            )
            return
        self.metrics.connects.inc()
        resumed = bool(getattr(flags, "session_present", False))
        log.info("MQTT ingest connected to %s%s", self.endpoint, " (session resumed)" if resumed else "")
        # Subscribe on every connect: a broker that lost the session (or a clean one) needs it.
        client.subscribe([(topic, 1) for topic in self.subscriptions])

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any
    ) -> None:
        refused = [
            f"{topic}: {reason}"
            for topic, reason in zip(self.subscriptions, reasons, strict=False)
            if reason.is_failure
        ]
        if refused:
            log.error(
                "the MQTT broker refused %d ingest subscription(s): %s (does the server's MQTT account "
                "have read access to edgefleet/v1/#? see `edgefleet devices credentials`)",
                len(refused),
                "; ".join(refused),
            )
            return
        self._ready.set()
        self.metrics.connected.set(1)
        log.info("MQTT ingest subscribed: %s", ", ".join(self.subscriptions))

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._ready.clear()
        self.metrics.connected.set(0)
        if not self._closing.is_set():
            log.warning(
                "MQTT ingest lost the broker at %s (%s); reconnecting with backoff", self.endpoint, reason
            )

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        item = Message(message.topic, bytes(message.payload), utcnow())
        while True:
            try:
                self._queue.put(item, timeout=_PUT_WAIT_S)
                return
            except queue.Full:
                if self._closing.is_set():
                    self.metrics.drop(UNKNOWN_CHANNEL, DropReason.STORE_FAILED.value)
                    return

    # --- the writer thread --------------------------------------------------------------------------

    def _run_writer(self) -> None:
        while True:
            batch = self._next_batch()
            if batch:
                self._write(batch)
            elif self._closing.is_set() and self._queue.empty():
                return

    def _next_batch(self) -> list[Message]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.batch_wait_s
        limit = self.settings.batch_max
        while len(batch) < limit:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[Message]) -> None:
        delay = _STORE_RETRY_MIN_S
        while True:
            started = time.perf_counter()
            try:
                self.writer.write(batch)
            except TransientStoreError as exc:
                self.metrics.store_retries.inc()
                if self._closing.is_set() and delay >= _STORE_RETRY_MAX_S:
                    log.error(
                        "giving up on %d messages at shutdown: the database is away (%s)", len(batch), exc
                    )
                    self.metrics.drop(UNKNOWN_CHANNEL, DropReason.STORE_FAILED.value, len(batch))
                    return
                log.warning(
                    "the database did not take %d messages (%s); retrying in %.1f s", len(batch), exc, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, _STORE_RETRY_MAX_S)
                continue
            except Exception:  # a bug here must not end the ingest: drop the batch, loudly
                log.exception("the ingest failed on a batch of %d messages; dropping it", len(batch))
                self.metrics.drop(UNKNOWN_CHANNEL, DropReason.STORE_FAILED.value, len(batch))
                return
            self.metrics.batches.observe(time.perf_counter() - started)
            self.metrics.batch_size.observe(len(batch))
            return
