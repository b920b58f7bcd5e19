"""The ingest's paho client: the private hooks it overrides still exist, and they keep MQTT intact."""

from __future__ import annotations

import inspect
import select
import socket
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from fleet.ingest.fastpaho import READ_CHUNK, BufferedClient


def client() -> BufferedClient:
    return BufferedClient(callback_api_version=CallbackAPIVersion.VERSION2, client_id="test")


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("_sock_recv", ["self", "bufsize"]),
        ("loop_read", ["self", "max_packets"]),
        ("_packet_queue", ["self", "command", "packet", "mid", "qos", "info"]),
        ("_packet_read", ["self"]),
        ("_loop_rc_handle", ["self", "rc"]),
    ],
)
def test_the_paho_hooks_have_the_shapes_we_override(name: str, parameters: list[str]) -> None:
    assert list(inspect.signature(getattr(mqtt.Client, name)).parameters) == parameters
    assert hasattr(mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2), "_out_packet")


def test_reads_come_from_one_large_recv() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    paho = client()
    paho._sock = ours
    try:
        theirs.sendall(b"abcdefgh")
        assert paho._sock_recv(1) == b"a"
        assert paho._sock_recv(3) == b"bcd"
        assert paho._sock_recv(READ_CHUNK) == b"efgh"
        with pytest.raises(BlockingIOError):
            paho._sock_recv(1)
        theirs.close()
        assert paho._sock_recv(1) == b""  # end of stream, after the buffer is empty
    finally:
        ours.close()


def test_a_new_connection_starts_with_an_empty_buffer() -> None:
    first, first_peer = socket.socketpair()
    second, second_peer = socket.socketpair()
    paho = client()
    try:
        paho._sock = first
        first_peer.sendall(b"old bytes")
        assert paho._sock_recv(3) == b"old"
        paho._sock = second
        second_peer.sendall(b"new")
        assert paho._sock_recv(10) == b"new"
    finally:
        for sock in (first, first_peer, second, second_peer):
            sock.close()


def test_pubacks_queued_on_the_loop_thread_go_out_together() -> None:
    paho = client()
    paho._thread = threading.current_thread()
    for mid in (1, 2, 3):
        assert paho._send_puback(mid) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert len(paho._out_packet) == 1
    packet = paho._out_packet[0]
    assert bytes(packet["packet"]) == b"@\x02\x00\x01@\x02\x00\x02@\x02\x00\x03"
    assert packet["to_process"] == 12


def test_other_threads_still_wake_the_loop() -> None:
    paho = client()
    paho._thread = threading.Thread(target=lambda: None)  # the loop is someone else
    paho._sockpairR, paho._sockpairW = socket.socketpair()
    try:
        paho._send_puback(1)
        paho._send_puback(2)
        assert len(paho._out_packet) == 2  # not merged, as paho does it
        assert paho._sockpairR.recv(10) == b"00"  # one wake-up byte per packet
    finally:
        paho._sockpairR.close()
        paho._sockpairW.close()


def _publish_packet(
    topic: bytes, payload: bytes, *, qos: int, mid: int, v5: bool, properties: bytes = b""
) -> tuple[int, bytes]:
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    if v5:
        body += bytes([len(properties)]) + properties
    header = 0x30 | (qos << 1) | 0x01  # PUBLISH, retained
    return header, body + payload


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
@pytest.mark.parametrize("qos", [0, 1])
def test_publish_decoding_matches_paho(v5: bool, qos: int) -> None:
    from paho.mqtt.enums import MQTTProtocolVersion

    # MQTT 5 properties: Message Expiry Interval (2) = 60 and a User Property (38) a=b.
    properties = b"\x02\x00\x00\x00\x3c" + b"\x26\x00\x01a\x00\x01b"
    header, body = _publish_packet(
        b"edgefleet/v1/default/cam-01/metrics", b'{"seq": 1}', qos=qos, mid=513, v5=v5, properties=properties
    )
    seen: dict[str, list[mqtt.MQTTMessage]] = {"ours": [], "paho": []}
    queued: dict[str, int] = {}
    for name, kind in (("ours", BufferedClient), ("paho", mqtt.Client)):
        paho = kind(
            callback_api_version=CallbackAPIVersion.VERSION2,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        )
        paho.on_message = lambda c, u, m, bucket=seen[name]: bucket.append(m)
        paho._thread = threading.current_thread()  # as on paho's loop thread: PUBACKs are queued
        paho._in_packet["command"] = header
        paho._in_packet["packet"] = bytearray(body)
        assert paho._handle_publish() == MQTTErrorCode.MQTT_ERR_SUCCESS
        queued[name] = len(paho._out_packet)
    (ours,), (theirs,) = seen["ours"], seen["paho"]
    for field in ("topic", "payload", "qos", "mid", "retain", "dup"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert queued["ours"] == queued["paho"] == qos  # one PUBACK for QoS 1, none for QoS 0


def test_unusual_publishes_go_to_paho() -> None:
    header, body = _publish_packet(b"a/b", b"x", qos=2, mid=7, v5=False)
    paho = client()
    seen: list[mqtt.MQTTMessage] = []
    paho.on_message = lambda c, u, m: seen.append(m)
    paho._in_packet["command"] = header
    paho._in_packet["packet"] = bytearray(body)
    paho._handle_publish()
    assert seen == [] and 7 in paho._in_messages  # QoS 2 waits for PUBREL, as paho does it


def test_loop_read_drains_the_socket_and_yields_under_a_flood() -> None:
    from fleet.ingest.fastpaho import MAX_PACKETS_PER_READ

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    paho = client()
    paho._sock = ours
    paho._thread = threading.current_thread()
    seen: list[bytes] = []
    paho.on_message = lambda c, u, m: seen.append(bytes(m.payload))

    def send(count: int, start: int) -> None:
        for n in range(start, start + count):
            header, body = _publish_packet(b"t/x", str(n).encode(), qos=0, mid=0, v5=False)
            theirs.sendall(bytes([header, len(body)]) + body)

    try:
        send(10, 0)
        assert paho.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert seen == [str(n).encode() for n in range(10)]

        theirs.setblocking(True)
        writer = threading.Thread(target=send, args=(3 * MAX_PACKETS_PER_READ, 10))
        writer.start()
        rounds = 0
        while len(seen) < 10 + 3 * MAX_PACKETS_PER_READ:
            # Wait for data rather than spin: on a loaded machine the writer may be slower than
            # any fixed number of empty reads.
            select.select([ours], [], [], 5.0)
            paho.loop_read()
            rounds += 1
            assert rounds < 10_000
        writer.join()
        assert seen == [str(n).encode() for n in range(10 + 3 * MAX_PACKETS_PER_READ)]
    finally:
        ours.close()
        theirs.close()
