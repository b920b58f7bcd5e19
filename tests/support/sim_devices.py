"""Simulated edge devices: paho-mqtt clients that publish contract payloads, for tests and the benchmark.

A ``SimDevice`` behaves as the agent does on the wire (``edge_agent.telemetry``): one monotonic
``seq`` for all its messages; on connect, a Last Will (status ``online: false``, retained, QoS 1)
whose seq is reserved first, then a retained birth that announces that ``will_seq``. ``vanish()``
drops the TCP connection without a DISCONNECT, so the broker publishes the will, as it does when
an agent is SIGKILLed or loses power. Payloads come from ``models.mqtt_contract``; ``publish_raw``
sends anything at all, for bad-input tests.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from models.mqtt_contract import (
    DEFAULT_FLEET,
    Channel,
    DriftPayload,
    EventLevel,
    EventPayload,
    LatencySummary,
    MetricsPayload,
    ModelMetrics,
    ModelState,
    OtaPayload,
    StatusPayload,
    SystemMetrics,
    encode,
    topic,
)
from models.stats import DriftWindow

PUBACK_TIMEOUT_S = 10.0


class SimDeviceError(RuntimeError):
    pass


@dataclass
class SimDevice:
    """One simulated device on a broker. ``protocol`` is 5 (Mosquitto) or 3 (MQTT 3.1.1, amqtt)."""

    host: str
    port: int
    device_id: str
    fleet: str = DEFAULT_FLEET
    protocol: int = 5
    profile: str = "generic-x86"
    agent_version: str = "sim-1.0"
    models: dict[str, str] = field(default_factory=lambda: {"digits": "1.0.0"})
    username: str | None = None
    password: str | None = None
    seq: int = 0
    inflight: int = 100
    will_seq: int | None = None
    _client: mqtt.Client | None = field(default=None, repr=False)
    _connected: threading.Event = field(default_factory=threading.Event, repr=False)

    # --- connection -------------------------------------------------------------------------------

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def status(
        self, seq: int, *, online: bool, will_seq: int | None, token: str | None = None
    ) -> StatusPayload:
        return StatusPayload(
            device_id=self.device_id,
            seq=seq,
            online=online,
            agent_version=self.agent_version,
            profile=self.profile,
            fleet=self.fleet,
            models=[
                ModelState(name=name, version=version, format="onnx", precision="fp32")
                for name, version in sorted(self.models.items())
            ],
            enrollment_token=token,
            will_seq=will_seq,
        )

    def connect(
        self, *, enrollment_token: str | None = None, birth: bool = True, timeout: float = 10.0
    ) -> SimDevice:
        """Connect with a Last Will, then publish the retained birth (unless ``birth`` is False)."""
        self.will_seq = self.next_seq()
        client = self._new_client()
        will = self.status(self.will_seq, online=False, will_seq=self.will_seq)
        client.will_set(topic(self.fleet, self.device_id, Channel.STATUS), encode(will), qos=1, retain=True)
        client.connect(self.host, self.port, keepalive=30)
        client.loop_start()
        if not self._connected.wait(timeout):
            client.loop_stop()
            raise SimDeviceError(
                f"{self.device_id}: no CONNACK from {self.host}:{self.port} within {timeout} s"
            )
        self._client = client
        if birth:
            payload = self.status(
                self.next_seq(), online=True, will_seq=self.will_seq, token=enrollment_token
            )
            self.publish(Channel.STATUS, payload, retain=True)
        return self

    def _new_client(self) -> mqtt.Client:
        v5 = self.protocol == 5
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"sim-{self.device_id}",
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
        )
        if self.username:
            client.username_pw_set(self.username, self.password)
        client.max_inflight_messages_set(self.inflight)
        client.max_queued_messages_set(0)
        self._connected.clear()

        def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            if not reason.is_failure:
                self._connected.set()

        def on_disconnect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            self._connected.clear()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        return client

    @property
    def client(self) -> mqtt.Client:
        if self._client is None:
            raise SimDeviceError(f"{self.device_id} is not connected")
        return self._client

    def disconnect(self, *, goodbye: bool = True) -> None:
        """A graceful stop: an offline status (when ``goodbye``), then DISCONNECT (the will is discarded)."""
        if self._client is None:
            return
        if goodbye:
            self.publish(
                Channel.STATUS, self.status(self.next_seq(), online=False, will_seq=None), retain=True
            )
        self._client.disconnect()
        self._client.loop_stop()
        self._client = None

    def vanish(self) -> None:
        """Drop the connection without DISCONNECT, as a killed process would: the broker sends the will."""
        if self._client is None:
            return
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._client.loop_stop()
        with contextlib.suppress(OSError):
            if isinstance(sock, socket.socket):
                sock.close()
        self._client = None

    # --- publishing --------------------------------------------------------------------------------

    def publish(
        self, channel: Channel, payload: Any, *, retain: bool = False, wait: bool = True
    ) -> mqtt.MQTTMessageInfo:
        return self.publish_raw(channel, encode(payload), retain=retain, wait=wait)

    def publish_raw(
        self, channel: Channel | str, data: bytes, *, retain: bool = False, wait: bool = True
    ) -> mqtt.MQTTMessageInfo:
        """Publish bytes on one of this device's channels (or on any topic, given as a string with '/')."""
        name = channel if isinstance(channel, str) and "/" in channel else None
        target = name or topic(self.fleet, self.device_id, Channel(channel))
        info = self.client.publish(target, data, qos=1, retain=retain)
        if wait:
            info.wait_for_publish(PUBACK_TIMEOUT_S)
            if not info.is_published():
                raise SimDeviceError(f"{self.device_id}: no PUBACK for {target} within {PUBACK_TIMEOUT_S} s")
        return info

    # --- payloads ----------------------------------------------------------------------------------

    def metrics(
        self, *, requests: int = 10, seq: int | None = None, window_s: float = 10.0
    ) -> MetricsPayload:
        now = datetime.now(UTC)
        return MetricsPayload(
            device_id=self.device_id,
            seq=self.next_seq() if seq is None else seq,
            window_start=now - timedelta(seconds=window_s),
            window_s=window_s,
            models=[
                ModelMetrics(
                    model=name,
                    version=version,
                    requests=requests,
                    errors={"INTERNAL": 1} if requests > 5 else {},
                    latency=LatencySummary(p50_ms=1.5, p95_ms=3.0, p99_ms=4.0),
                )
                for name, version in sorted(self.models.items())
            ],
            system=SystemMetrics(cpu_percent=12.5, memory_rss_mb=80.0),
        )

    def drift(self, model: str, version: str, window: DriftWindow, *, seq: int | None = None) -> DriftPayload:
        end = datetime.now(UTC)
        return DriftPayload(
            device_id=self.device_id,
            seq=self.next_seq() if seq is None else seq,
            model=model,
            version=version,
            window_start=end - timedelta(seconds=60),
            window_end=end,
            window=window.to_dict(),
        )

    def event(self, code: str = "command_rejected", *, seq: int | None = None) -> EventPayload:
        return EventPayload(
            device_id=self.device_id,
            seq=self.next_seq() if seq is None else seq,
            level=EventLevel.WARNING,
            code=code,
            message=f"simulated {code}",
        )

    def ota(self, state: str = "downloading", *, seq: int | None = None) -> OtaPayload:
        return OtaPayload(
            device_id=self.device_id,
            seq=self.next_seq() if seq is None else seq,
            model="digits",
            version="1.1.0",
            state=state,
            previous_version="1.0.0",
        )


def connect_all(devices: Iterable[SimDevice], **kwargs: Any) -> list[SimDevice]:
    return [device.connect(**kwargs) for device in devices]


def wait_until(predicate: Any, timeout: float = 20.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; raise with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last value: {last!r})")


# --- observing the server -------------------------------------------------------------------------


def scrape(server_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the server's /metrics, keyed by (name, labels)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server_url}/metrics", timeout=10).text
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return samples


def metric(server_url: str, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when it does not exist yet)."""
    return scrape(server_url).get((name, frozenset(labels.items())), 0.0)


def wait_ingest_ready(server_url: str, timeout: float = 30.0) -> None:
    """Until the server's ingest is connected and subscribed (messages before that are not seen)."""
    wait_until(
        lambda: metric(server_url, "edgefleet_ingest_connected") == 1.0,
        timeout,
        what="the ingest to subscribe",
    )


def count_rows(db_url: str, table: str, device_ids: Iterable[str]) -> int:
    """Rows of ``table`` from these devices, straight from the database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            ids = sorted(device_ids)
            placeholders = ", ".join(f":d{i}" for i in range(len(ids)))
            query = text(f"SELECT COUNT(*) FROM {table} WHERE device_id IN ({placeholders})")
            return int(connection.execute(query, {f"d{i}": d for i, d in enumerate(ids)}).scalar_one())
    finally:
        engine.dispose()


# --- drift data: the digits model on its evaluation set, and shifted ---------------------------------


@dataclass(frozen=True)
class DigitsScenario:
    """scikit-learn's digits with a nearest-centroid classifier (numpy, trained on the train split).

    The reference is frozen the way the converter freezes it (``converter.packaging``): from the
    calibration split and the model's outputs on it, 10 bins, seed 0, layouts from the manifest.
    Devices then count windows from the evaluation split as it is, brightened, or sliced to a few
    classes.
    """

    centroids: Any
    calib: Any
    eval_images: Any
    eval_labels: Any
    reference_json: bytes

    INPUT = "input"
    OUTPUT = "logits"

    @classmethod
    def build(cls) -> DigitsScenario:
        import numpy as np

        from models.bundle import canonical_json
        from models.stats import build_reference_stats
        from models.zoo.data import load_digits_nchw, stratified_split

        data = load_digits_nchw()
        split = stratified_split(data.labels)
        train = data.images[split.train].reshape(len(split.train), -1)
        centroids = np.stack([train[data.labels[split.train] == c].mean(axis=0) for c in range(10)])
        calib = data.images[split.calib]
        scenario = cls(centroids, calib, data.images[split.eval], data.labels[split.eval], b"")
        reference = build_reference_stats(
            {cls.INPUT: calib},
            {cls.OUTPUT: scenario.logits(calib)},
            n_bins=10,
            seed=0,
            layouts={cls.INPUT: "NCHW", cls.OUTPUT: "NC"},
        )
        return cls(
            centroids, calib, scenario.eval_images, scenario.eval_labels, canonical_json(reference.to_dict())
        )

    def logits(self, images: Any) -> Any:
        import numpy as np

        flat = images.reshape(len(images), -1).astype(np.float64)
        distances = ((flat[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=2)
        return (-distances).astype(np.float32)

    def reference(self) -> Any:
        from models.stats import ReferenceStats

        return ReferenceStats.from_dict(json.loads(self.reference_json))

    def images(self, kind: str, seed: int = 0) -> Any:
        """``eval``, ``bright`` (pixels x1.5, saturating at 1) or ``slice`` (classes 0-2 only), shuffled."""
        import numpy as np

        images = self.eval_images
        if kind == "bright":
            images = np.clip(images * 1.5, 0.0, 1.0).astype(np.float32)
        elif kind == "slice":
            images = images[self.eval_labels < 3]
        elif kind != "eval":
            raise ValueError(kind)
        return images[np.random.default_rng(seed).permutation(len(images))]

    def windows(self, images: Any, per_window: int = 90) -> list[DriftWindow]:
        from models.stats import count_window

        reference = self.reference()
        return [
            count_window(
                reference,
                {self.INPUT: images[i : i + per_window]},
                {self.OUTPUT: self.logits(images[i : i + per_window])},
            )
            for i in range(0, len(images), per_window)
        ]

    def bundle(self, out_dir: Any, name: str, version: str, *, profile: str = "generic-x86") -> Any:
        """A signed bundle (the fixed test key) carrying this reference; its model file is not run here."""
        from models.bundle import TensorSpec
        from tests.support.bundles import build_test_bundle

        return build_test_bundle(
            out_dir / f"{name}-{version}-{profile}",
            file_name=f"{name}-{version}-{profile}.efb",
            golden=False,
            reference_stats=self.reference_json,
            name=name,
            version=version,
            profile=profile,
            inputs=[TensorSpec(name=self.INPUT, dtype="float32", shape=[-1, 1, 8, 8], layout="NCHW")],
            outputs=[TensorSpec(name=self.OUTPUT, dtype="float32", shape=[-1, 10], layout="NC")],
        )
