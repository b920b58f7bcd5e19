"""A paho-mqtt client that reads its socket in large chunks: the ingest receives many messages a second.

paho 2.x reads each incoming packet with one ``recv`` per header byte and one per body, handles one
packet per ``select`` when nothing of its own is in flight, and wakes its loop through a socket
pair for every PUBACK it queues. A subscriber taking thousands of QoS 1 messages a second spends
most of its time in those system calls. This subclass changes three private methods, and nothing
of the protocol:

- ``_sock_recv`` serves reads from a buffer filled by ``recv(64 KiB)``;
- ``loop_read`` handles packets until the socket would block, so nothing is ever left in the
  buffer while ``select`` waits (it returns once the buffer and the socket are empty, or after
  ``MAX_PACKETS_PER_READ`` packets when the buffer happens to be empty);
- ``_handle_publish`` decodes a QoS 0 or 1 PUBLISH itself and skips its MQTT 5 properties (the
  ingest reads none, and paho builds a ``Properties`` object of some thirty names per message);
  anything unusual (QoS 2, an MQTT 5 topic alias) goes to paho's own handler;
- ``_packet_queue`` skips the wake-up byte when called on the loop's own thread (the loop writes
  what is queued on its next turn anyway: ``want_write`` puts the socket in ``select``'s write
  list), and appends a PUBACK to a PUBACK queued before it and not yet started, so the
  acknowledgements of a burst go out in one ``send``. PUBACKs carry no callbacks in paho, and
  their order among themselves is kept.

paho-mqtt is pinned (constraints.txt); ``tests/unit/test_fleet_ingest_paho.py`` checks these hooks
still exist with the shapes used here.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes

PUBACK = PacketTypes.PUBACK << 4

READ_CHUNK = 64 * 1024
MAX_PACKETS_PER_READ = 1000


class BufferedClient(mqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_buffer = bytearray()
        self._buffered_socket: object | None = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._sock is not self._buffered_socket:  # a new connection: nothing carries over
            self._read_buffer.clear()
            self._buffered_socket = self._sock
        if not self._read_buffer:
            data = super()._sock_recv(READ_CHUNK)  # raises BlockingIOError when nothing is there
            if not data:
                return b""
            self._read_buffer += data
        chunk = bytes(self._read_buffer[:bufsize])
        del self._read_buffer[:bufsize]
        return chunk

    def _handle_publish(self) -> MQTTErrorCode:
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        packet = self._in_packet["packet"]
        topic_length = int.from_bytes(packet[0:2], "big")
        if qos == 2 or topic_length == 0 or len(packet) < 2 + topic_length + (2 if qos else 0):
            result: MQTTErrorCode = super()._handle_publish()
            return result
        position = 2 + topic_length
        message = mqtt.MQTTMessage(topic=bytes(packet[2:position]))
        if qos:
            message.mid = int.from_bytes(packet[position : position + 2], "big")
            position += 2
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            length, size = _varint(packet, position)
            position += size + length
        message.qos = qos
        message.dup = bool(header & 0x08)
        message.retain = bool(header & 0x01)
        message.payload = bytes(packet[position:])
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        if qos == 1 and not self._manual_ack:
            puback: MQTTErrorCode = self._send_puback(message.mid)
            return puback
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        handled = 0
        while True:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                result: MQTTErrorCode = self._loop_rc_handle(rc)
                return result
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            handled += 1
            # Under a flood that never lets the socket run dry (QoS 0 needs no PUBACK to pause the
            # broker), give the loop its turn to write and ping now and then, but only with the
            # buffer empty: bytes left in it would wait for the next select.
            if handled >= MAX_PACKETS_PER_READ and not self._read_buffer:
                return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: mqtt.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        if self._thread is not None and threading.current_thread() is self._thread:
            if (command & 0xF0) == PUBACK and self._out_packet:
                last = self._out_packet[-1]
                if (last["command"] & 0xF0) == PUBACK and last["pos"] == 0:
                    merged = last["packet"]
                    if not isinstance(merged, bytearray):
                        merged = bytearray(merged)
                    merged += packet
                    last["packet"] = merged
                    last["to_process"] = len(merged)
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
            self._out_packet.append(
                {
                    "command": command,
                    "mid": mid,
                    "qos": qos,
                    "pos": 0,
                    "to_process": len(packet),
                    "packet": packet,
                    "info": info,
                }
            )
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        result: MQTTErrorCode = super()._packet_queue(command, packet, mid, qos, info)
        return result


def _varint(data: bytes | bytearray, position: int) -> tuple[int, int]:
    """An MQTT variable byte integer at ``position``: its value and how many bytes it took."""
    value, multiplier, size = 0, 1, 0
    while True:
        byte = data[position + size]
        value += (byte & 0x7F) * multiplier
        size += 1
        if not byte & 0x80 or size == 4:
            return value, size
        multiplier *= 128
