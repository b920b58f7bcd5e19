"""The durable spool: every upward message gets its ``seq`` and is on disk before it is published.

One SQLite file under the agent's data directory. A message is written (numbered with the next
``seq``, which is persisted in the same transaction) before the MQTT link ever sees it, and
deleted only when the broker acknowledges it (PUBACK). So a message survives a broker outage, a
network outage, and the agent being killed (SIGKILL, OOM, power loss) at any instant, and ``seq``
never goes backwards or repeats across restarts.

Durability. The journal is WAL and ``synchronous`` is FULL by default: every commit is fsynced
before ``append`` returns. NORMAL would survive a crash of the agent process but could lose the
last commits on power loss, and with them the persisted ``seq`` counter: after the reboot the
agent would hand out a seq it had already published, and the server, which deduplicates on
(device, seq), would silently discard the new message. Telemetry writes a few messages a second
at most, so the fsync is cheap insurance (see ``bench/bench_telemetry.py`` for the rate).
Deletions are batched by the publisher, so acknowledging costs one commit per batch.

Space. ``max_bytes`` bounds the bytes the spool holds (payload + topic + a fixed per-row
overhead; the SQLite file itself is somewhat larger). When a new message would exceed it, the
spool drops whole messages in ``DROP_ORDER``: the oldest metrics first (the next ones say much
the same), then status, events, drift windows, and OTA transitions last. Every dropped seq is
counted per channel and listed (up to ``MAX_LISTED_DROPS``) until the telemetry reports it with
``claim_drops``, so the fleet can tell a dropped message from a lost one.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from models.mqtt_contract import Channel

SCHEMA_VERSION = 1
ROW_OVERHEAD_BYTES = 64
MAX_LISTED_DROPS = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

# Lowest first: the channel whose oldest message is dropped first when the spool is full.
DROP_ORDER: tuple[Channel, ...] = (
    Channel.METRICS,
    Channel.STATUS,
    Channel.EVENTS,
    Channel.DRIFT,
    Channel.OTA,
)
PRIORITY: dict[Channel, int] = {channel: rank for rank, channel in enumerate(DROP_ORDER)}

Synchronous = Literal["FULL", "NORMAL"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq      INTEGER PRIMARY KEY,
    channel  TEXT    NOT NULL,
    priority INTEGER NOT NULL,
    topic    TEXT    NOT NULL,
    payload  BLOB    NOT NULL,
    retain   INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    created  REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_priority ON messages (priority, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dropped (seq INTEGER PRIMARY KEY, channel TEXT NOT NULL);
"""
_NEXT_SEQ = "next_seq"
_WILL_SEQ = "will_seq"
_ANNOUNCED_WILL_SEQ = "announced_will_seq"
_DROPPED_PREFIX = "dropped:"
_UNLISTED = "dropped_unlisted"


class SpoolError(RuntimeError):
    """The spool file cannot be used; the message says what to do."""


@dataclass(frozen=True)
class SpooledMessage:
    seq: int
    channel: Channel
    topic: str
    payload: bytes
    retain: bool
    created: float


@dataclass(frozen=True)
class DropReport:
    """Messages dropped since the last report: counts per channel, and the dropped seqs (oldest first)."""

    counts: dict[str, int] = field(default_factory=dict)
    seqs: tuple[int, ...] = ()
    unlisted: int = 0
    """Dropped seqs beyond ``MAX_LISTED_DROPS`` that are counted but not listed."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def seq_ranges(self) -> list[tuple[int, int]]:
        """The listed seqs as inclusive ``(first, last)`` runs: compact on the wire."""
        return seq_ranges(self.seqs)


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


@dataclass
class _State:
    """What the spool mirrors in memory; a batch works on a copy and swaps it in on commit."""

    next_seq: int
    bytes_used: int
    count: int
    listed_drops: int


class SpoolBatch:
    """One transaction: appends, drop claims and the will seq commit (or roll back) together."""

    def __init__(self, spool: Spool, db: sqlite3.Connection, state: _State) -> None:
        self._spool = spool
        self._db = db
        self.state = state
        self.appended: list[int] = []

    def append(
        self, channel: Channel, topic: str, build: Callable[[int], bytes], *, retain: bool = False
    ) -> int:
        """Number the message with the next seq, store ``build(seq)``, and make room if needed.

        Returns the seq. A message bigger than the whole spool is dropped at once (and reported
        like any other drop) rather than emptying the spool for nothing.
        """
        seq = self.state.next_seq
        self.state.next_seq += 1
        self._db.execute("UPDATE counters SET value = ? WHERE name = ?", (self.state.next_seq, _NEXT_SEQ))
        payload = build(seq)
        size = len(payload) + len(topic.encode("utf-8")) + ROW_OVERHEAD_BYTES
        if size > self._spool.max_bytes:
            self._record_drop(seq, channel)
            return seq
        self._db.execute(
            "INSERT INTO messages (seq, channel, priority, topic, payload, retain, size, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, channel.value, PRIORITY[channel], topic, payload, int(retain), size, time.time()),
        )
        self.state.bytes_used += size
        self.state.count += 1
        self.appended.append(seq)
        self._make_room()
        return seq

    def claim_drops(self) -> DropReport:
        """Take the drops not reported yet (they are forgotten when this batch commits)."""
        report = _read_drops(self._db)
        self._db.execute(
            "UPDATE counters SET value = 0 WHERE name LIKE ? OR name = ?", (_DROPPED_PREFIX + "%", _UNLISTED)
        )
        self._db.execute("DELETE FROM dropped")
        self.state.listed_drops = 0
        return report

    def will_seq(self) -> int:
        """The seq the next connection's Last Will carries: reserved once, kept until a birth announces it."""
        current = _counter(self._db, _WILL_SEQ, default=-1)
        if current >= 0:
            return current
        seq = self.state.next_seq
        self.state.next_seq += 1
        self._db.execute("UPDATE counters SET value = ? WHERE name = ?", (self.state.next_seq, _NEXT_SEQ))
        _set_counter(self._db, _WILL_SEQ, seq)
        return seq

    def release_will_seq(self, seq: int) -> None:
        """The will seq was announced (in a birth): the next connection gets a fresh one."""
        if _counter(self._db, _WILL_SEQ, default=-1) == seq:
            self._db.execute("UPDATE counters SET value = -1 WHERE name = ?", (_WILL_SEQ,))
            _set_counter(self._db, _ANNOUNCED_WILL_SEQ, seq)

    def connection_will_seq(self) -> int:
        """The will seq of the connection that carries a status spooled now (``StatusPayload.will_seq``).

        While a connection is being made, or the broker is away, that is the will reserved for
        the next connection; once a birth announced it, the announced one. A status spooled after
        a connection was lost carries that connection's spent will: harmless, because the next
        connection's will is reserved later and so outranks the status by seq. Read in the
        status's own transaction, so a connection cannot slip in between.
        """
        pending = _counter(self._db, _WILL_SEQ, default=-1)
        if pending >= 0:
            return pending
        announced = _counter(self._db, _ANNOUNCED_WILL_SEQ, default=-1)
        return announced if announced >= 0 else self.will_seq()

    # --- internals ------------------------------------------------------------------------------

    def _make_room(self) -> None:
        limit = self._spool.max_bytes
        while self.state.bytes_used > limit:
            victims = self._db.execute(
                "SELECT seq, channel, size FROM messages ORDER BY priority, seq LIMIT 64"
            ).fetchall()
            if not victims:  # pragma: no cover - bytes_used > 0 implies rows
                break
            for seq, channel, size in victims:
                self._db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                self.state.bytes_used -= int(size)
                self.state.count -= 1
                self._record_drop(int(seq), Channel(channel))
                if self.state.bytes_used <= limit:
                    break

    def _record_drop(self, seq: int, channel: Channel) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1) "
            "ON CONFLICT(name) DO UPDATE SET value = value + 1",
            (_DROPPED_PREFIX + channel.value,),
        )
        if self.state.listed_drops < MAX_LISTED_DROPS:
            self._db.execute("INSERT INTO dropped (seq, channel) VALUES (?, ?)", (seq, channel.value))
            self.state.listed_drops += 1
        else:
            self._db.execute("UPDATE counters SET value = value + 1 WHERE name = ?", (_UNLISTED,))


class Spool:
    """The on-disk queue of numbered messages. Thread-safe: one connection behind one lock."""

    def __init__(
        self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, synchronous: Synchronous = "FULL"
    ) -> None:
        if max_bytes < 4096:
            raise ValueError(f"the spool needs at least 4096 bytes, got {max_bytes}")
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self._listeners: list[Callable[[], None]] = []
        self._db = _open(self.path, synchronous)
        self._state = self._load_state()

    # --- writing --------------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[SpoolBatch]:
        """A transaction (``BEGIN IMMEDIATE`` … ``COMMIT``, fsynced): all of it lands, or none."""
        with self._lock:
            state = _State(**vars(self._state))
            self._db.execute("BEGIN IMMEDIATE")
            batch = SpoolBatch(self, self._db, state)
            try:
                yield batch
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._state = state
        if batch.appended:
            for listener in list(self._listeners):
                listener()

    def append(
        self, channel: Channel, topic: str, build: Callable[[int], bytes], *, retain: bool = False
    ) -> int:
        """Store one message numbered with the next seq (see ``SpoolBatch.append``); returns the seq."""
        with self.batch() as batch:
            return batch.append(channel, topic, build, retain=retain)

    def will_seq(self) -> int:
        """The seq the next connection's Last Will carries: reserved once, kept until a birth announces it.

        Persisted, so a will seq reserved before a crash is reused rather than left as a gap that
        nothing explains.
        """
        with self.batch() as batch:
            return batch.will_seq()

    def delete(self, seqs: Iterable[int]) -> int:
        """Forget acknowledged messages (one transaction); returns how many were still there."""
        wanted = sorted(set(seqs))
        if not wanted:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed_bytes = removed = 0
                for chunk in _chunks(wanted, 500):
                    marks = ",".join("?" * len(chunk))
                    row = self._db.execute(
                        f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE seq IN ({marks})", chunk
                    ).fetchone()
                    self._db.execute(f"DELETE FROM messages WHERE seq IN ({marks})", chunk)
                    removed += int(row[0])
                    removed_bytes += int(row[1])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._state.count -= removed
            self._state.bytes_used -= removed_bytes
            return removed

    def discard(self, seqs: Iterable[int]) -> int:
        """Drop messages the broker refused (a PUBACK with a failure code): reported like overflow drops."""
        wanted = sorted(set(seqs))
        with self.batch() as batch:
            dropped = 0
            for seq in wanted:
                row = self._db.execute("SELECT channel, size FROM messages WHERE seq = ?", (seq,)).fetchone()
                if row is None:
                    continue
                self._db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                batch.state.bytes_used -= int(row[1])
                batch.state.count -= 1
                batch._record_drop(seq, Channel(row[0]))
                dropped += 1
            return dropped

    # --- reading --------------------------------------------------------------------------------

    def read_after(self, seq: int, limit: int) -> list[SpooledMessage]:
        """Up to ``limit`` messages with a seq above ``seq``, in seq order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, channel, topic, payload, retain, created FROM messages "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [
            SpooledMessage(int(s), Channel(c), str(t), bytes(p), bool(r), float(created))
            for s, c, t, p, r, created in rows
        ]

    def peek_drops(self) -> DropReport:
        """The drops not reported yet, without claiming them."""
        with self._lock:
            return _read_drops(self._db)

    @property
    def count(self) -> int:
        return self._state.count

    @property
    def bytes_used(self) -> int:
        return self._state.bytes_used

    @property
    def next_seq(self) -> int:
        return self._state.next_seq

    def oldest_age_s(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(created) FROM messages").fetchone()
        return None if row is None or row[0] is None else max(0.0, time.time() - float(row[0]))

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called (outside the lock) after every commit that appended a message."""
        self._listeners.append(listener)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- internals ------------------------------------------------------------------------------

    def _load_state(self) -> _State:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)", (_NEXT_SEQ,))
            self._db.execute("INSERT OR IGNORE INTO counters (name, value) VALUES (?, -1)", (_WILL_SEQ,))
            self._db.execute("INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)", (_UNLISTED,))
            stored = int(
                self._db.execute("SELECT value FROM counters WHERE name = ?", (_NEXT_SEQ,)).fetchone()[0]
            )
            count, size, top = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(seq), -1) FROM messages"
            ).fetchone()
            listed = int(self._db.execute("SELECT COUNT(*) FROM dropped").fetchone()[0])
            # The counter is written in the same transaction as every row, so it can only be
            # behind if the file was edited by hand; never hand out a seq that is in use.
            next_seq = max(stored, int(top) + 1)
            self._db.execute("UPDATE counters SET value = ? WHERE name = ?", (next_seq, _NEXT_SEQ))
            self._db.execute("COMMIT")
        return _State(next_seq=next_seq, bytes_used=int(size), count=int(count), listed_drops=listed)


def _counter(db: sqlite3.Connection, name: str, default: int = 0) -> int:
    row = db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    return default if row is None else int(row[0])


def _set_counter(db: sqlite3.Connection, name: str, value: int) -> None:
    db.execute(
        "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def _read_drops(db: sqlite3.Connection) -> DropReport:
    counts = {
        name.removeprefix(_DROPPED_PREFIX): int(value)
        for name, value in db.execute(
            "SELECT name, value FROM counters WHERE name LIKE ? AND value > 0 ORDER BY name",
            (_DROPPED_PREFIX + "%",),
        )
    }
    seqs = tuple(int(row[0]) for row in db.execute("SELECT seq FROM dropped ORDER BY seq"))
    return DropReport(counts=counts, seqs=seqs, unlisted=_counter(db, _UNLISTED))


def _open(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    except (OSError, sqlite3.Error) as exc:
        raise SpoolError(
            f"cannot open the spool {path}: {exc}; check that the data directory is writable"
        ) from exc
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SpoolError(
                f"the spool {path} cannot use a write-ahead log (journal mode {mode!r}): "
                "put the data directory on a local file system"
            )
        db.execute(f"PRAGMA synchronous={synchronous}")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version not in (0, SCHEMA_VERSION):
            raise SpoolError(
                f"the spool {path} has schema version {version}, this agent reads {SCHEMA_VERSION}: "
                "upgrade the agent, or move the file aside (its unsent messages are lost)"
            )
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise SpoolError(
            f"the spool {path} is unreadable ({exc}): move it aside and restart the agent "
            "(its unsent messages are lost)"
        ) from exc
    except BaseException:
        db.close()
        raise
    return db


def _chunks(values: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
