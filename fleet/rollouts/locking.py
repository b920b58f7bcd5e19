"""One writer per rollout at a time: across replicas a PostgreSQL advisory lock, in a process a mutex.

Every change to a rollout (a controller step, an operator's pause, abort, resume or promote)
runs in one transaction that first takes the rollout's transaction-scoped advisory lock on
PostgreSQL, so two replicas never advance the same rollout at once, and the lock goes away with
the transaction even when a replica dies. On SQLite the server is one process (SQLite does not
serve several); the process-wide mutex keeps the controller's thread and the API's threads apart.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fleet.db.session import Database

# An arbitrary, fixed 32-bit class for the two-key advisory lock: "efro" (edgefleet rollouts).
LOCK_CLASS = 0x6566_726F
_PROCESS_LOCK = threading.RLock()


def lock_key(rollout_id: str) -> int:
    """The rollout's 32-bit lock key (signed, as PostgreSQL's int4 wants it)."""
    value = zlib.crc32(rollout_id.encode("utf-8"))
    return value - (1 << 32) if value >= 1 << 31 else value


def acquire(session: Session, rollout_id: str, *, wait: bool) -> bool:
    """Take the rollout's advisory lock for this transaction (always True on SQLite)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    lock = func.pg_advisory_xact_lock if wait else func.pg_try_advisory_xact_lock
    result = session.execute(select(lock(LOCK_CLASS, lock_key(rollout_id)))).scalar()
    return True if wait else bool(result)


@contextmanager
def rollout_session(database: Database, rollout_id: str, *, wait: bool) -> Iterator[Session | None]:
    """A session holding the rollout's lock until it commits; None when ``wait`` is False and
    another replica holds it."""
    with _PROCESS_LOCK, database.session() as session:
        if not acquire(session, rollout_id, wait=wait):
            yield None
            return
        yield session
