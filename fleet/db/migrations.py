"""Alembic, driven from code: the server migrates its database to head on every start.

On PostgreSQL the upgrade runs under a transaction-scoped advisory lock, so replicas that start
together migrate one after the other instead of racing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"
# An arbitrary, fixed 64-bit key: "edgefleet migrate".
_MIGRATION_LOCK_KEY = 0x6564_6765_6D69_6772

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrationState:
    current: str | None
    head: str

    @property
    def at_head(self) -> bool:
        return self.current == self.head


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError(f"no Alembic migrations found in {ALEMBIC_DIR}")
    return head


def migration_state(engine: Engine) -> MigrationState:
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return MigrationState(current=current, head=head_revision())


@dataclass(frozen=True)
class Upgrade:
    before: str | None
    after: str | None

    @property
    def applied(self) -> bool:
        return self.before != self.after


def upgrade_to_head(engine: Engine) -> Upgrade:
    """Apply every pending migration; say which revision the database was at before and after."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        before = MigrationContext.configure(connection).get_current_revision()
        command.upgrade(alembic_config(connection), "head")
    upgrade = Upgrade(before=before, after=migration_state(engine).current)
    if upgrade.applied:
        log.info("database migrated from %s to %s", before or "empty", upgrade.after)
    return upgrade
