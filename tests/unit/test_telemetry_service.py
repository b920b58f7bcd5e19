"""Everything the telemetry spools follows the MQTT contract, and drops are reported when back online."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edge_agent.telemetry import DeviceIdentity, Spool, Telemetry, TelemetrySettings
from models.mqtt_contract import (
    Channel,
    DriftPayload,
    EventPayload,
    MetricsPayload,
    ModelState,
    StatusPayload,
    decode_upstream,
    parse_topic,
)
from models.stats import DriftWindow, ReferenceStats, build_reference_stats

DEVICE = "pi-17"
MODEL = ModelState(name="tiny", version="1.0.0", format="onnx", precision="fp32", provider="CPU")


@pytest.fixture
def reference() -> ReferenceStats:
    x = np.random.default_rng(0).standard_normal((200, 4)).astype(np.float32)
    return build_reference_stats({"x": x}, {"y": x[:, :3] * 2}, layouts={"x": "NC"})


def _telemetry(tmp_path: Path, **overrides: Any) -> Telemetry:
    settings = TelemetrySettings(
        identity=DeviceIdentity(fleet="lab", device_id=DEVICE, agent_version="0.1.0", profile="generic-x86"),
        link=None,
        drift_window=5,
        **overrides,
    )
    return Telemetry(
        settings,
        Spool(tmp_path / "spool.db", max_bytes=overrides.pop("max_bytes", 1 << 20)),
        models=lambda: [MODEL],
        in_flight=lambda: {("tiny", "1.0.0"): 0},
    )


def _spooled(telemetry: Telemetry) -> list[Any]:
    decoded = []
    for message in telemetry.spool.read_after(-1, 1000):
        fleet, device, channel = parse_topic(message.topic)
        assert (fleet, device, channel) == ("lab", DEVICE, message.channel)
        payload = decode_upstream(channel, message.payload, device_id=DEVICE)
        assert payload.seq == message.seq
        assert message.retain == (channel == Channel.STATUS)
        decoded.append(payload)
    return decoded


def _serve(telemetry: Telemetry, n: int) -> None:
    rng = np.random.default_rng(1)
    for _ in range(n):
        x = rng.standard_normal((1, 4)).astype(np.float32)
        telemetry.observer.on_inference("tiny", "1.0.0", {"x": x}, {"y": x[:, :3] * 2}, "OK", 0.002, 0.0, 1)


def test_metrics_drift_and_status_follow_the_contract(tmp_path: Path, reference: ReferenceStats) -> None:
    telemetry = _telemetry(tmp_path)
    telemetry.register_model("tiny", "1.0.0", reference)
    _serve(telemetry, 12)
    telemetry.observer.on_inference("tiny", "1.0.0", {}, None, "INVALID_ARGUMENT", 0.001, 0.0, 0)
    telemetry.drift.process_pending()
    telemetry.send_metrics()
    telemetry.stop()  # flushes the open drift window, the last metrics and an offline status
    messages = _spooled(telemetry)
    drift = [m for m in messages if isinstance(m, DriftPayload)]
    metrics = [m for m in messages if isinstance(m, MetricsPayload)]
    assert [d.window["samples"] for d in drift] == [5, 5, 2]
    assert all(DriftWindow.from_dict(d.window).reference == reference.fingerprint() for d in drift)
    assert sum(row.requests for m in metrics for row in m.models) == 13
    assert sum(row.errors.get("INVALID_ARGUMENT", 0) for m in metrics for row in m.models) == 1
    assert metrics[0].system.memory_rss_mb is not None
    last = messages[-1]
    assert isinstance(last, StatusPayload) and last.online is False and last.models == [MODEL]
    assert [m.seq for m in messages] == list(range(len(messages)))


def test_will_and_birth_announce_the_same_seq(tmp_path: Path) -> None:
    telemetry = _telemetry(tmp_path)
    will_seq = telemetry.spool.will_seq()
    topic, payload = telemetry._will(will_seq)
    will = decode_upstream(Channel.STATUS, payload, device_id=DEVICE)
    assert parse_topic(topic)[2] == Channel.STATUS
    assert (will.online, will.seq, will.will_seq) == (False, will_seq, will_seq)
    telemetry._birth(will_seq)
    (birth,) = _spooled(telemetry)
    assert birth.online is True and birth.will_seq == will_seq and birth.seq > will_seq
    assert birth.profile == "generic-x86" and birth.fleet == "lab" and birth.host.hostname
    assert telemetry.spool.will_seq() > birth.seq  # the next connection gets a fresh will seq


def test_a_status_after_a_model_change_names_the_will_of_its_connection(tmp_path: Path) -> None:
    telemetry = _telemetry(tmp_path)
    first_will = telemetry.spool.will_seq()
    before_connecting = telemetry.publish_status()  # the updater loaded the committed slot
    telemetry._birth(first_will)  # the connection opened with that will
    after_ota = telemetry.publish_status()  # an OTA switched versions
    second_will = telemetry.spool.will_seq()  # the connection was lost; the next one reserves
    during_outage = telemetry.publish_status()
    statuses = {m.seq: m for m in _spooled(telemetry)}
    assert statuses[before_connecting].will_seq == first_will
    assert statuses[after_ota].will_seq == first_will
    assert statuses[during_outage].will_seq == second_will
    assert all(m.online for m in statuses.values())


def test_the_announced_will_survives_a_restart(tmp_path: Path) -> None:
    telemetry = _telemetry(tmp_path)
    will = telemetry.spool.will_seq()
    telemetry._birth(will)
    telemetry.spool.close()
    reopened = Spool(tmp_path / "spool.db", max_bytes=1 << 20)
    with reopened.batch() as batch:
        assert batch.connection_will_seq() == will
    # A reservation made before a crash outranks it: that is the will the next connection carries.
    pending = reopened.will_seq()
    with reopened.batch() as batch:
        assert batch.connection_will_seq() == pending != will


def test_drops_are_reported_only_once_the_link_is_back(tmp_path: Path) -> None:
    telemetry = _telemetry(tmp_path)
    telemetry.spool.close()
    telemetry.spool = telemetry.outbox.spool = Spool(tmp_path / "small.db", max_bytes=4096)
    for _ in range(12):
        telemetry.send_metrics()  # offline: the oldest metrics make room for the newest
    offline = _spooled(telemetry)
    assert all(not m.spool_dropped for m in offline if isinstance(m, MetricsPayload))
    dropped = telemetry.spool.peek_drops()
    assert dropped.total > 0 and set(dropped.counts) == {"metrics"}

    telemetry.link = SimpleNamespace(connected=True)  # type: ignore[assignment]
    telemetry.send_metrics()
    messages = _spooled(telemetry)
    report = next(m for m in messages if isinstance(m, MetricsPayload) and m.spool_dropped)
    event = next(m for m in messages if isinstance(m, EventPayload) and m.code == "spool_dropped")
    assert report.spool_dropped == dropped.counts
    assert event.details["counts"] == dropped.counts
    listed = {s for first, last in event.details["seq_ranges"] for s in range(first, last + 1)}
    assert listed == set(dropped.seqs)
    # Reported once: what is pending now are only drops made after the report (making room for it).
    assert set(telemetry.spool.peek_drops().seqs).isdisjoint(dropped.seqs)


def test_rejected_commands_become_error_events(tmp_path: Path) -> None:
    telemetry = _telemetry(tmp_path)
    telemetry.commands.handle(telemetry.commands.desired_topic, b"\x00not json")
    (event,) = _spooled(telemetry)
    assert isinstance(event, EventPayload)
    assert (event.level, event.code) == ("error", "command_rejected")
    assert event.details["rejected_total"] == 1 and "UTF-8 JSON" in event.details["reason"]


def test_a_flood_of_bad_commands_is_counted_but_reported_at_a_bounded_rate(tmp_path: Path) -> None:
    telemetry = _telemetry(tmp_path)
    for _ in range(50):
        telemetry.commands.handle(telemetry.commands.desired_topic, b"garbage")
    events = _spooled(telemetry)
    assert telemetry.commands.rejected == 50
    assert 1 <= len(events) <= 6  # the burst (and at most one more a second)
    assert [event.details["rejected_total"] for event in events[:5]] == [1, 2, 3, 4, 5]
