"""Starting `edgefleet server run`: migrations on start, the first admin token, and the errors an
operator meets when a port is taken or the database is unreachable."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text

from fleet.db.migrations import head_revision
from tests.support.fleet_process import FleetServer
from tests.support.mosquitto import MosquittoBroker
from tests.support.net import free_port
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with ExitStack() as stack:
        if request.param == "postgresql":
            yield stack.enter_context(fresh_database())
        else:
            yield f"sqlite:///{tmp_path / 'explicit.db'}"


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    """A port somebody else already listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if "alembic_version" not in inspect(connection).get_table_names():
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    finally:
        engine.dispose()


def test_migrations_run_on_start_and_data_survives_a_restart(db_url: str, tmp_path: Path) -> None:
    assert _revision(db_url) is None
    server = FleetServer(tmp_path / "server", db_url=db_url).start()
    try:
        assert _revision(db_url) == head_revision()
        admin_token_file = server.data_dir / "admin.token"
        assert admin_token_file.stat().st_mode & 0o777 == 0o600
        token = server.admin_token
        with server.client(token) as api:
            assert api.post("/api/v1/devices", json={"id": "survivor"}).status_code == 201
    finally:
        assert server.stop() == 0  # SIGTERM is a clean shutdown
    migrations_logged = server.log().count("migrated from")
    assert migrations_logged >= 1

    again = FleetServer(tmp_path / "server", db_url=db_url).start()
    try:
        assert _revision(db_url) == head_revision()
        assert again.admin_token == token  # an admin exists: no new token is made
        with again.client(token) as api:
            assert [d["id"] for d in api.get("/api/v1/devices").json()] == ["survivor"]
    finally:
        again.stop()
    assert again.log().count("migrated from") == migrations_logged  # nothing left to migrate


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    server = FleetServer(tmp_path).start()
    try:
        assert (server.data_dir / "fleet.db").is_file()
        assert _revision(f"sqlite:///{server.data_dir / 'fleet.db'}") == head_revision()
        ready = httpx.get(f"{server.url}/readyz").json()
        assert ready["ready"] is True
        broker = next(c for c in ready["checks"] if c["name"] == "broker")
        assert f"127.0.0.1:{server.mqtt_port}" in broker["detail"]
    finally:
        server.stop()


def test_embedded_broker_port_in_use_names_both_options(
    tmp_path: Path, listening_socket: socket.socket
) -> None:
    port = listening_socket.getsockname()[1]
    server = FleetServer(tmp_path, mqtt_port=port)
    server.launch()
    assert server.wait() == 1
    log = server.log()
    assert f"127.0.0.1:{port}" in log and "already in use" in log
    assert "--mqtt-listen" in log and "--mqtt mqtt://" in log
    assert "Traceback" not in log
    assert not (server.data_dir / "fleet.db").exists()  # it failed before touching the database


def test_http_port_in_use_names_the_option(tmp_path: Path, listening_socket: socket.socket) -> None:
    server = FleetServer(tmp_path, http_port=listening_socket.getsockname()[1])
    server.launch()
    assert server.wait() == 1
    assert "--http" in server.log() and "already in use" in server.log()
    assert "Traceback" not in server.log()


def test_unreachable_database_says_what_to_check(tmp_path: Path) -> None:
    server = FleetServer(tmp_path, db_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere")
    server.launch()
    assert server.wait() == 1
    log = server.log()
    assert "cannot reach the database postgresql+psycopg://postgres@127.0.0.1" in log
    assert "--db" in log and "Traceback" not in log


def test_admin_token_file_is_used_instead_of_writing_one(tmp_path: Path) -> None:
    token_file = tmp_path / "secrets" / "admin"
    token_file.parent.mkdir()
    token = "eft_" + "k" * 40
    token_file.write_text(token + "\n")
    server = FleetServer(tmp_path / "server", extra_args=("--admin-token-file", str(token_file))).start()
    try:
        with server.client(token) as api:
            assert api.get("/api/v1/whoami").json() == {"name": "admin", "role": "admin"}
        assert not (server.data_dir / "admin.token").exists()
    finally:
        server.stop()


def test_external_broker_is_checked_for_readiness(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    server = FleetServer(tmp_path, mqtt_url=mosquitto.url).start()
    try:
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        mosquitto.stop()
        down = httpx.get(f"{server.url}/readyz")
        assert down.status_code == 503
        broker = next(c for c in down.json()["checks"] if c["name"] == "broker")
        assert broker["ok"] is False and str(mosquitto.port) in broker["detail"]
    finally:
        server.stop()
