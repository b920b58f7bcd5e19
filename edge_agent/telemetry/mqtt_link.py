"""The agent's MQTT connection: connect, publish the spool in seq order, and come back after outages.

paho-mqtt 2.x, MQTT 5, ``CallbackAPIVersion.VERSION2``. Three kinds of threads, none of which
waits on another's I/O:

- paho's network thread (one per connection) runs the callbacks. They only record what
  happened (CONNACK, PUBACK, disconnect, an incoming message) and wake a thread of ours.
- The connection thread owns the connection's life: it reserves the Last Will's seq, connects
  (credentials, TLS, a retained will on the status topic), subscribes, lets the telemetry spool
  the birth status, and after a loss waits out a backoff with full jitter before trying again.
  Every connection is a fresh paho client with ``reconnect_on_failure=False``: paho never
  reconnects or re-sends on its own, so the spool is the one source of what gets (re)sent.
- The publisher thread drains the spool in seq order, keeping at most ``inflight`` messages
  unacknowledged, and deletes each message when its PUBACK arrives (a failure code from the
  broker discards it, and it is reported as dropped). After a reconnect it starts again from the
  oldest message still spooled: a message whose PUBACK was lost is sent twice, which QoS 1
  allows and the server's dedup on (device, seq) absorbs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from edge_agent.telemetry.backoff import Backoff
from edge_agent.telemetry.spool import Spool

log = logging.getLogger("edgefleet.agent.mqtt")

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
IDLE_WAIT_S = 0.25
STABLE_CONNECTION_S = 10.0
"""A connection that lasted this long resets the backoff; a flapping one keeps growing it."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> BrokerAddress:
    """``mqtt://HOST[:PORT]`` (plain, 1883) or ``mqtts://HOST[:PORT]`` (TLS, 8883)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"{url!r} is not an MQTT URL: use mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS")
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host: use mqtt://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"{url!r}: an MQTT URL has no path or query; give credentials with their own options"
        )
    if parts.username or parts.password:
        raise ValueError(
            f"{url!r}: put the user name and password in --mqtt-username and --mqtt-password-file, "
            "not in the URL (it ends up in logs)"
        )
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError(f"{url!r}: the port must be a number from 1 to 65535") from None
    return BrokerAddress(parts.hostname, port, tls=scheme == "mqtts")


@dataclass(frozen=True)
class LinkSettings:
    broker: BrokerAddress
    client_id: str
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    inflight: int = 20
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    connack_timeout_s: float = 10.0
    protocol: str = "5"  # "5", or "3.1.1" for brokers without MQTT 5 (the embedded amqtt)

    @property
    def mqtt_v5(self) -> bool:
        return self.protocol == "5"

    @property
    def tls(self) -> bool:
        return self.broker.tls or self.ca_file is not None or self.cert_file is not None


@dataclass
class LinkStats:
    connects: int = 0
    connect_failures: int = 0
    published: int = 0
    acked: int = 0
    refused: int = 0


class _Session:
    """One connection: its paho client, its CONNACK, and the messages it has in flight (mid → seq)."""

    def __init__(self, client: mqtt.Client, will_seq: int) -> None:
        self.client = client
        self.will_seq = will_seq
        self.connack = threading.Event()
        self.connack_failure: str | None = None
        self.lost = threading.Event()
        self.cursor = -1
        self.connected_at = 0.0
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = {}
        self._early: dict[int, bool] = {}
        self._acked: list[int] = []
        self._refused: list[int] = []

    def track(self, mid: int, seq: int) -> None:
        with self._lock:
            # A PUBACK can beat publish() returning its mid to us: it waits in _early.
            early = self._early.pop(mid, None)
            if early is None:
                self._inflight[mid] = seq
            else:
                (self._acked if early else self._refused).append(seq)

    def on_ack(self, mid: int, ok: bool) -> None:
        with self._lock:
            seq = self._inflight.pop(mid, None)
            if seq is None:
                self._early[mid] = ok
            else:
                (self._acked if ok else self._refused).append(seq)

    def take_settled(self) -> tuple[list[int], list[int]]:
        with self._lock:
            acked, self._acked = self._acked, []
            refused, self._refused = self._refused, []
        return acked, refused

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._inflight)


WillFactory = Callable[[int], tuple[str, bytes]]
"""Builds the Last Will for a will seq: ``(topic, payload)``."""


@dataclass
class LinkCallbacks:
    will: WillFactory
    on_connected: Callable[[int], None] = lambda will_seq: None
    """Runs on the connection thread once CONNACK succeeded, before replay starts (spool the birth here)."""
    on_message: Callable[[str, bytes], None] = lambda topic, payload: None
    """Runs on paho's network thread: must not block."""
    subscriptions: Sequence[str] = field(default_factory=tuple)


class MqttLink:
    """Keeps one device connected and its spool drained, until ``stop``."""

    def __init__(
        self,
        settings: LinkSettings,
        spool: Spool,
        callbacks: LinkCallbacks,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        if settings.inflight < 1:
            raise ValueError(f"inflight must be at least 1, got {settings.inflight}")
        self.settings = settings
        self.spool = spool
        self.callbacks = callbacks
        self.backoff = backoff or Backoff(settings.reconnect_min_s, settings.reconnect_max_s)
        self.stats = LinkStats()
        self._session: _Session | None = None
        self._session_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._connected_once = threading.Event()
        self._threads: list[threading.Thread] = []
        spool.add_listener(self._wake.set)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self._threads = [
            threading.Thread(target=self._run_connections, name="mqtt-connection", daemon=True),
            threading.Thread(target=self._run_publisher, name="mqtt-publisher", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop publishing and disconnect cleanly (the broker then keeps the will to itself)."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join()
        self._threads = []

    @property
    def connected(self) -> bool:
        session = self._session
        return session is not None and not session.lost.is_set()

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected:
                return True
            time.sleep(0.02)
        return self.connected

    def flush(self, timeout: float) -> bool:
        """Wait until every spooled message is acknowledged; False if the time ran out first."""
        deadline = time.monotonic() + timeout
        while self.spool.count > 0:
            if time.monotonic() >= deadline or self._stopping.is_set():
                return False
            self._wake.set()
            time.sleep(0.02)
        return True

    # --- the connection thread ------------------------------------------------------------------

    def _run_connections(self) -> None:
        while not self._stopping.is_set():
            session = self._connect()
            if session is None:
                self._pause()
                continue
            with self._session_lock:
                self._session = session
            self._wake.set()
            while not session.lost.wait(IDLE_WAIT_S):
                if self._stopping.is_set():
                    break
            with self._session_lock:
                self._session = None
            self._settle(session)  # PUBACKs that arrived before the loss still count
            if self._stopping.is_set():
                self._close(session, graceful=True)
                return
            self._close(session, graceful=False)
            if time.monotonic() - session.connected_at >= STABLE_CONNECTION_S:
                self.backoff.reset()
            log.warning("lost the connection to %s; reconnecting", self.settings.broker.url)
            self._pause()

    def _pause(self) -> None:
        delay = self.backoff.next_delay()
        log.info("next connection attempt in %.1f s", delay)
        self._stopping.wait(delay)

    def _connect(self) -> _Session | None:
        will_seq = self.spool.will_seq()
        will_topic, will_payload = self.callbacks.will(will_seq)
        try:
            client = self._new_client(will_topic, will_payload)
        except (OSError, ValueError) as exc:
            self.stats.connect_failures += 1
            log.error("cannot set up the MQTT client: %s", exc)
            return None
        session = _Session(client, will_seq)
        self._bind(session)
        broker = self.settings.broker
        try:
            if self.settings.mqtt_v5:
                client.connect(
                    broker.host, broker.port, keepalive=self.settings.keepalive_s, clean_start=True
                )
            else:
                client.connect(broker.host, broker.port, keepalive=self.settings.keepalive_s)
        except (OSError, ValueError) as exc:
            self.stats.connect_failures += 1
            log.warning("cannot reach the MQTT broker at %s: %s", broker.url, exc)
            return None
        client.loop_start()
        if not session.connack.wait(self.settings.connack_timeout_s) or session.connack_failure:
            self.stats.connect_failures += 1
            reason = session.connack_failure or f"no CONNACK within {self.settings.connack_timeout_s:.0f} s"
            log.warning("the MQTT broker at %s refused the connection: %s", broker.url, reason)
            self._close(session, graceful=False)
            return None
        session.connected_at = time.monotonic()
        self.stats.connects += 1
        for subscription in self.callbacks.subscriptions:
            client.subscribe(subscription, qos=1)
        try:
            self.callbacks.on_connected(will_seq)
        except Exception:
            log.exception("the on-connect hook failed; publishing goes on")
        log.info("connected to %s as %s", broker.url, self.settings.client_id)
        return session

    def _new_client(self, will_topic: str, will_payload: bytes) -> mqtt.Client:
        v5 = self.settings.mqtt_v5
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.settings.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            # The spool is the only source of resends, so no broker session is needed (v3.1.1).
            clean_session=None if v5 else True,
            reconnect_on_failure=False,
        )
        client.enable_logger(logging.getLogger("edgefleet.agent.paho"))
        if self.settings.username is not None:
            client.username_pw_set(self.settings.username, self.settings.password)
        if self.settings.tls:
            client.tls_set(
                ca_certs=_str(self.settings.ca_file),
                certfile=_str(self.settings.cert_file),
                keyfile=_str(self.settings.key_file),
            )
        client.will_set(will_topic, will_payload, qos=1, retain=True)
        client.max_inflight_messages_set(self.settings.inflight)
        return client

    def _bind(self, session: _Session) -> None:
        """paho callbacks: record, wake, return. Nothing here blocks on I/O."""

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            if reason.is_failure:
                session.connack_failure = _describe_refusal(reason)
            session.connack.set()

        def on_disconnect(
            client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
        ) -> None:
            session.lost.set()
            session.connack.set()
            self._wake.set()

        def on_publish(client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
            session.on_ack(mid, not reason.is_failure)
            self._wake.set()

        def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            self.callbacks.on_message(message.topic, bytes(message.payload))

        session.client.on_connect = on_connect
        session.client.on_disconnect = on_disconnect
        session.client.on_publish = on_publish
        session.client.on_message = on_message

    def _close(self, session: _Session, *, graceful: bool) -> None:
        """End a session's client. A clean DISCONNECT makes the broker discard the will."""
        if graceful or not session.lost.is_set():
            session.client.disconnect()
        session.client.loop_stop()  # paho's thread ends: it never reconnects on its own

    # --- the publisher thread -------------------------------------------------------------------

    def _run_publisher(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(IDLE_WAIT_S)
            self._wake.clear()
            with self._session_lock:
                session = self._session
            if session is None:
                continue
            try:
                self._settle(session)
                if not session.lost.is_set():
                    self._publish_more(session)
            except Exception:  # a spool or client error must not end publishing for good
                log.exception("publishing from the spool failed; retrying")
                self._stopping.wait(1.0)

    def _publish_more(self, session: _Session) -> None:
        while not self._stopping.is_set():
            room = self.settings.inflight - session.in_flight
            if room <= 0:
                return
            messages = self.spool.read_after(session.cursor, room)
            if not messages:
                return
            for message in messages:
                info = session.client.publish(message.topic, message.payload, qos=1, retain=message.retain)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return  # the connection is going; the connection thread takes it from here
                session.track(info.mid, message.seq)
                session.cursor = message.seq
                self.stats.published += 1

    def _settle(self, session: _Session) -> None:
        acked, refused = session.take_settled()
        if acked:
            self.spool.delete(acked)
            self.stats.acked += len(acked)
        if refused:
            self.spool.discard(refused)
            self.stats.refused += len(refused)
            log.warning(
                "the broker refused %d message(s) (seq %s): check this device's ACL; they are dropped",
                len(refused),
                refused[:10],
            )


def _describe_refusal(reason: Any) -> str:
    text = str(reason)
    value = getattr(reason, "value", None)
    if value in (0x86, 0x87, 0x8C):
        return f"{text}: check --mqtt-username and the password (file) for this device"
    return text


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
