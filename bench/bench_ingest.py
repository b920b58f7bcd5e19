"""Ingest benchmark: the rate one ``edgefleet server run`` process sustains, messages in the database.

Simulated devices (``tests.support.sim_devices``) publish contract payloads with QoS 1 to a private
Mosquitto; the server (SQLite in its data directory, MQTT 5, shared subscriptions, one process)
writes them. Two measurements, each checked for loss by counting rows in the database (every
message has its own (device, seq), so rows = messages when none is lost):

* **live**: publisher processes send as fast as the broker acknowledges while the server ingests;
  the rate is messages / (last row written − first publish). On a small machine the publishers
  compete with the server for the same cores, so this is a floor;
* **backlog**: the server is stopped, the devices publish the same number of messages into the
  ingest's persistent session at the broker, and the server is started again; the rate is
  messages / (all rows written − the first of them received). This is the ingest alone.

The machine may be shared, so the server process's CPU time while it drains the backlog is
measured too: microseconds of CPU per message (all its threads), and the rate one core would
sustain at that cost (``1e6 / cpu_us``, an upper bound: the GIL serialises the Python part). The
load average before each run is recorded beside the figures.

Message kinds: ``metrics`` (the periodic telemetry, about 600 bytes) and ``mixed`` (metrics, drift
windows of the 7 digits features, events and OTA reports, 40/40/10/10).

Run with ``make bench`` (or ``python -m bench bench_ingest``).
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import write_results

DEVICES = 50
PUBLISHERS = 2
MESSAGES = 60_000
TARGET_RATE = 5000
KINDS = ("metrics", "mixed")
TIMEOUT_S = 300.0


def _digits_like_window() -> Any:
    """A drift window of the digits model's seven features (5 input, 2 output), counted from noise."""
    from models.stats import build_reference_stats, count_window

    rng = np.random.default_rng(0)
    images = rng.random((256, 1, 8, 8)).astype(np.float32)
    logits = rng.standard_normal((256, 10)).astype(np.float32)
    reference = build_reference_stats(
        {"input": images}, {"logits": logits}, layouts={"input": "NCHW", "logits": "NC"}
    )
    return count_window(reference, {"input": images[:64]}, {"logits": logits[:64]})


def _templates(device_id: str, kind: str) -> list[tuple[str, bytes]]:
    """(channel, payload with seq 0) to cycle through; the publisher substitutes each seq."""
    from models.mqtt_contract import Channel, encode
    from tests.support.sim_devices import SimDevice

    device = SimDevice("127.0.0.1", 0, device_id)
    metrics = (Channel.METRICS.value, encode(device.metrics(seq=0)))
    if kind == "metrics":
        return [metrics]
    drift = (Channel.DRIFT.value, encode(device.drift("digits", "1.0.0", _digits_like_window(), seq=0)))
    event = (Channel.EVENTS.value, encode(device.event(seq=0)))
    ota = (Channel.OTA.value, encode(device.ota(seq=0)))
    return [metrics, drift, metrics, drift, event, metrics, drift, metrics, drift, ota]


def publish_share(
    port: int, device_ids: list[str], count: int, kind: str, first_seq: int, started: Any, done: Any
) -> None:
    """One publisher process: ``count`` messages spread over ``device_ids``, QoS 1, then wait for PUBACKs."""
    from models.mqtt_contract import Channel, topic
    from tests.support.sim_devices import SimDevice

    devices = [SimDevice("127.0.0.1", port, d, inflight=200).connect(birth=False) for d in device_ids]
    templates = {d.device_id: _templates(d.device_id, kind) for d in devices}
    topics = {
        (d.device_id, channel): topic(d.fleet, d.device_id, Channel(channel))
        for d in devices
        for channel, _ in templates[d.device_id]
    }
    with started.get_lock():
        if started.value == 0.0:
            started.value = time.time()
    infos = []
    for n in range(count):
        device = devices[n % len(devices)]
        seq = first_seq + n // len(devices)
        channel, template = templates[device.device_id][
            (n // len(devices)) % len(templates[device.device_id])
        ]
        payload = template.replace(b'"seq":0,', f'"seq":{seq},'.encode(), 1)
        infos.append(device.client.publish(topics[(device.device_id, channel)], payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    for device in devices:
        device.disconnect(goodbye=False)
    with done.get_lock():
        done.value += 1


def _publish(port: int, count: int, kind: str, first_seq: int) -> float:
    """Run the publisher processes; return the time of the first publish."""
    ids = [f"bench-{i:03d}" for i in range(DEVICES)]
    context = multiprocessing.get_context("spawn")
    started = context.Value("d", 0.0)
    done = context.Value("i", 0)
    shares = [ids[p::PUBLISHERS] for p in range(PUBLISHERS)]
    per = count // PUBLISHERS
    processes = [
        context.Process(target=publish_share, args=(port, share, per, kind, first_seq, started, done))
        for share in shares
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(TIMEOUT_S)
    if done.value != PUBLISHERS:
        raise RuntimeError("a publisher process failed")
    return float(started.value)


def _rows(db_path: Path) -> int:
    with sqlite3.connect(db_path, timeout=30) as connection:
        return sum(
            int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in ("device_metrics", "drift_windows", "device_events")
        )


def _first_received(db_path: Path, after_seq: int) -> float:
    """When the first message with a seq above ``after_seq`` reached the server (Unix time)."""
    from datetime import UTC, datetime

    with sqlite3.connect(db_path, timeout=30) as connection:
        stamps = [
            connection.execute(
                f"SELECT MIN(received_at) FROM {table} WHERE seq > ?", (after_seq,)
            ).fetchone()[0]
            for table in ("device_metrics", "drift_windows", "device_events")
        ]
    first = min(datetime.fromisoformat(str(s)) for s in stamps if s is not None)
    return (first if first.tzinfo else first.replace(tzinfo=UTC)).timestamp()


def _wait_rows(db_path: Path, expected: int, poll: float = 0.05) -> float:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if _rows(db_path) >= expected:
            return time.time()
        time.sleep(poll)
    raise RuntimeError(f"only {_rows(db_path)} of {expected} rows after {TIMEOUT_S:.0f} s")


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.time()
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def _ingest_ready(server: Any) -> bool:
    import httpx

    try:
        return "edgefleet_ingest_connected 1.0" in httpx.get(f"{server.url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return False


def _cpu_seconds(server: Any) -> float:
    import psutil

    times = psutil.Process(server._process.pid).cpu_times()
    return float(times.user + times.system)


def bench_kind(kind: str, workdir: Path) -> dict[str, Any]:
    import os

    from tests.support.fleet_process import FleetServer
    from tests.support.mosquitto import MosquittoBroker

    load = os.getloadavg()[0]

    broker = MosquittoBroker(workdir=workdir / f"mosquitto-{kind}", persistence=False).start()
    server = FleetServer(workdir / f"server-{kind}", mqtt_url=broker.url)
    try:
        server.start()
        _wait(lambda: _ingest_ready(server), "the ingest to subscribe")
        startup_cpu = _cpu_seconds(server)  # what starting costs, to take out of the backlog's figure
        with server.client(server.admin_token) as api:
            for i in range(DEVICES):
                api.post("/api/v1/devices", json={"id": f"bench-{i:03d}"}).raise_for_status()
        db_path = server.data_dir / "fleet.db"

        started = _publish(broker.port, MESSAGES, kind, first_seq=1)
        finished = _wait_rows(db_path, MESSAGES)
        live_rate = MESSAGES / (finished - started)
        live_rows = _rows(db_path)

        server.stop()
        _publish(broker.port, MESSAGES, kind, first_seq=1 + MESSAGES)
        server.start()
        drained = _wait_rows(db_path, 2 * MESSAGES)
        cpu_used = _cpu_seconds(server) - startup_cpu
        backlog_rate = MESSAGES / (drained - _first_received(db_path, after_seq=MESSAGES // DEVICES))
        total_rows = _rows(db_path)
    finally:
        server.stop()
        broker.stop()
    return {
        "kind": kind,
        "live_rate": live_rate,
        "live_lost": MESSAGES - live_rows,
        "backlog_rate": backlog_rate,
        "backlog_lost": 2 * MESSAGES - total_rows,
        "cpu_us_per_message": cpu_used / MESSAGES * 1e6,
        "load_average": load,
    }


def run() -> list[Path]:
    results = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-ingest-") as tmp:
        for kind in KINDS:
            results.append(bench_kind(kind, Path(tmp)))
    rows = [
        [
            r["kind"],
            MESSAGES,
            r["live_rate"],
            r["live_lost"],
            r["backlog_rate"],
            r["backlog_lost"],
            r["cpu_us_per_message"],
            1e6 / r["cpu_us_per_message"],
            round(r["load_average"], 1),
        ]
        for r in results
    ]
    _, md_path = write_results(
        "ingest",
        f"MQTT ingest, one server process (SQLite, MQTT 5 over Mosquitto, QoS 1, {DEVICES} devices)",
        [
            "messages",
            "per run",
            "live msg/s",
            "lost",
            "backlog msg/s",
            "lost",
            "server CPU µs/msg",
            "msg/s per core",
            "load before",
        ],
        rows,
        {
            "devices": DEVICES,
            "publisher_processes": PUBLISHERS,
            "messages_per_run": MESSAGES,
            "target_msg_per_s": TARGET_RATE,
            "results": results,
        },
    )
    return [md_path]


if __name__ == "__main__":
    for path in run():
        print(Path(path).read_text())
