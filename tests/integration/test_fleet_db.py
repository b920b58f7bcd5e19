"""The registry's database layer on SQLite and PostgreSQL: the migrated schema is the models'
schema, enrollment is one-time, filters combine, and the first admin token follows its rules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from fleet.auth import Role, hash_token
from fleet.db import ApiToken, AuditEntry, Base, Database, Device, EnrollmentToken, upgrade_to_head, utcnow
from fleet.devices.credentials import verify_mqtt_password
from fleet.devices.registry import (
    DeviceFilter,
    EnrollmentRefused,
    create_enrollment_token,
    export_mqtt_credentials,
    list_devices,
    provision_device,
    redeem_enrollment,
    update_tags,
)
from fleet.errors import ConfigError, Conflict, Invalid
from fleet.tokens import authenticate, create_api_token, ensure_admin_token, revoke_token
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with ExitStack() as stack:
        url = (
            stack.enter_context(fresh_database())
            if request.param == "postgresql"
            else f"sqlite:///{tmp_path}/f.db"
        )
        db = Database(url)
        stack.callback(db.dispose)
        upgrade_to_head(db.engine)
        yield db


def test_migrations_create_exactly_the_models_schema(database: Database) -> None:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    assert upgrade_to_head(database.engine).applied is False  # idempotent


def test_enrollment_registers_a_device_once(database: Database) -> None:
    with database.session() as session:
        row, token = create_enrollment_token(
            session, fleet="plant-7", profile="raspberry-pi-5", tags={"site": "north"}, created_by="ops"
        )
        token_id = row.id
        assert row.token_hash == hash_token(token) and token not in str(row.__dict__)
    with database.session() as session:
        enrolled = redeem_enrollment(
            session, token, "cam-17", profile="raspberry-pi-5", agent_version="0.1.0"
        )
        assert enrolled.device.fleet == "plant-7"
        assert enrolled.device.tag_map == {"site": "north"}
        assert enrolled.device.enrollment == "enrolled"
        assert verify_mqtt_password(enrolled.mqtt_password, enrolled.device.mqtt_password_hash or "")
    with database.session() as session:
        used = session.get(EnrollmentToken, token_id)
        assert used is not None and used.used_by_device == "cam-17" and used.used_at is not None
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "device.enroll")).all()
        assert [(a.actor, a.target) for a in audit] == [("device:cam-17", "cam-17")]
        with pytest.raises(EnrollmentRefused, match="already used by device 'cam-17'"):
            redeem_enrollment(session, token, "cam-18")


def test_enrollment_refusals(database: Database) -> None:
    with database.session() as session:
        _, expired = create_enrollment_token(session, ttl=timedelta(seconds=1))
        _, for_pi = create_enrollment_token(session, profile="raspberry-pi-5")
        _, spare = create_enrollment_token(session)
        provision_device(session, "taken")
    later = utcnow() + timedelta(seconds=5)
    with database.session() as session:
        with pytest.raises(EnrollmentRefused, match="expired"):
            redeem_enrollment(session, expired, "cam-a", now=later)
        with pytest.raises(EnrollmentRefused, match="unknown"):
            redeem_enrollment(session, "efe_" + "n" * 43, "cam-a")
        with pytest.raises(EnrollmentRefused, match="profile 'raspberry-pi-5'"):
            redeem_enrollment(session, for_pi, "cam-a", profile="jetson-nano")
        with pytest.raises(EnrollmentRefused, match="already registered"):
            redeem_enrollment(session, spare, "taken")
        with pytest.raises(EnrollmentRefused, match="must be letters"):
            redeem_enrollment(session, spare, "bad/id")
    with database.session() as session:  # none of the refusals used the spare token up
        assert redeem_enrollment(session, spare, "cam-a").device.id == "cam-a"


def test_device_filters_combine(database: Database) -> None:
    with database.session() as session:
        provision_device(session, "a", profile="raspberry-pi-5", tags={"site": "lab", "line": "1"})
        provision_device(session, "b", profile="raspberry-pi-5", tags={"site": "lab", "line": "2"})
        provision_device(session, "c", profile="jetson-nano", tags={"site": "field"}, fleet="east")
        with pytest.raises(Conflict):
            provision_device(session, "a")
    with database.session() as session:
        session.get_one(Device, "b").online = True

    def ids(**where: object) -> list[str]:
        with database.session() as session:
            return [d.id for d in list_devices(session, DeviceFilter(**where))]  # type: ignore[arg-type]

    assert ids() == ["a", "b", "c"]  # by fleet, then id
    assert ids(tags={"site": "lab"}) == ["a", "b"]
    assert ids(tags={"site": "lab", "line": "2"}) == ["b"]
    assert ids(profile="raspberry-pi-5", online=False) == ["a"]
    assert ids(online=True) == ["b"]
    assert ids(fleet="east") == ["c"]
    assert ids(tags={"site": "nowhere"}) == []


def test_tag_updates_set_and_remove(database: Database) -> None:
    with database.session() as session:
        provision_device(session, "t", tags={"a": "1", "b": "2"})
    with database.session() as session:
        assert update_tags(session, "t", set_tags={"b": "3", "c": "4"}, remove=["a", "missing"]).tag_map == {
            "b": "3",
            "c": "4",
        }
    with database.session() as session, pytest.raises(Invalid, match="tag key"):
        update_tags(session, "t", set_tags={"bad key": "x"})


def test_credentials_export_keeps_the_server_password_once(database: Database) -> None:
    with database.session() as session:
        _, password = provision_device(session, "dev-1", fleet="f")
        first = export_mqtt_credentials(session, server_username="edgefleet-server")
    assert first.server_password is not None and first.devices == 1
    assert "user dev-1\ntopic write edgefleet/v1/f/dev-1/status" in first.acl_file
    lines = dict(line.split(":", 1) for line in first.password_file.splitlines())
    assert verify_mqtt_password(password, lines["dev-1"])
    assert verify_mqtt_password(first.server_password, lines["edgefleet-server"])
    with database.session() as session:
        second = export_mqtt_credentials(session, server_username="edgefleet-server")
        rotated = export_mqtt_credentials(
            session, server_username="edgefleet-server", rotate_server_password=True
        )
    assert second.server_password is None  # not shown again, and the same hash is kept
    assert (
        dict(line.split(":", 1) for line in second.password_file.splitlines())["edgefleet-server"]
        == lines["edgefleet-server"]
    )
    assert rotated.server_password not in (None, first.server_password)


def test_first_admin_token_rules(database: Database, tmp_path: Path) -> None:
    default = tmp_path / "data" / "admin.token"
    with database.session() as session:
        made = ensure_admin_token(session, default_path=default, token_file=None)
    assert made.action == "created" and default.stat().st_mode & 0o777 == 0o600
    token = default.read_text().strip()
    with database.session() as session:
        principal = authenticate(session, token)
        assert principal is not None and principal.role is Role.ADMIN
        assert ensure_admin_token(session, default_path=default, token_file=None).action == "none"
        assert session.scalar(select(ApiToken.token_hash).where(ApiToken.name == "admin")) == hash_token(
            token
        )

    given = tmp_path / "given.token"
    given.write_text("x" * 40)
    with database.session() as session:
        assert ensure_admin_token(session, default_path=default, token_file=given).action == "registered"
        assert ensure_admin_token(session, default_path=default, token_file=given).action == "none"
        revoke_token(session, "admin-2")
    with database.session() as session, pytest.raises(ConfigError, match="revoked"):
        ensure_admin_token(session, default_path=default, token_file=given)
    short = tmp_path / "short.token"
    short.write_text("tooshort")
    with database.session() as session, pytest.raises(ConfigError, match="32"):
        ensure_admin_token(session, default_path=default, token_file=short)
    with database.session() as session:
        _, viewer = create_api_token(session, name="v", role=Role.VIEWER, created_by="t")
        assert authenticate(session, viewer) is not None
        revoke_token(session, "v")
        assert authenticate(session, viewer) is None
