"""Prometheus metrics for ``/metrics``: HTTP traffic, bundle pushes, auth failures, registry sizes.

Each app has its own ``CollectorRegistry`` (several apps in one test process must not collide);
the MQTT ingest and drift analysis register their counters on ``ServerMetrics.registry`` too.
Registry sizes are read from the database at scrape time, so they are never stale.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
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
        if database is not None:
            self.registry.register(RegistrySizeCollector(database))


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
