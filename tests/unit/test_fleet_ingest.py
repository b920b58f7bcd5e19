"""The ingest's pure core: decoding against the contract, status ordering, and what a batch writes."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.ingest.decode import MAX_BIGINT, Decoded, Dropped, DropReason, Message, decode_message
from fleet.ingest.plan import (
    DRIFT_TABLE,
    EVENTS_TABLE,
    METRICS_TABLE,
    device_changes,
    key_of,
    models_of,
    plan_rows,
)
from fleet.ingest.status import DeviceState, StatusVerdict, after_status, judge_status
from models.mqtt_contract import (
    MAX_PAYLOAD_BYTES,
    UPSTREAM_CHANNELS,
    Channel,
    ModelState,
    StatusPayload,
    decode_upstream,
    encode,
    topic,
)
from models.stats import build_reference_stats, count_window
from tests.support.sim_devices import SimDevice

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DEVICE = "cam-01"


def device(device_id: str = DEVICE) -> SimDevice:
    return SimDevice("unused", 0, device_id)


def message(channel: Channel, data: bytes, device_id: str = DEVICE, fleet: str = "default") -> Message:
    return Message(topic(fleet, device_id, channel), data, NOW)


def window_dict() -> dict[str, object]:
    import numpy as np

    x = np.random.default_rng(0).standard_normal((64, 4))
    reference = build_reference_stats({"x": x}, {"y": x[:, :3]}, layouts={"x": "NC"})
    return count_window(reference, {"x": x}, {"y": x[:, :3]}).to_dict()


def valid_payload(channel: Channel, sim: SimDevice, seq: int = 7) -> bytes:
    from models.stats import DriftWindow

    if channel is Channel.STATUS:
        return encode(sim.status(seq, online=True, will_seq=seq - 1))
    if channel is Channel.METRICS:
        return encode(sim.metrics(seq=seq))
    if channel is Channel.DRIFT:
        return encode(sim.drift("digits", "1.0.0", DriftWindow.from_dict(window_dict()), seq=seq))
    if channel is Channel.EVENTS:
        return encode(sim.event(seq=seq))
    return encode(sim.ota(seq=seq))


def decoded(channel: Channel, seq: int, device_id: str = DEVICE, **status: object) -> Decoded:
    sim = device(device_id)
    data = (
        encode(sim.status(seq, online=bool(status.get("online", True)), will_seq=status.get("will_seq")))  # type: ignore[arg-type]
        if channel is Channel.STATUS
        else valid_payload(channel, sim, seq)
    )
    result = decode_message(message(channel, data, device_id))
    assert isinstance(result, Decoded), result
    return replace(result, received_at=NOW + timedelta(seconds=seq))


def state(**changes: object) -> DeviceState:
    base = DeviceState(
        id=DEVICE,
        fleet="default",
        online=False,
        last_seen=None,
        last_seq=None,
        status_seq=None,
        will_seq=None,
        metrics_seq=None,
        updated_at=NOW,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# --- decoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", UPSTREAM_CHANNELS, ids=lambda c: c.value)
def test_valid_payloads_decode_the_same_as_the_contract(channel: Channel) -> None:
    data = valid_payload(channel, device())
    for _ in range(2):  # the first goes through decode_upstream, the second through the fast path
        result = decode_message(message(channel, data))
        assert isinstance(result, Decoded)
        assert result.payload == decode_upstream(channel, data)
        assert result.channel is channel and result.device_id == DEVICE and result.seq == 7
        assert json.loads(result.stored_json)["seq"] == 7


@pytest.mark.parametrize("channel", UPSTREAM_CHANNELS, ids=lambda c: c.value)
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\xff\xfe garbage \x81", DropReason.MALFORMED),
        (b"[1, 2, 3]", DropReason.MALFORMED),
        (b'{"hello": "world"}', DropReason.SCHEMA),
        (b'{"device_id": "cam-01", "seq": -1}', DropReason.SCHEMA),
        (b" " * (MAX_PAYLOAD_BYTES + 1), DropReason.OVERSIZED),
    ],
    ids=["garbage", "json-array", "wrong-schema", "negative-seq", "huge"],
)
def test_bad_payloads_are_dropped_with_their_reason(
    channel: Channel, data: bytes, reason: DropReason
) -> None:
    result = decode_message(message(channel, data))
    assert isinstance(result, Dropped)
    assert (result.channel, result.reason) == (channel.value, reason)
    assert result.detail


def test_a_payload_of_another_kind_on_a_channel_is_a_schema_error() -> None:
    data = valid_payload(Channel.EVENTS, device())
    decode_message(message(Channel.EVENTS, data))  # teach the fast path that events are events
    result = decode_message(message(Channel.METRICS, data))
    assert isinstance(result, Dropped) and result.reason is DropReason.SCHEMA
    assert "does not belong on channel 'metrics'" in result.detail


@pytest.mark.parametrize("channel", UPSTREAM_CHANNELS, ids=lambda c: c.value)
def test_publishing_under_another_device_id_is_refused(channel: Channel) -> None:
    data = valid_payload(channel, device("cam-02"))
    result = decode_message(message(channel, data, device_id=DEVICE))
    assert isinstance(result, Dropped) and result.reason is DropReason.IDENTITY
    assert "cam-02" in result.detail and DEVICE in result.detail


def test_a_status_for_another_fleet_is_refused() -> None:
    data = valid_payload(Channel.STATUS, device())
    result = decode_message(message(Channel.STATUS, data, fleet="other"))
    assert isinstance(result, Dropped) and result.reason is DropReason.IDENTITY


@pytest.mark.parametrize(
    "name",
    [
        "edgefleet/v1/default/cam-01",
        "edgefleet/v2/default/cam-01/status",
        "x/y",
        "edgefleet/v1/+/cam-01/status",
    ],
)
def test_topics_outside_the_contract_are_bad_topics(name: str) -> None:
    result = decode_message(Message(name, valid_payload(Channel.STATUS, device()), NOW))
    assert isinstance(result, Dropped) and result.reason is DropReason.BAD_TOPIC


def test_the_servers_own_channel_is_not_ingested() -> None:
    result = decode_message(message(Channel.DESIRED, b"{}"))
    assert isinstance(result, Dropped) and result.reason is DropReason.BAD_TOPIC


def test_what_the_database_cannot_store_is_a_schema_error() -> None:
    sim = device()
    too_big = encode(sim.metrics(seq=1)).replace(b'"seq":1,', f'"seq":{MAX_BIGINT + 1},'.encode())
    nul = encode(sim.event(seq=2)).replace(b"simulated", b"simu\\u0000lated")
    for channel, data in ((Channel.METRICS, too_big), (Channel.EVENTS, nul)):
        result = decode_message(message(channel, data))
        assert isinstance(result, Dropped) and result.reason is DropReason.SCHEMA, result


def test_a_drift_window_that_does_not_parse_is_a_schema_error() -> None:
    payload = json.loads(valid_payload(Channel.DRIFT, device()))
    broken = dict(
        payload,
        window={"schema_version": 1, "reference": "x", "samples": 3, "features": {"f": {"counts": [1, -2]}}},
    )
    nan = dict(payload)
    nan["window"] = json.loads(json.dumps(payload["window"]))
    first = next(iter(nan["window"]["features"]))
    nan["window"]["features"][first]["mean"] = float("nan")
    for body in (broken, nan):
        result = decode_message(message(Channel.DRIFT, json.dumps(body).encode()))
        assert isinstance(result, Dropped) and result.reason is DropReason.SCHEMA
        assert "drift window" in result.detail


def test_nan_in_a_payload_is_stored_as_valid_json() -> None:
    data = encode(device().metrics(seq=3)).replace(b'"cpu_percent":12.5', b'"cpu_percent":NaN')
    result = decode_message(message(Channel.METRICS, data))
    assert isinstance(result, Decoded)
    assert "NaN" not in result.stored_json
    assert json.loads(result.stored_json)["system"]["cpu_percent"] is None


def test_a_timestamp_without_a_zone_is_utc() -> None:
    data = json.loads(encode(device().event(seq=4)))
    data["ts"] = "2025-03-01T10:00:00"
    result = decode_message(message(Channel.EVENTS, json.dumps(data).encode()))
    assert isinstance(result, Decoded)
    assert result.payload.ts == datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


# --- status ordering ------------------------------------------------------------------------------


def status(seq: int, *, online: bool, will_seq: int | None) -> object:
    return device().status(seq, online=online, will_seq=will_seq)


@pytest.mark.parametrize(
    ("current", "incoming", "verdict"),
    [
        ({}, {"seq": 2, "online": True, "will_seq": 1}, StatusVerdict.APPLY),
        ({"status_seq": 2, "will_seq": 1}, {"seq": 5, "online": True, "will_seq": 4}, StatusVerdict.APPLY),
        ({"status_seq": 5, "will_seq": 4}, {"seq": 2, "online": True, "will_seq": 1}, StatusVerdict.STALE),
        ({"status_seq": 5, "will_seq": 4}, {"seq": 5, "online": True, "will_seq": 4}, StatusVerdict.STALE),
        ({"status_seq": 5, "will_seq": 4}, {"seq": 4, "online": False, "will_seq": 4}, StatusVerdict.WILL),
        ({"status_seq": 5, "will_seq": 4}, {"seq": 1, "online": False, "will_seq": 1}, StatusVerdict.STALE),
        (
            {"status_seq": 5, "will_seq": None},
            {"seq": 4, "online": False, "will_seq": 4},
            StatusVerdict.STALE,
        ),
        (
            {"status_seq": 5, "will_seq": 4},
            {"seq": 9, "online": False, "will_seq": None},
            StatusVerdict.APPLY,
        ),
        (
            {"status_seq": 8, "will_seq": 4},
            {"seq": 4, "online": False, "will_seq": 4},
            StatusVerdict.WILL,
        ),
    ],
    ids=[
        "first-birth",
        "newer-birth",
        "older-birth",
        "same-birth-again",
        "will-of-this-connection",
        "will-of-an-old-connection",
        "will-already-spent",
        "graceful-goodbye",
        "will-after-a-model-change",
    ],
)
def test_status_rules(
    current: dict[str, object], incoming: dict[str, object], verdict: StatusVerdict
) -> None:
    payload = status(**incoming)  # type: ignore[arg-type]
    assert judge_status(state(**current), payload) is verdict  # type: ignore[arg-type]


@pytest.mark.parametrize("named", [True, False], ids=["status-names-its-will", "older-agent"])
def test_a_status_after_a_model_change_keeps_the_connections_will(named: bool) -> None:
    birth = status(5, online=True, will_seq=4)
    after_birth = after_status(state(), birth, judge_status(state(), birth))  # type: ignore[arg-type]
    update = status(8, online=True, will_seq=4 if named else None)
    after_update = after_status(after_birth, update, judge_status(after_birth, update))  # type: ignore[arg-type]
    assert (after_update.status_seq, after_update.will_seq) == (8, 4)
    will = status(4, online=False, will_seq=4)
    assert judge_status(after_update, will) is StatusVerdict.WILL  # type: ignore[arg-type]


def test_the_running_version_is_the_one_flagged_default_while_two_are_loaded() -> None:
    def loaded(*versions: tuple[str, bool | None]) -> StatusPayload:
        models = [
            ModelState(name="digits", version=v, format="onnx", precision="fp32", default=d)
            for v, d in versions
        ]
        return device().status(3, online=True, will_seq=2).model_copy(update={"models": models})

    # Back on 1.0.0 during the watch window of a revert: 1.1.0 is still loaded, and listed last.
    assert models_of(loaded(("1.0.0", True), ("1.1.0", False))) == {"digits": "1.0.0"}
    assert models_of(loaded(("1.0.0", False), ("1.1.0", True))) == {"digits": "1.1.0"}
    assert models_of(loaded(("1.0.0", None), ("1.1.0", None))) == {"digits": "1.1.0"}  # older agents


def test_applying_a_will_goes_offline_and_spends_it() -> None:
    before = state(online=True, status_seq=5, will_seq=4)
    will = status(4, online=False, will_seq=4)
    after = after_status(before, will, StatusVerdict.WILL)  # type: ignore[arg-type]
    assert (after.online, after.status_seq, after.will_seq) == (False, 5, None)
    assert judge_status(after, will) is StatusVerdict.STALE  # type: ignore[arg-type]


# --- planning a batch -----------------------------------------------------------------------------


def test_plan_rows_by_table_without_repeats() -> None:
    messages = [
        decoded(Channel.METRICS, 3),
        decoded(Channel.DRIFT, 4),
        decoded(Channel.EVENTS, 5),
        decoded(Channel.OTA, 6),
        decoded(Channel.STATUS, 7, will_seq=6),
        decoded(Channel.METRICS, 3),  # QoS 1 delivered it twice
    ]
    plan = plan_rows(messages, {DEVICE: state()})
    assert [len(plan.rows[t]) for t in (METRICS_TABLE, DRIFT_TABLE, EVENTS_TABLE)] == [1, 1, 3]
    assert sorted(row["kind"] for row in plan.rows[EVENTS_TABLE]) == ["event", "ota", "status"]
    assert [m.seq for m in plan.repeats] == [3]
    drift = plan.rows[DRIFT_TABLE][0]
    assert (drift["model_name"], drift["model_version"], drift["samples"]) == ("digits", "1.0.0", 64)
    assert plan.rows[METRICS_TABLE][0]["model_name"] == "digits"
    assert json.loads(plan.rows[METRICS_TABLE][0]["payload"])["seq"] == 3


def test_plan_drops_unknown_devices_and_wrong_fleets() -> None:
    other = decoded(Channel.METRICS, 2, device_id="ghost")
    mine = decoded(Channel.METRICS, 3)
    plan = plan_rows([other, mine], {DEVICE: state(fleet="plant-7")})
    assert sorted(d.reason.value for d in plan.dropped) == ["fleet_mismatch", "unknown_device"]
    assert plan.accepted == []


def test_device_changes_follow_new_messages_only() -> None:
    metrics_old, metrics_new = decoded(Channel.METRICS, 10), decoded(Channel.METRICS, 12)
    replayed = decoded(Channel.EVENTS, 30)
    birth = decoded(Channel.STATUS, 11, online=True, will_seq=9)
    accepted = [metrics_new, metrics_old, birth, replayed]
    new = {key_of(m) for m in (metrics_old, metrics_new, birth)}  # the event was stored before
    change = device_changes({DEVICE: state(metrics_seq=10)}, accepted, new)[DEVICE]
    assert change.touched and change.metrics is not None and change.metrics.seq == 12
    assert change.state.last_seq == 12 and change.state.last_seen == metrics_new.received_at
    assert (change.state.online, change.state.status_seq, change.state.will_seq) == (True, 11, 9)


def test_a_will_does_not_count_as_hearing_from_the_device() -> None:
    will = decoded(Channel.STATUS, 9, online=False, will_seq=9)
    before = state(online=True, status_seq=11, will_seq=9, last_seen=NOW, last_seq=11)
    change = device_changes({DEVICE: before}, [will], {key_of(will)})[DEVICE]
    assert change.status is not None and not change.state.online
    assert not change.touched and change.state.last_seen == NOW


# --- status over whole lifetimes (property) -------------------------------------------------------


@st.composite
def lifetimes(draw: st.DrawFn) -> tuple[list[Decoded], bool]:
    """Connections, each a will reserved, a birth, some metrics and status updates, and an end
    (will, goodbye or none for the last); delivered in order, with earlier messages redelivered at
    random points."""
    seq = 0
    sent: list[Decoded] = []
    online = False
    episodes = draw(st.integers(1, 4))
    for episode in range(episodes):
        seq += 1
        will_seq = seq
        seq += 1
        sent.append(decoded(Channel.STATUS, seq, online=True, will_seq=will_seq))
        online = True
        for _ in range(draw(st.integers(0, 2))):
            seq += 1
            if draw(st.booleans()):
                sent.append(decoded(Channel.METRICS, seq))
            else:  # a model was loaded or unloaded: a status that names this connection's will, or
                # (from an older agent) none
                named = draw(st.booleans())
                sent.append(decoded(Channel.STATUS, seq, online=True, will_seq=will_seq if named else None))
        end = draw(st.sampled_from(["will", "goodbye"] + (["stay"] if episode == episodes - 1 else [])))
        if end == "will":
            sent.append(decoded(Channel.STATUS, will_seq, online=False, will_seq=will_seq))
            online = False
        elif end == "goodbye":
            seq += 1
            sent.append(decoded(Channel.STATUS, seq, online=False, will_seq=None))
            online = False
    delivered: list[Decoded] = []
    for index, item in enumerate(sent):
        delivered.append(item)
        for _ in range(draw(st.integers(0, 2))):
            delivered.append(sent[draw(st.integers(0, index))])
    return delivered, online


@settings(max_examples=60, deadline=None)
@given(lifetimes(), st.integers(1, 5))
def test_online_state_survives_redelivery(case: tuple[list[Decoded], bool], batch_size: int) -> None:
    delivered, online = case
    current = state()
    stored: set[tuple[str, str, int]] = set()
    for start in range(0, len(delivered), batch_size):
        batch = delivered[start : start + batch_size]
        plan = plan_rows(batch, {DEVICE: current})
        new = {key_of(m) for m in plan.accepted} - stored  # what ON CONFLICT DO NOTHING would report
        stored |= new
        changes = device_changes({DEVICE: current}, plan.accepted, new)
        if DEVICE in changes:
            current = changes[DEVICE].state
    assert current.online is online
    assert current.last_seq == max(
        m.seq
        for m in delivered
        if not (m.channel is Channel.STATUS and m.payload.will_seq == m.seq and not m.payload.online)
    )


# --- drift windows: the ingest's quick check agrees with models.stats -----------------------------


def _mutations(window: dict[str, Any]) -> list[dict[str, Any]]:
    first = next(iter(window["features"]))

    def feature(**changes: Any) -> dict[str, Any]:
        copy = json.loads(json.dumps(window))
        copy["features"][first].update(changes)
        return copy

    def top(**changes: Any) -> dict[str, Any]:
        return {**json.loads(json.dumps(window)), **changes}

    return [
        top(schema_version=2),
        top(samples=-1),
        top(samples="many"),
        top(features=[]),
        {k: v for k, v in window.items() if k != "reference"},
        feature(counts=[1, -1, 2]),
        feature(counts="1,2,3"),
        feature(count=-3),
        feature(variance=-0.5),
        feature(mean="x"),
        feature(count=0, mean=None, variance=None, min=None, max=None, counts=[0, 0]),
    ]


def _stats_accepts(window: dict[str, Any]) -> bool:
    from models.stats import DriftWindow

    try:
        DriftWindow.from_dict(window)
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    return True


def test_the_quick_window_check_refuses_whatever_models_stats_refuses() -> None:
    from fleet.ingest.decode import window_problem

    valid = window_dict()
    assert window_problem(valid) is None and _stats_accepts(valid)
    refused_by_stats = 0
    for mutated in _mutations(valid):
        if not _stats_accepts(mutated):
            refused_by_stats += 1
            assert window_problem(mutated) is not None, mutated
    assert refused_by_stats >= 7
    # Stricter on purpose: a negative sample count means nothing, and would be stored as such.
    assert _stats_accepts({**valid, "samples": -1}) and window_problem({**valid, "samples": -1})
    # An empty feature (nothing finite was seen) is fine for both.
    assert window_problem(_mutations(valid)[-1]) is None
