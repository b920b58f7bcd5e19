"""The drift service over a real database, bundle store and webhook receiver, with time under control.

Windows go in through the ingest's own ``BatchWriter`` (no broker needed), with the window times
the test chooses, so an alert can be opened, kept, and resolved once the drifted windows leave the
lookback. The webhook receiver is a real HTTP server that refuses its first delivery.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import select

from fleet.config import DriftSettings
from fleet.db.migrations import upgrade_to_head
from fleet.db.models import Alert, AuditEntry
from fleet.db.session import Database
from fleet.devices.registry import provision_device
from fleet.drift.alerts import AlertChanges, sync_alerts
from fleet.drift.analysis import DriftReport, FeatureComparison
from fleet.drift.references import ReferenceCatalog
from fleet.drift.service import DriftService
from fleet.drift.thresholds import Breach, Level
from fleet.drift.webhook import WebhookNotifier
from fleet.ingest.decode import Message
from fleet.ingest.writer import BatchWriter
from fleet.metrics import ServerMetrics
from fleet.registry.catalog import register_bundle
from fleet.registry.store import BundleStore
from models.bundle import verify_bundle
from models.mqtt_contract import Channel, DriftPayload, encode, topic
from models.stats import DriftWindow
from tests.support.postgres import fresh_database
from tests.support.sim_devices import DigitsScenario, wait_until

pytestmark = pytest.mark.integration

MODEL = "digits-svc"
T0 = datetime.now(UTC).replace(microsecond=0)


class Receiver(BaseHTTPRequestHandler):
    events: ClassVar[list[dict[str, Any]]] = []
    failures_left: ClassVar[int] = 1

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if Receiver.failures_left > 0:
            Receiver.failures_left -= 1
            self.send_response(503)
        else:
            Receiver.events.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.events, Receiver.failures_left = [], 1
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'fleet.db'}")
        upgrade_to_head(db.engine)
        yield db
        db.dispose()
        return
    with fresh_database() as url:
        db = Database(url)
        upgrade_to_head(db.engine)
        yield db
        db.dispose()


@pytest.fixture(scope="module")
def scenario() -> DigitsScenario:
    return DigitsScenario.build()


def setup_service(
    database: Database, tmp_path: Path, scenario: DigitsScenario, webhook_url: str
) -> tuple[DriftService, BatchWriter, ServerMetrics]:
    store = BundleStore(tmp_path / "bundles", tmp_path / "uploads")
    store.prepare()
    built = scenario.bundle(tmp_path / "built", MODEL, "1.0.0")
    verified = verify_bundle(built.path, [built.public_key])
    shutil.copy(built.path, store.path_for(verified.sha256))
    metrics = ServerMetrics(database)
    with database.session() as session:
        register_bundle(session, verified, uploaded_by="test")
        for device_id in ("svc-a", "svc-b"):
            provision_device(session, device_id, profile="generic-x86")
    settings = DriftSettings(lookback_s=3600, webhook_url=webhook_url)
    webhook = WebhookNotifier(webhook_url, metrics.drift, backoff_min_s=0.05)
    webhook.start()
    service = DriftService(database, ReferenceCatalog(store), settings, metrics.drift, webhook=webhook)
    return service, BatchWriter(database, metrics.ingest), metrics


def send(
    writer: BatchWriter, device_id: str, windows: list[DriftWindow], end: datetime, first_seq: int
) -> None:
    messages = []
    for offset, window in enumerate(windows):
        payload = DriftPayload(
            device_id=device_id,
            seq=first_seq + offset,
            model=MODEL,
            version="1.0.0",
            window_start=end - timedelta(minutes=1),
            window_end=end,
            window=window.to_dict(),
        )
        messages.append(Message(topic("default", device_id, Channel.DRIFT), encode(payload), end))
    result = writer.write(messages)
    assert sum(result.stored.values()) == len(windows), result


def test_an_alert_opens_once_is_audited_posted_and_resolves(
    database: Database, tmp_path: Path, scenario: DigitsScenario, receiver: str
) -> None:
    service, writer, metrics = setup_service(database, tmp_path, scenario, receiver)
    try:
        send(writer, "svc-a", scenario.windows(scenario.images("bright", 1)), T0, 1)
        send(writer, "svc-b", scenario.windows(scenario.images("bright", 2)), T0, 1)

        first = service.evaluate(now=T0 + timedelta(minutes=5))
        opened = {a.feature for a in first.changes.opened if a.cohort == "all"}
        assert "input/channel_mean[0]" in opened and "logits/class" not in opened
        assert {a.cohort for a in first.changes.opened} == {"all", "profile:generic-x86"}

        second = service.evaluate(now=T0 + timedelta(minutes=6))
        assert second.changes.opened == [] and len(second.changes.updated) == len(first.changes.opened)

        # An hour of plain traffic later, the bright windows have left the lookback.
        later = T0 + timedelta(hours=2)
        send(writer, "svc-a", scenario.windows(scenario.images("eval", 3)), later, 100)
        send(writer, "svc-b", scenario.windows(scenario.images("eval", 4)), later, 100)
        third = service.evaluate(now=later + timedelta(minutes=1))
        assert {a.id for a in third.changes.resolved} == {a.id for a in first.changes.opened}
        assert third.changes.opened == []

        with database.session() as session:
            rows = session.scalars(select(Alert).where(Alert.model_name == MODEL)).all()
            actions = [
                e.action
                for e in session.scalars(select(AuditEntry).where(AuditEntry.actor == "system:drift"))
            ]
        assert len(rows) == len(first.changes.opened) and all(r.resolved_at is not None for r in rows)
        assert actions.count("drift.alert") == len(rows) and actions.count("drift.resolve") == len(rows)

        expected = 2 * len(rows)
        wait_until(lambda: len(Receiver.events) == expected, what=f"{expected} webhook deliveries")
        kinds = [e["event"] for e in Receiver.events]
        assert kinds.count("drift.alert.opened") == kinds.count("drift.alert.resolved") == len(rows)
        channel_mean = next(
            e
            for e in Receiver.events
            if e["alert"]["feature"] == "input/channel_mean[0]" and e["alert"]["cohort"] == "all"
        )
        assert channel_mean["alert"]["model"] == MODEL and channel_mean["alert"]["scores"]["psi"] > 0.25
        registry = metrics.registry
        assert (
            registry.get_sample_value("edgefleet_drift_webhook_deliveries_total", {"outcome": "retried"})
            == 1.0
        )
        assert registry.get_sample_value("edgefleet_drift_alerts_total", {"event": "resolved"}) == len(rows)
    finally:
        if service.webhook is not None:
            service.webhook.stop()


def test_windows_of_unknown_bins_are_reported_not_judged(
    database: Database, tmp_path: Path, scenario: DigitsScenario, receiver: str
) -> None:
    service, writer, _ = setup_service(database, tmp_path, scenario, receiver)
    try:
        stray = [
            DriftWindow.from_dict({**w.to_dict(), "reference": "0123456789abcdef"})
            for w in scenario.windows(scenario.images("bright", 5))
        ]
        send(writer, "svc-a", stray, T0, 1)
        with database.session() as session:
            (report,) = service.reports(
                session, since=T0 - timedelta(hours=1), until=T0 + timedelta(hours=1), model=MODEL
            )
        assert report.features == () and report.note is not None and "push the bundle" in report.note
        assert service.evaluate(now=T0 + timedelta(minutes=1)).changes.opened == []
    finally:
        if service.webhook is not None:
            service.webhook.stop()


# --- alerts per reference: one version, two bundles (hardware profiles) in one cohort ----------------


def drift_report(reference: str, level: Level) -> DriftReport:
    """A report against the bundle whose bins have fingerprint ``reference``: one feature at ``level``."""
    value = 0.4 if level is Level.ALERT else 0.01
    breaches = (Breach("psi", value, 0.25, Level.ALERT),) if level is Level.ALERT else ()
    feature = FeatureComparison(
        feature="input/channel_mean[0]",
        tensor="input",
        kind="input",
        samples=500,
        baseline_samples=500,
        psi=value,
        js=None,
        wasserstein=None,
        level=level,
        breaches=breaches,
    )
    return DriftReport(
        model=MODEL,
        version="1.0.0",
        cohort="all",
        against="reference",
        reference=reference,
        since=T0 - timedelta(hours=1),
        until=T0,
        devices=1,
        windows=1,
        samples=500,
        baseline_devices=None,
        baseline_windows=None,
        baseline_samples=500,
        features=(feature,),
    )


def test_a_clean_report_leaves_another_references_alert_open(database: Database) -> None:
    drifting, clean = (
        drift_report("aaaa000000000000", Level.ALERT),
        drift_report("bbbb000000000000", Level.OK),
    )
    with database.session() as session:
        (alert,) = sync_alerts(session, drifting, T0).opened
        # Same model, version, cohort and baseline, other bundle: nothing of its own to resolve.
        assert sync_alerts(session, clean, T0) == AlertChanges()
        assert alert.resolved_at is None and alert.details["reference"] == "aaaa000000000000"
        # The drifting bundle's next report updates its alert; the clean one still touches nothing.
        assert sync_alerts(session, drifting, T0 + timedelta(minutes=1)).updated == [alert]
        assert sync_alerts(session, clean, T0 + timedelta(minutes=1)) == AlertChanges()
        assert sync_alerts(
            session, drift_report("aaaa000000000000", Level.OK), T0 + timedelta(minutes=2)
        ).resolved == [alert]


def test_an_alert_stored_without_its_reference_can_still_resolve(database: Database) -> None:
    with database.session() as session:
        (alert,) = sync_alerts(session, drift_report("aaaa000000000000", Level.ALERT), T0).opened
        alert.details = {k: v for k, v in alert.details.items() if k != "reference"}
        session.flush()
        session.expire_all()  # read the row back as stored, as a later evaluation would
        changes = sync_alerts(session, drift_report("bbbb000000000000", Level.OK), T0)
        assert changes.resolved == [alert] and alert.resolved_at is not None
