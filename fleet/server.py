"""``edgefleet server run``: check everything that can fail, then serve with uvicorn.

Start-up happens in an order that fails fast and clearly: the HTTP and MQTT addresses first (a
port in use names its option), then the trusted keys, then the database (reachable, migrated to
head), then the first admin token. Only then does uvicorn start, with the embedded broker in the
same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fleet.broker import bind_listener, check_bindable, make_broker, mqtt_port_in_use
from fleet.config import EmbeddedBrokerSettings, ServerConfig
from fleet.context import ServerContext
from fleet.db.migrations import Upgrade, upgrade_to_head
from fleet.db.session import Database
from fleet.drift.monitor import DriftMonitor
from fleet.drift.references import ReferenceCatalog
from fleet.drift.service import DriftService
from fleet.drift.webhook import WebhookNotifier
from fleet.errors import ConfigError, DatabaseUnavailable
from fleet.ingest.consumer import BrokerEndpoint, MqttIngest
from fleet.ingest.writer import BatchWriter
from fleet.metrics import ServerMetrics
from fleet.registry.store import BundleStore
from fleet.rollouts.runtime import start_rollouts, stop_rollouts
from fleet.tokens import AdminBootstrap, ensure_admin_token

log = logging.getLogger(__name__)


class _GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which would kill the process
    before the broker and the database are closed; here the graceful shutdown is the end."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


@dataclass
class PreparedServer:
    context: ServerContext
    http_socket: socket.socket
    upgrade: Upgrade
    admin: AdminBootstrap

    def close(self) -> None:
        self.http_socket.close()
        self.context.db.dispose()


def prepare_server(config: ServerConfig) -> PreparedServer:
    """Everything before serving; raises FleetError subclasses with a message and a hint."""
    http_socket = bind_listener(config.http, option="--http")
    database: Database | None = None
    try:
        if isinstance(config.broker, EmbeddedBrokerSettings):
            try:
                check_bindable(config.broker.listen)
            except OSError as exc:
                raise mqtt_port_in_use(config.broker.listen, exc.strerror or "unavailable") from exc
        trusted = load_trusted_keys(config)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        store = BundleStore(config.bundles_dir, config.upload_dir)
        store.prepare()
        database = Database(config.db_url)
        upgrade = migrate(database)
        with database.session() as session:
            admin = ensure_admin_token(
                session, default_path=config.admin_token_path, token_file=config.admin_token_file
            )
    except BaseException:
        http_socket.close()
        if database is not None:
            database.dispose()
        raise
    context = ServerContext(
        config=config, db=database, store=store, trusted_keys=trusted, metrics=ServerMetrics(database)
    )
    context.drift = build_drift_service(context)
    return PreparedServer(context=context, http_socket=http_socket, upgrade=upgrade, admin=admin)


def build_drift_service(context: ServerContext) -> DriftService:
    settings = context.config.drift
    webhook = (
        WebhookNotifier(
            settings.webhook_url,
            context.metrics.drift,
            timeout_s=settings.webhook_timeout_s,
            attempts=settings.webhook_attempts,
        )
        if settings.webhook_url
        else None
    )
    return DriftService(
        context.db, ReferenceCatalog(context.store), settings, context.metrics.drift, webhook=webhook
    )


def start_background(context: ServerContext) -> None:
    """The drift monitor, the webhook and the MQTT ingest: threads that live as long as the server."""
    drift = context.drift
    settings = context.config
    if drift is not None:
        if drift.webhook is not None:
            drift.webhook.start()
        context.drift_monitor = DriftMonitor(
            drift,
            interval_s=settings.drift.interval_s,
            debounce_s=settings.drift.debounce_s,
            min_gap_s=settings.drift.min_gap_s,
        )
        context.drift_monitor.start()
    if settings.ingest is not None:
        monitor = context.drift_monitor
        writer = BatchWriter(
            context.db, context.metrics.ingest, on_drift=monitor.nudge if monitor is not None else None
        )
        context.ingest = MqttIngest(
            settings.ingest, BrokerEndpoint.of(settings.broker), writer, context.metrics.ingest
        )
        context.ingest.start()
    start_rollouts(context)  # the rollout controller and the desired-state publisher


def stop_background(context: ServerContext) -> None:
    """In order: stop receiving and write what was received, then the monitor, then the webhook."""
    stop_rollouts(context)  # first: no rollout decision while the rest shuts down
    if context.ingest is not None:
        context.ingest.stop()
        context.ingest = None
    if context.drift_monitor is not None:
        context.drift_monitor.stop()
        context.drift_monitor = None
    if context.drift is not None and context.drift.webhook is not None:
        context.drift.webhook.stop()


def load_trusted_keys(config: ServerConfig) -> list[Ed25519PublicKey]:
    from models.bundle import BundleError, load_trusted_keys

    if not config.trusted_key_paths:
        log.warning("no --trusted-key given: every bundle push will be refused as untrusted")
        return []
    try:
        return load_trusted_keys(config.trusted_key_paths)
    except BundleError as exc:
        raise ConfigError(f"--trusted-key: {exc.message}", hint=exc.hint) from exc


def migrate(database: Database) -> Upgrade:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        database.ping()
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(
            f"cannot reach the database {database.display_url}: {_first_line(exc)}",
            hint="is PostgreSQL running and the database created? check --db "
            "(e.g. postgresql+psycopg://user@127.0.0.1:5432/edgefleet)",
        ) from exc
    try:
        return upgrade_to_head(database.engine)
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(
            f"migrating {database.display_url} failed: {_first_line(exc)}",
            hint="the database may belong to another application or a newer edgefleet: use its own database",
        ) from exc


def serve(prepared: PreparedServer, *, log_level: str = "info", access_log: bool = True) -> None:
    """Run until SIGINT or SIGTERM; the embedded broker starts and stops with the API."""
    asyncio.run(_serve(prepared, log_level=log_level, access_log=access_log))


async def _serve(prepared: PreparedServer, *, log_level: str, access_log: bool) -> None:
    from fleet.app import create_app

    context = prepared.context
    broker = make_broker(context.config.broker)
    await broker.start()
    context.broker = broker
    app = create_app(context)
    # Everything imported and built so far lives as long as the process: keep it out of the
    # cyclic garbage collector's full passes, which the ingest's steady allocations would
    # otherwise trigger over and over (about a third of its CPU time per message).
    gc.freeze()
    start_background(context)
    try:
        config = uvicorn.Config(
            app,
            log_level=log_level,
            access_log=access_log,
            log_config=None,  # the CLI configured logging; uvicorn's loggers propagate to it
            lifespan="off",
            timeout_graceful_shutdown=5,
            server_header=False,
        )
        await _GracefulServer(config).serve(sockets=[prepared.http_socket])
    finally:
        # Off the event loop: the embedded broker runs on it and must see the ingest disconnect.
        await asyncio.to_thread(stop_background, context)
        await broker.stop()
        prepared.close()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
