"""The MQTT contract: topics round-trip, and every malformed payload gets a ContractError."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.mqtt_contract import (
    MAX_PAYLOAD_BYTES,
    Channel,
    ContractError,
    DesiredModel,
    DesiredState,
    EventLevel,
    EventPayload,
    MetricsPayload,
    StatusPayload,
    decode_desired,
    decode_upstream,
    device_filter,
    encode,
    ingest_subscriptions,
    parse_topic,
    topic,
)

segments = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(fleet=segments, device=segments, channel=st.sampled_from(list(Channel)))
def test_topics_round_trip(fleet: str, device: str, channel: Channel) -> None:
    assert parse_topic(topic(fleet, device, channel)) == (fleet, device, channel)


@pytest.mark.parametrize("bad", ["a/b", "+", "#", "", "dev ice", "-lead", "x" * 200])
def test_topic_segments_refuse_wildcards_and_slashes(bad: str) -> None:
    with pytest.raises(ContractError, match="topic segment"):
        topic("default", bad, Channel.STATUS)


@pytest.mark.parametrize(
    "name",
    ["edgefleet/v1/default/dev1", "edgefleet/v2/default/dev1/status", "edgefleet/v1/default/dev1/nope", "x"],
)
def test_parse_topic_refuses_other_shapes(name: str) -> None:
    with pytest.raises(ContractError):
        parse_topic(name)


def test_ingest_subscriptions_are_shared_and_cover_upward_channels() -> None:
    subs = ingest_subscriptions()
    assert all(s.startswith("$share/fleet/edgefleet/v1/+/+/") for s in subs)
    assert {s.rsplit("/", 1)[1] for s in subs} == {"status", "metrics", "drift", "events", "ota"}
    assert device_filter("f", "d") == "edgefleet/v1/f/d/#"


def test_status_round_trips() -> None:
    sent = StatusPayload(
        device_id="dev1", seq=7, online=True, agent_version="0.1.0", profile="raspberry-pi-5"
    )
    got = decode_upstream(Channel.STATUS, encode(sent), device_id="dev1")
    assert got == sent


def test_metrics_round_trips() -> None:
    sent = MetricsPayload(device_id="d", seq=1, window_start=datetime.now(UTC), window_s=10.0)
    assert decode_upstream(Channel.METRICS, encode(sent)) == sent


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\xff\xfe garbage", "not UTF-8 JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"device_id": "d", "seq": -1, "online": true}', "seq"),
        (b'{"device_id": "d", "seq": 1}', "online"),
        (b'{"device_id": "d", "seq": 1, "online": true, "surprise": 1}', "surprise"),
        (b'{"kind": "metrics", "device_id": "d", "seq": 1}', "does not belong"),
        (b" " * (MAX_PAYLOAD_BYTES + 1), "exceeds"),
    ],
)
def test_malformed_status_payloads_are_refused(data: bytes, needle: str) -> None:
    with pytest.raises(ContractError, match=needle):
        decode_upstream(Channel.STATUS, data)


def test_a_device_cannot_speak_for_another() -> None:
    data = encode(EventPayload(device_id="A", seq=1, level=EventLevel.INFO, code="x", message="hi"))
    with pytest.raises(ContractError, match="published under device 'B'"):
        decode_upstream(Channel.EVENTS, data, device_id="B")


def test_desired_round_trips_and_refuses_garbage() -> None:
    state = DesiredState(
        revision=3,
        models={
            "digits": DesiredModel(
                version="1.2.0",
                bundle_sha256="a" * 64,
                bundle_size=10,
                bundle_url="/api/v1/bundles/" + "a" * 64,
            )
        },
    )
    assert decode_desired(encode(state)) == state
    with pytest.raises(ContractError, match="desired state"):
        decode_desired(json.dumps({"revision": "soon"}).encode())
    with pytest.raises(ContractError, match="downward"):
        decode_upstream(Channel.DESIRED, encode(state))
