"""Prometheus metrics for ``/metrics``: HTTP traffic, bundle pushes, auth failures, registry sizes,
the MQTT ingest and drift analysis.

Each app has its own ``CollectorRegistry`` (several apps in one test process must not collide).
Registry sizes are read from the database at scrape time, so they are never stale; the latest
drift scores are held by ``DriftScores`` and replaced by every evaluation of the monitor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet.db.models import ApiToken, Bundle, Device
from fleet.db.session import Database

log = logging.getLogger(__name__)


class ServerMetrics:
    def __init__(self, database: Database | None = None) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "edgefleet_http_requests_total",
            "HTTP requests served, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "edgefleet_http_request_duration_seconds",
            "Time to serve an HTTP request, by route template.",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.bundle_pushes = Counter(
            "edgefleet_bundle_pushes_total",
            "Bundle pushes by outcome: created, unchanged, refused (verification) or conflict.",
            ["outcome"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "edgefleet_auth_failures_total",
            "Requests refused by authentication (401) or authorization (403).",
            ["reason"],
            registry=self.registry,
        )
        self.ingest = IngestMetrics(self.registry)
        self.drift = DriftMetrics(self.registry)
        if database is not None:
            self.registry.register(RegistrySizeCollector(database))


class IngestMetrics:
    """What the MQTT ingest did with every message, by channel; drops by channel and reason."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "edgefleet_ingest_messages_total",
            "MQTT messages by channel and outcome: stored, duplicate (a replayed seq) or dropped.",
            ["channel", "outcome"],
            registry=registry,
        )
        self.dropped = Counter(
            "edgefleet_ingest_dropped_total",
            "MQTT messages dropped by channel and reason (bad_topic, oversized, malformed, schema, "
            "identity, fleet_mismatch, unknown_device, enrollment_refused, store_failed).",
            ["channel", "reason"],
            registry=registry,
        )
        self.batches = Histogram(
            "edgefleet_ingest_batch_seconds",
            "Time to decode and write one batch of MQTT messages to the database.",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.batch_size = Histogram(
            "edgefleet_ingest_batch_messages",
            "Messages per database batch.",
            registry=registry,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
        )
        self.store_retries = Counter(
            "edgefleet_ingest_store_retries_total",
            "Database batches retried after an error (the database was down or busy).",
            registry=registry,
        )
        self.connects = Counter(
            "edgefleet_ingest_connects_total", "Successful connections to the MQTT broker.", registry=registry
        )
        self.connected = Gauge(
            "edgefleet_ingest_connected", "1 while the ingest is connected to the broker.", registry=registry
        )
        self.queue_depth = Gauge(
            "edgefleet_ingest_queue_depth",
            "Messages received and waiting to be written.",
            registry=registry,
        )
        self.enrollments = Counter(
            "edgefleet_ingest_enrollments_total",
            "Devices registered by their first birth message with an enrollment token.",
            registry=registry,
        )

    def drop(self, channel: str, reason: str, count: int = 1) -> None:
        self.dropped.labels(channel, reason).inc(count)
        self.messages.labels(channel, "dropped").inc(count)


class DriftMetrics:
    """Drift evaluations, alerts, webhook deliveries, and the latest score per feature."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.evaluations = Counter(
            "edgefleet_drift_evaluations_total", "Drift monitor evaluations run.", registry=registry
        )
        self.alerts = Counter(
            "edgefleet_drift_alerts_total",
            "Drift alerts by event: opened (a feature crossed its alert threshold) or resolved.",
            ["event"],
            registry=registry,
        )
        self.webhook = Counter(
            "edgefleet_drift_webhook_deliveries_total",
            "Alert webhook deliveries by outcome: delivered, retried, failed (gave up), "
            "dropped (queue full).",
            ["outcome"],
            registry=registry,
        )
        self.scores = DriftScores()
        registry.register(self.scores)


class DriftScores(Collector):
    """``edgefleet_drift_score{model,version,cohort,feature,metric}`` from the monitor's latest pass.

    Replaced as a whole by each evaluation, so a model version that stopped reporting drops out
    instead of freezing at its last value.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scores: list[tuple[tuple[str, str, str, str, str], float]] = []
        self._levels: list[tuple[tuple[str, str, str, str], float]] = []

    def replace(
        self,
        scores: Iterable[tuple[tuple[str, str, str, str, str], float]],
        levels: Iterable[tuple[tuple[str, str, str, str], float]],
    ) -> None:
        scores, levels = list(scores), list(levels)
        with self._lock:
            self._scores, self._levels = scores, levels

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            scores, levels = list(self._scores), list(self._levels)
        family = GaugeMetricFamily(
            "edgefleet_drift_score",
            "Latest drift distance per model version, cohort (against the bundle's reference), "
            "feature and metric.",
            labels=["model", "version", "cohort", "feature", "metric"],
        )
        for labels, value in scores:
            family.add_metric(list(labels), value)
        yield family
        level = GaugeMetricFamily(
            "edgefleet_drift_level",
            "Latest drift level per feature: -1 too few samples, 0 ok, 1 warn, 2 alert.",
            labels=["model", "version", "cohort", "feature"],
        )
        for level_labels, value in levels:
            level.add_metric(list(level_labels), value)
        yield level


class RegistrySizeCollector(Collector):
    """Gauges computed from the database when Prometheus scrapes."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; no registration-time query

    def collect(self) -> Iterator[Metric]:
        try:
            with self.database.session() as session:
                online = dict(
                    session.execute(select(Device.online, func.count()).group_by(Device.online))
                    .tuples()
                    .all()
                )
                bundles = session.scalar(select(func.count()).select_from(Bundle)) or 0
                model_names = session.scalar(select(func.count(func.distinct(Bundle.name)))) or 0
                tokens = dict(
                    session.execute(
                        select(ApiToken.role, func.count())
                        .where(ApiToken.revoked_at.is_(None))
                        .group_by(ApiToken.role)
                    )
                    .tuples()
                    .all()
                )
        except Exception as exc:  # a scrape must not fail because the database is down
            log.warning("registry sizes unavailable for /metrics: %s", exc)
            return
        devices = GaugeMetricFamily("edgefleet_devices", "Registered devices by state.", labels=["state"])
        devices.add_metric(["online"], online.get(True, 0))
        devices.add_metric(["offline"], online.get(False, 0))
        yield devices
        yield GaugeMetricFamily("edgefleet_bundles", "Bundles in the model registry.", value=bundles)
        yield GaugeMetricFamily(
            "edgefleet_models", "Distinct model names in the registry.", value=model_names
        )
        token_gauge = GaugeMetricFamily("edgefleet_api_tokens", "Active API tokens by role.", labels=["role"])
        for role in ("admin", "operator", "viewer"):
            token_gauge.add_metric([role], tokens.get(role, 0))
        yield token_gauge


class MetricsMiddleware:
    """Counts every HTTP request by its route *template* (``/api/v1/devices/{device_id}``), so
    device ids and hashes never become label values."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = _route_template(scope)
            self.metrics.http_requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.http_duration.labels(route).observe(time.perf_counter() - started)


def _route_template(scope: dict[str, Any] | Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
