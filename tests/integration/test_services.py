"""The test infrastructure itself: a private Mosquitto that restarts, and fresh PostgreSQL databases."""

from __future__ import annotations

import queue
import uuid

import paho.mqtt.client as mqtt
import psycopg
import pytest
import sqlalchemy as sa

from tests.support.mosquitto import MosquittoBroker
from tests.support.net import port_open

pytestmark = pytest.mark.integration


def _client(broker: MosquittoBroker, received: queue.Queue[bytes] | None = None) -> mqtt.Client:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    if received is not None:
        client.on_message = lambda _c, _u, msg: received.put(msg.payload)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def _round_trip(broker: MosquittoBroker, payload: bytes) -> bytes:
    received: queue.Queue[bytes] = queue.Queue()
    subscriber = _client(broker, received)
    publisher = _client(broker)
    try:
        topic = f"test/{uuid.uuid4().hex}"
        subscriber.subscribe(topic, qos=1)[0]
        # Retained, so the message arrives even if the SUBACK races the publish.
        publisher.publish(topic, payload, qos=1, retain=True).wait_for_publish(timeout=5)
        return received.get(timeout=5)
    finally:
        for client in (subscriber, publisher):
            client.loop_stop()
            client.disconnect()


def test_private_broker_is_not_the_system_one(mosquitto: MosquittoBroker) -> None:
    assert mosquitto.port != 1883
    assert mosquitto.running
    assert _round_trip(mosquitto, b"hello") == b"hello"


def test_broker_stops_and_restarts_on_the_same_port(mosquitto: MosquittoBroker) -> None:
    port = mosquitto.port
    mosquitto.stop()
    assert not mosquitto.running
    assert not port_open(mosquitto.host, port)
    with pytest.raises(ConnectionRefusedError):
        mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5).connect(mosquitto.host, port)
    mosquitto.start()
    assert mosquitto.port == port
    assert _round_trip(mosquitto, b"back") == b"back"


def test_fresh_postgres_database_is_empty_and_private(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            tables = conn.execute(
                sa.text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            ).scalar_one()
            assert tables == 0
            conn.execute(sa.text("CREATE TABLE probe (id integer primary key)"))
            conn.execute(sa.text("INSERT INTO probe VALUES (1)"))
            assert conn.execute(sa.text("SELECT count(*) FROM probe")).scalar_one() == 1
    finally:
        engine.dispose()


def test_postgres_database_is_dropped_afterwards() -> None:
    from tests.support.postgres import ADMIN_DSN, fresh_database

    with fresh_database() as url:
        name = url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert row is None
