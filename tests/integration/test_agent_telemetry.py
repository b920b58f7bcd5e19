"""Acceptance of issue 5: real ``edgefleet agent run`` processes, a real Mosquitto, tritonclient traffic.

Each test starts its own broker (``mosquitto`` fixture: a free port, persistence on) and its own
agent process, and watches the device's topics with a persistent-session recorder.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgefleet import __version__
from models.mqtt_contract import Channel
from tests.support.mosquitto import MosquittoBroker
from tests.support.telemetry import (
    MODEL,
    AgentProcess,
    Received,
    Recorder,
    TelemetryBundle,
    births,
    check_delivery,
    of,
    requests_counted,
    samples_counted,
    telemetry_bundle,
)

pytestmark = pytest.mark.integration

FLEET, DEVICE = "lab", "dev-1"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Overrides the shared fixture: the same private broker, with persistence that survives restarts."""
    broker = MosquittoBroker(workdir=tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> TelemetryBundle:
    return telemetry_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture
def recorder(mosquitto: MosquittoBroker) -> Iterator[Recorder]:
    watching = Recorder(mosquitto, FLEET, DEVICE)
    yield watching
    watching.close()


@pytest.fixture
def agents(
    mosquitto: MosquittoBroker, bundle: TelemetryBundle, tmp_path: Path
) -> Iterator[list[AgentProcess]]:
    """Agent processes a test starts; whatever is left running is killed afterwards."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop(kill=True)


def _agent(
    agents: list[AgentProcess],
    broker: MosquittoBroker,
    bundle: TelemetryBundle,
    data_dir: Path,
    **options: str,
) -> AgentProcess:
    agent = AgentProcess(
        broker,
        bundle,
        data_dir,
        device=DEVICE,
        fleet=FLEET,
        options={k.replace("_", "-"): v for k, v in options.items()},
    )
    agents.append(agent)
    return agent.start()


def _retained_status(broker: MosquittoBroker) -> dict[str, Any]:
    """What a server connecting now learns at once: the retained status."""
    got: list[bytes] = []
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.on_message = lambda c, u, m: got.append(bytes(m.payload)) if m.retain else None
    client.connect(broker.host, broker.port)
    client.subscribe(f"edgefleet/v1/{FLEET}/{DEVICE}/status", qos=1)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    assert got, "no retained status on the broker"
    return dict(json.loads(got[-1]))


def _online(messages: list[Received]) -> bool:
    return bool(births(messages))


def test_the_retained_status_describes_the_device(
    mosquitto: MosquittoBroker,
    bundle: TelemetryBundle,
    recorder: Recorder,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    _agent(agents, mosquitto, bundle, tmp_path / "data", profile="generic-x86")
    recorder.wait_until(_online, 30, "the birth status")
    status = _retained_status(mosquitto)
    assert status["online"] is True and status["kind"] == "status"
    assert (status["device_id"], status["fleet"], status["profile"]) == (DEVICE, FLEET, "generic-x86")
    assert status["agent_version"] == __version__
    host = status["host"]
    assert isinstance(host, dict) and host["hostname"] and host["cpu_count"] >= 1 and host["memory_mb"] > 0
    (model,) = status["models"]
    assert (model["name"], model["version"], model["format"], model["precision"], model["ready"]) == (
        MODEL,
        "1.0.0",
        "onnx",
        "fp32",
        True,
    )
    assert model["provider"]
    assert status["ota"] == {"active": None, "slots": {}, "state": "idle"}
    assert isinstance(status["will_seq"], int) and status["will_seq"] < status["seq"]
    assert status["started_at"]


def test_sigkill_makes_the_broker_publish_the_last_will(
    mosquitto: MosquittoBroker,
    bundle: TelemetryBundle,
    recorder: Recorder,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    agent = _agent(agents, mosquitto, bundle, tmp_path / "data")
    (birth,) = births(recorder.wait_until(_online, 30, "the birth status"))
    agent.stop(kill=True)
    messages = recorder.wait_until(
        lambda ms: any(not d["online"] for d in of(ms, Channel.STATUS)), 30, "the Last Will"
    )
    will = next(d for d in of(messages, Channel.STATUS) if not d["online"])
    assert will["seq"] == birth["will_seq"]  # the seq the birth announced for it
    assert will["models"] == birth["models"]
    retained = _retained_status(mosquitto)
    assert retained["online"] is False and retained["seq"] == birth["will_seq"]


def test_metrics_and_drift_arrive_at_the_configured_rate_and_count_every_inference(
    mosquitto: MosquittoBroker,
    bundle: TelemetryBundle,
    recorder: Recorder,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    interval, window = 0.5, 20
    agent = _agent(
        agents,
        mosquitto,
        bundle,
        tmp_path / "data",
        metrics_interval_s=str(interval),
        drift_window=str(window),
        drift_window_s="2",
    )
    recorder.wait_until(_online, 30, "the birth status")
    sent = agent.infer(90) + agent.infer(5, rows=2, seed=1)  # 95 requests, 100 samples
    messages = recorder.wait_until(
        lambda ms: requests_counted(ms) >= 95 and samples_counted(ms) >= sent,
        30,
        "metrics and drift for every inference",
    )
    # A few more windows, idle ones included: they keep coming at the configured interval.
    messages = recorder.wait_until(lambda ms: len(of(ms, Channel.METRICS)) >= 5, 30, "five metrics windows")
    assert requests_counted(messages) == 95
    assert samples_counted(messages) == sent == 100
    drift = of(messages, Channel.DRIFT)
    assert all(d["model"] == MODEL and d["version"] == "1.0.0" for d in drift)
    assert all(0 < d["window"]["samples"] <= window for d in drift)
    assert sum(d["window"]["samples"] == window for d in drift) >= 3  # most close on size
    for d in drift:
        for feature in d["window"]["features"].values():
            assert sum(feature["counts"]) + feature["nonfinite"] == d["window"]["samples"]
    metrics = of(messages, Channel.METRICS)
    # The agent's own schedule: each window lasts the configured interval.
    assert statistics.median(m["window_s"] for m in metrics) == pytest.approx(interval, rel=0.25)
    rows = [row for m in metrics for row in m["models"] if row["requests"]]
    assert {row["model"] for row in rows} == {MODEL}
    assert sum(int(size) * n for row in rows for size, n in row["batch_sizes"].items()) >= 100
    latency = next(row["latency"] for row in rows)
    assert latency["p50_ms"] is not None and latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    assert metrics[0]["system"]["cpu_percent"] is not None

    # A window that never fills closes on time, with what it holds.
    sent += agent.infer(7, seed=3)
    messages = recorder.wait_until(lambda ms: samples_counted(ms) >= sent, 30, "the time-closed window")
    tail = of(messages, Channel.DRIFT)[-1]["window"]
    assert tail["samples"] == 7
    assert 2.0 <= tail["end"] - tail["start"] < 4.0  # drift_window_s, give or take the worker's poll
    assert samples_counted(messages) == sent == 107
    check_delivery(messages)


def test_broker_outage_spools_and_replays_every_message_in_order(
    mosquitto: MosquittoBroker,
    bundle: TelemetryBundle,
    recorder: Recorder,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    agent = _agent(agents, mosquitto, bundle, tmp_path / "data", metrics_interval_s="0.3", drift_window="10")
    recorder.wait_until(_online, 30, "the birth status")
    sent = agent.infer(30)
    recorder.wait_until(lambda ms: samples_counted(ms) >= 30, 30, "the first drift windows")

    mosquitto.stop()
    sent += agent.infer(50, seed=2)  # the agent keeps serving while its broker is gone
    deadline = time.monotonic() + 30
    while sum(ch == "drift" for ch, _ in agent.spooled().values()) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # a few metrics windows spooled as well
    spooled = agent.spooled()
    assert sum(ch == "drift" for ch, _ in spooled.values()) >= 5 and any(
        ch == "metrics" for ch, _ in spooled.values()
    )

    mosquitto.start()
    recorder.wait_until(lambda ms: len(births(ms)) >= 2, 60, "the agent to reconnect")
    assert agent.stop() == 0  # graceful: last metrics, an offline status, then a clean disconnect
    messages = recorder.wait_until(
        lambda ms: any(not d["online"] and d.get("will_seq") is None for d in of(ms, Channel.STATUS)),
        30,
        "the offline status",
    )
    ordered = check_delivery(messages)
    seqs = {m.seq for m in ordered}
    assert set(spooled) <= seqs  # everything that waited in the spool arrived
    assert requests_counted(messages) == 80
    assert samples_counted(messages) == sent == 80
    first, second = births(messages)[:2]
    assert any(first["seq"] < seq < second["seq"] for seq in spooled)


def test_sigkill_while_offline_keeps_the_spool_for_the_next_start(
    mosquitto: MosquittoBroker,
    bundle: TelemetryBundle,
    recorder: Recorder,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    agent = _agent(agents, mosquitto, bundle, data_dir, metrics_interval_s="0.5", drift_window="10")
    recorder.wait_until(_online, 30, "the birth status")
    mosquitto.stop()
    agent.infer(40)
    deadline = time.monotonic() + 30
    while sum(ch == "drift" for ch, _ in agent.spooled().values()) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    spooled = agent.spooled()
    assert sum(ch == "drift" for ch, _ in spooled.values()) == 4
    agent.stop(kill=True)  # offline, and no chance to say goodbye

    mosquitto.start()
    restarted = _agent(agents, mosquitto, bundle, data_dir, metrics_interval_s="0.5", drift_window="10")
    messages = recorder.wait_until(
        lambda ms: set(spooled) <= {m.seq for m in ms} and len(births(ms)) >= 2,
        60,
        "every spooled message after the restart",
    )
    delivered = {m.seq: m.payload for m in messages}
    assert all(delivered[seq] == payload for seq, (_, payload) in spooled.items())  # byte for byte
    assert samples_counted(messages) == 40
    second_birth = births(messages)[-1]
    assert second_birth["seq"] > max(spooled)  # numbering went on from the spool, never restarted
    assert restarted.alive
    restarted.stop()
    check_delivery(recorder.snapshot())


def test_spool_bound_drops_only_the_oldest_metrics_and_reports_them(
    mosquitto: MosquittoBroker,
    bundle: TelemetryBundle,
    recorder: Recorder,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    agent = _agent(
        agents,
        mosquitto,
        bundle,
        tmp_path / "data",
        metrics_interval_s="0.1",
        drift_window="10",
        spool_max_bytes="16KiB",
    )
    recorder.wait_until(_online, 30, "the birth status")
    mosquitto.stop()
    sent = agent.infer(30)
    time.sleep(4.0)  # ~40 metrics of ~700 bytes: far more than 16 KiB
    mosquitto.start()
    messages = recorder.wait_until(
        lambda ms: any(d["code"] == "spool_dropped" for d in of(ms, Channel.EVENTS)), 60, "the drop report"
    )
    event = next(d for d in of(messages, Channel.EVENTS) if d["code"] == "spool_dropped")
    dropped = {s for first, last in event["details"]["seq_ranges"] for s in range(first, last + 1)}
    assert set(event["details"]["counts"]) == {"metrics"}
    assert event["details"]["counts"]["metrics"] == len(dropped) > 0
    report = next(d for d in of(messages, Channel.METRICS) if d["spool_dropped"])
    assert report["spool_dropped"] == {"metrics": len(dropped)}

    agent.stop()
    messages = recorder.wait_until(
        lambda ms: any(not d["online"] and d.get("will_seq") is None for d in of(ms, Channel.STATUS)),
        30,
        "the offline status",
    )
    assert samples_counted(messages) == sent  # every drift window was kept
    second = births(messages)[1]
    received = {m.seq for m in messages}
    announced = {b["will_seq"] for b in births(messages)}
    gaps = set(range(max(received) + 1)) - received - announced
    assert gaps == dropped  # every missing seq is accounted for by the report
    # The oldest went first: no metrics message from the outage that is older than a dropped one survived.
    survivors = [d["seq"] for d in of(messages, Channel.METRICS) if min(dropped) < d["seq"] < second["seq"]]
    assert survivors and max(dropped) < min(survivors)  # the oldest went, the newest stayed


def test_a_malformed_desired_payload_is_rejected_and_the_agent_keeps_serving(
    mosquitto: MosquittoBroker,
    bundle: TelemetryBundle,
    recorder: Recorder,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    agent = _agent(agents, mosquitto, bundle, tmp_path / "data")
    recorder.wait_until(_online, 30, "the birth status")
    publisher = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    publisher.connect(mosquitto.host, mosquitto.port)
    publisher.loop_start()
    desired = f"edgefleet/v1/{FLEET}/{DEVICE}/desired"
    publisher.publish(desired, b"\x00\xffnot json at all", qos=1).wait_for_publish(10)
    publisher.publish(desired, json.dumps({"kind": "reboot", "now": True}).encode(), qos=1).wait_for_publish(
        10
    )
    valid = {"kind": "desired", "revision": 4, "models": {}}
    publisher.publish(desired, json.dumps(valid).encode(), qos=1, retain=True).wait_for_publish(10)
    messages = recorder.wait_until(
        lambda ms: (
            sum(d["code"] == "command_rejected" for d in of(ms, Channel.EVENTS)) >= 2
            and any(d["code"] == "desired_received" for d in of(ms, Channel.EVENTS))
        ),
        30,
        "the rejections and the accepted state",
    )
    publisher.disconnect()
    publisher.loop_stop()
    rejected = [d for d in of(messages, Channel.EVENTS) if d["code"] == "command_rejected"]
    assert all(d["level"] == "error" and d["details"]["topic"] == desired for d in rejected)
    assert "UTF-8 JSON" in rejected[0]["details"]["reason"] and "kind" in rejected[1]["details"]["reason"]
    assert [d["details"]["rejected_total"] for d in rejected] == [1, 2]
    accepted = next(d for d in of(messages, Channel.EVENTS) if d["code"] == "desired_received")
    assert accepted["details"]["revision"] == 4
    assert agent.alive
    assert agent.infer(3) == 3  # still serving
