"""``edgefleet server run``: check everything that can fail, then serve with uvicorn.

Start-up happens in an order that fails fast and clearly: the HTTP and MQTT addresses first (a
port in use names its option), then the trusted keys, then the database (reachable, migrated to
head), then the first admin token. Only then does uvicorn start, with the embedded broker in the
same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from fleet.errors import ConfigError, DatabaseUnavailable
from fleet.metrics import ServerMetrics
from fleet.registry.store import BundleStore
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
    return PreparedServer(context=context, http_socket=http_socket, upgrade=upgrade, admin=admin)


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
    try:
        config = uvicorn.Config(
            create_app(context),
            log_level=log_level,
            access_log=access_log,
            log_config=None,  # the CLI configured logging; uvicorn's loggers propagate to it
            lifespan="off",
            timeout_graceful_shutdown=5,
            server_header=False,
        )
        await _GracefulServer(config).serve(sockets=[prepared.http_socket])
    finally:
        await broker.stop()
        prepared.close()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
