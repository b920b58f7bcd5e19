"""Helpers for the telemetry integration tests: a recording subscriber, agent processes, bundles.

(No tests here; the module sits beside the tests that use it.)

- ``Recorder`` subscribes to one device's topics with a persistent MQTT 5 session (clean start
  off, a session expiry), so a broker restarted with persistence keeps queuing for it: it sees
  every message the broker accepted, in arrival order, with its raw bytes.
- ``AgentProcess`` runs ``edgefleet agent run`` as a real process and sends it traffic through
  tritonclient.
- ``telemetry_bundle`` builds the tiny signed model with reference statistics for drift.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.ready import READY_MARKER
from models.mqtt_contract import Channel, decode_upstream, parse_topic
from models.stats import build_reference_stats
from tests.support.bundles import BuiltBundle, build_test_bundle, tiny_forward
from tests.support.net import free_port

MODEL = "tiny-linear"


# --- the broker ----------------------------------------------------------------------------------


# --- bundles -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TelemetryBundle:
    bundle: BuiltBundle
    public_key: Path

    @property
    def path(self) -> Path:
        return self.bundle.path


def telemetry_bundle(directory: Path) -> TelemetryBundle:
    """The tiny linear model, signed, with frozen drift bins from 500 reference samples."""
    x = np.random.default_rng(11).standard_normal((500, 4)).astype(np.float32)
    reference = build_reference_stats({"x": x}, {"y": tiny_forward(x)}, layouts={"x": "NC"})
    built = build_test_bundle(directory, reference_stats=json.dumps(reference.to_dict()).encode())
    public = directory / "release.pub.pem"
    public.write_bytes(
        built.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return TelemetryBundle(built, public)


# --- the recording subscriber --------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    channel: Channel
    payload: bytes
    retain: bool

    @property
    def data(self) -> dict[str, Any]:
        return dict(json.loads(self.payload))

    @property
    def seq(self) -> int:
        return int(self.data["seq"])


class Address(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


class Recorder:
    """Every message on one device's topics, in arrival order (survives broker restarts)."""

    def __init__(self, broker: Address, fleet: str, device: str) -> None:
        self.device = device
        self.filter = f"edgefleet/v1/{fleet}/{device}/#"
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"recorder-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=properties)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the recorder could not subscribe"

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        client.subscribe(self.filter, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        _, device, channel = parse_topic(message.topic)
        if channel == Channel.DESIRED:
            return
        decode_upstream(
            channel, bytes(message.payload), device_id=device
        )  # everything must follow the contract
        with self._cond:
            self.messages.append(Received(channel, bytes(message.payload), bool(message.retain)))
            self._cond.notify_all()

    def snapshot(self) -> list[Received]:
        with self._cond:
            return list(self.messages)

    def wait_until(
        self, predicate: Callable[[list[Received]], bool], timeout: float, what: str
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self.messages)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    summary = [(m.channel.value, m.seq) for m in self.messages][-40:]
                    raise AssertionError(f"timed out waiting for {what}; last received: {summary}")
                self._cond.wait(min(remaining, 0.2))
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def of(messages: Sequence[Received], channel: Channel) -> list[dict[str, Any]]:
    return [m.data for m in messages if m.channel == channel]


def requests_counted(messages: Sequence[Received]) -> int:
    """Requests reported by metrics messages, each seq counted once."""
    return sum(
        row["requests"] for m in dedup(messages) if m.channel == Channel.METRICS for row in m.data["models"]
    )


def samples_counted(messages: Sequence[Received]) -> int:
    return sum(m.data["window"]["samples"] for m in dedup(messages) if m.channel == Channel.DRIFT)


def births(messages: Sequence[Received]) -> list[dict[str, Any]]:
    """Each connection's birth once, oldest first (a resubscribing recorder gets the retained one again)."""
    found = {
        d["seq"]: d for d in of(messages, Channel.STATUS) if d["online"] and d.get("will_seq") is not None
    }
    return [found[seq] for seq in sorted(found)]


def dedup(messages: Sequence[Received]) -> list[Received]:
    """First arrival of each seq (QoS 1 may deliver one twice)."""
    seen: set[int] = set()
    kept = []
    for message in messages:
        if message.seq not in seen:
            seen.add(message.seq)
            kept.append(message)
    return kept


def check_delivery(messages: Sequence[Received]) -> list[Received]:
    """The acceptance checks on a device's stream; returns the deduplicated messages without wills.

    - a duplicate seq carries the very same bytes (a QoS 1 redelivery, nothing else);
    - apart from Last Wills, which the broker publishes when it notices the loss, seqs arrive in
      increasing order once deduplicated;
    - no seq is missing from 0 to the last one, except will seqs that a birth announced.
    """
    first_bytes: dict[int, bytes] = {}
    for message in messages:
        previous = first_bytes.setdefault(message.seq, message.payload)
        assert previous == message.payload, f"seq {message.seq} arrived twice with different contents"
    announced = {d["will_seq"] for d in births(messages)}
    wills = {
        m.seq for m in messages if m.channel == Channel.STATUS and not m.data["online"] and m.seq in announced
    }
    ordered = [m for m in dedup(messages) if m.seq not in wills]
    seqs = [m.seq for m in ordered]
    assert seqs == sorted(seqs), f"seqs out of order: {seqs}"
    missing = set(range(max(seqs) + 1)) - set(seqs) - announced
    assert not missing, f"seqs missing: {sorted(missing)}"
    return ordered


# --- the agent process ---------------------------------------------------------------------------


def agent_command() -> list[str]:
    """``edgefleet agent run`` once the agent group registers it; the module itself until then."""
    import typer

    from edgefleet.cli import app

    root = typer.main.get_command(app)
    group = getattr(root, "commands", {}).get("agent")
    if group is not None and "run" in getattr(group, "commands", {}):
        return [sys.executable, "-m", "edgefleet", "agent", "run"]
    return [sys.executable, "-m", "edgefleet.cli.agent_run"]


class HasUrl(Protocol):
    @property
    def url(self) -> str: ...


@dataclass
class AgentProcess:
    broker: HasUrl  # a MosquittoBroker, or the fleet server's embedded broker
    bundle: TelemetryBundle
    data_dir: Path
    device: str = "dev-1"
    fleet: str = "lab"
    options: dict[str, str] = field(default_factory=dict)
    grpc_port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        args = [
            *agent_command(),
            "--mqtt",
            self.broker.url,
            "--fleet",
            self.fleet,
            "--device-id",
            self.device,
            "--bundle",
            str(self.bundle.path),
            "--trusted-key",
            str(self.bundle.public_key),
            "--grpc",
            f"127.0.0.1:{self.grpc_port}",
            "--data-dir",
            str(self.data_dir),
            "--reconnect-min-s",
            "0.2",
            "--reconnect-max-s",
            "1",
        ]
        for key, value in self.options.items():
            args += [f"--{key}", value]
        return args

    def start(self, timeout: float = 60.0) -> AgentProcess:
        self.output = []
        ready = threading.Event()
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
        )

        def pump(stream: Any) -> None:
            for line in stream:
                self.output.append(line)
                if READY_MARKER in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, args=(self.process.stdout,), daemon=True).start()
        if not ready.wait(timeout) or self.process.poll() is not None:
            self.stop(kill=True)
            raise AssertionError("the agent did not start:\n" + "".join(self.output[-60:]))
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, kill: bool = False, timeout: float = 60.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            if kill:
                self.process.kill()  # SIGKILL: no goodbye, no flush
            else:
                self.process.terminate()
        code = self.process.wait(timeout=timeout)
        return code

    def log(self) -> str:
        return "".join(self.output)

    # --- traffic --------------------------------------------------------------------------------

    def infer(self, requests: int, *, rows: int = 1, seed: int = 0) -> int:
        """Send ``requests`` requests of ``rows`` samples through tritonclient; returns the samples sent."""
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")
        rng = np.random.default_rng(seed)
        try:
            for _ in range(requests):
                x = rng.standard_normal((rows, 4)).astype(np.float32)
                tensor = grpcclient.InferInput("x", [rows, 4], "FP32")
                tensor.set_data_from_numpy(x)
                result = client.infer(MODEL, [tensor])
                np.testing.assert_allclose(result.as_numpy("y"), tiny_forward(x), rtol=1e-5, atol=1e-5)
        finally:
            client.close()
        return requests * rows

    # --- the spool, read from the outside ------------------------------------------------------

    def spooled(self) -> dict[int, tuple[str, bytes]]:
        """What the agent's spool holds now: seq → (channel, payload). WAL lets us read beside it."""
        path = self.data_dir / "telemetry" / "spool.sqlite3"
        db = sqlite3.connect(path, timeout=10)
        try:
            rows = db.execute("SELECT seq, channel, payload FROM messages ORDER BY seq").fetchall()
        finally:
            db.close()
        return {int(seq): (str(channel), bytes(payload)) for seq, channel, payload in rows}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_AGENT_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env
