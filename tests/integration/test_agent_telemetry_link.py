"""The spool and the MQTT link on their own, against real processes: SIGKILL mid-write, credentials,
TLS, and a broker that refuses a message."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_agent.telemetry import BrokerAddress, LinkSettings, MqttLink, Spool, parse_mqtt_url
from edge_agent.telemetry.mqtt_link import LinkCallbacks
from models.mqtt_contract import Channel, EventLevel, EventPayload, encode, topic
from tests.support.mosquitto import MosquittoBroker
from tests.support.telemetry import Recorder

pytestmark = pytest.mark.integration

FLEET, DEVICE = "lab", "dev-9"

WRITER = """
import sys
from pathlib import Path
from edge_agent.telemetry.spool import Spool
from models.mqtt_contract import Channel
spool = Spool(Path(sys.argv[1]))
while True:
    seq = spool.append(Channel.DRIFT, "t", lambda seq: b'{"seq":%d}' % seq)
    print(seq, flush=True)  # printed only once the commit is on disk
"""


def test_every_committed_message_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    acknowledged = [int(writer.stdout.readline()) for _ in range(150)]
    writer.send_signal(signal.SIGKILL)  # mid-write: it keeps appending until the signal lands
    writer.wait()
    spool = Spool(path)
    stored = {m.seq: m.payload for m in spool.read_after(-1, 100_000)}
    assert all(stored[seq] == b'{"seq":%d}' % seq for seq in acknowledged)
    assert sorted(stored) == list(range(len(stored)))  # no hole, whatever the last commit was
    assert spool.append(Channel.DRIFT, "t", lambda seq: b"{}") == len(stored)


def _event(seq: int, text: str = "hello") -> bytes:
    return encode(EventPayload(device_id=DEVICE, seq=seq, level=EventLevel.INFO, code="test", message=text))


def _link(spool: Spool, broker_url: str, **settings: object) -> MqttLink:
    status_topic = topic(FLEET, DEVICE, Channel.STATUS)
    return MqttLink(
        LinkSettings(
            broker=parse_mqtt_url(broker_url),
            client_id=f"test-{DEVICE}",
            reconnect_min_s=0.1,
            reconnect_max_s=0.5,
            connack_timeout_s=5.0,
            **settings,  # type: ignore[arg-type]
        ),
        spool,
        LinkCallbacks(will=lambda seq: (status_topic, b"")),
    )


def _spool_events(spool: Spool, n: int) -> list[int]:
    events = topic(FLEET, DEVICE, Channel.EVENTS)
    return [spool.append(Channel.EVENTS, events, _event) for _ in range(n)]


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.fail("mosquitto_passwd is missing: it comes with the mosquitto package")
    password_file = tmp_path / "passwd"
    subprocess.run([passwd, "-b", "-c", str(password_file), DEVICE, "right-password"], check=True)
    password_file.chmod(0o644)
    broker = MosquittoBroker(workdir=tmp_path / "mosquitto", password_file=password_file)
    acl = tmp_path / "acl"
    # The device may write its own topics except metrics, so the broker refuses those publishes.
    acl.write_text(
        f"user {DEVICE}\n"
        + "".join(f"topic write edgefleet/v1/{FLEET}/{DEVICE}/{c}\n" for c in ("status", "events", "drift"))
        + "user recorder\ntopic read #\n"
    )
    acl.chmod(0o644)
    broker.acl_file = acl
    subprocess.run([passwd, "-b", str(password_file), "recorder", "recorder-password"], check=True)
    broker.start()
    yield broker
    broker.stop()


def test_wrong_credentials_keep_retrying_and_right_ones_deliver(
    password_broker: MosquittoBroker, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool.db")
    seqs = _spool_events(spool, 5)
    wrong = _link(spool, password_broker.url, username=DEVICE, password="wrong-password")
    wrong.start()
    try:
        deadline = time.monotonic() + 10
        while wrong.stats.connect_failures < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert wrong.stats.connect_failures >= 3 and wrong.stats.connects == 0
        assert spool.count == len(seqs)  # nothing lost while refused
    finally:
        wrong.stop()
    right = _link(spool, password_broker.url, username=DEVICE, password="right-password")
    right.start()
    try:
        assert right.flush(20), "the spool was not delivered with the right password"
        assert right.stats.acked == len(seqs)
    finally:
        right.stop()


def test_a_publish_the_broker_refuses_is_dropped_and_reported(
    password_broker: MosquittoBroker, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool.db")
    events = _spool_events(spool, 2)
    refused = spool.append(Channel.METRICS, topic(FLEET, DEVICE, Channel.METRICS), _event)
    events += _spool_events(spool, 2)
    link = _link(spool, password_broker.url, username=DEVICE, password="right-password")
    link.start()
    try:
        assert link.flush(20), "the spool did not empty"
    finally:
        link.stop()
    assert link.stats.acked == len(events) and link.stats.refused == 1
    report = spool.peek_drops()
    assert report.counts == {"metrics": 1} and report.seqs == (refused,)


# --- TLS -----------------------------------------------------------------------------------------


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgefleet test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    for path in paths:
        path.chmod(0o644)
    return paths


class TlsMosquitto(MosquittoBroker):
    """A broker whose only listener speaks TLS, plus a plain one for the test's own recorder."""

    tls_files: tuple[Path, Path, Path] = (Path(), Path(), Path())
    plain_port: int = 0

    def config_text(self) -> str:
        ca, cert, key = self.tls_files
        return (
            super().config_text()
            + f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
            + f"listener {self.plain_port} {self.host}\n"
        )


def test_tls_connection_delivers_the_spool(tmp_path: Path) -> None:
    from tests.support.net import free_port

    broker = TlsMosquitto(workdir=tmp_path / "mosquitto")
    broker.tls_files = _certificates(tmp_path)
    broker.plain_port = free_port()
    broker.start()
    try:
        recorder = Recorder(BrokerAddress(broker.host, broker.plain_port), FLEET, DEVICE)
        spool = Spool(tmp_path / "spool.db")
        seqs = _spool_events(spool, 3)
        link = _link(spool, f"mqtts://127.0.0.1:{broker.port}", ca_file=broker.tls_files[0])
        link.start()
        try:
            assert link.flush(20), "nothing was delivered over TLS:\n" + broker.log_path.read_text()[-2000:]
        finally:
            link.stop()
        received = recorder.wait_until(lambda ms: len(ms) >= len(seqs), 10, "the events sent over TLS")
        assert [m.seq for m in received] == seqs
        recorder.close()
    finally:
        broker.stop()


def test_tls_with_an_unknown_ca_never_connects(tmp_path: Path) -> None:
    from tests.support.net import free_port

    broker = TlsMosquitto(workdir=tmp_path / "mosquitto")
    broker.tls_files = _certificates(tmp_path)
    broker.plain_port = free_port()
    (tmp_path / "other").mkdir()
    other_ca = _certificates(tmp_path / "other")[0]  # a CA the broker's certificate does not chain to
    broker.start()
    try:
        spool = Spool(tmp_path / "spool.db")
        _spool_events(spool, 1)
        link = _link(spool, f"mqtts://127.0.0.1:{broker.port}", ca_file=other_ca)
        link.start()
        try:
            deadline = time.monotonic() + 10
            while link.stats.connect_failures < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert link.stats.connect_failures >= 2 and link.stats.connects == 0
            assert spool.count == 1
        finally:
            link.stop()
    finally:
        broker.stop()
