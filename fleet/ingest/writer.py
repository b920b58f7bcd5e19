"""Writing a batch of MQTT messages to the database in one transaction, idempotently.

Per batch: decode every message (``fleet.ingest.decode``); read the registry state of the devices
involved (one indexed query); register unknown devices whose birth carries an enrollment token;
insert the rows of each table with one multi-row ``INSERT ... ON CONFLICT (device_id, seq) DO
NOTHING RETURNING``, which both makes redelivery harmless and says which rows were new; then
update each device's record (one executemany). Counters go to /metrics by channel and outcome.

A failing batch is retried while the error looks transient (the database is down or busy); a
batch that fails for another reason is written again one message per transaction, so a single
bad row is dropped (``store_failed``) rather than its neighbours.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, Text, bindparam, cast, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from fleet.db.models import Device, DeviceEvent, DeviceMetrics, DriftWindow
from fleet.db.session import Database
from fleet.db.types import utcnow
from fleet.devices.registry import EnrollmentRefused, redeem_enrollment
from fleet.errors import ServiceError
from fleet.ingest.decode import Decoded, Dropped, DropReason, Message, decode_message
from fleet.ingest.plan import (
    DRIFT_TABLE,
    EVENTS_TABLE,
    METRICS_TABLE,
    DeviceChange,
    Key,
    device_changes,
    key_of,
    models_of,
    plan_rows,
)
from fleet.ingest.status import DeviceState
from fleet.metrics import IngestMetrics
from models.mqtt_contract import Channel

log = logging.getLogger(__name__)

_TABLES: dict[str, Table] = {
    METRICS_TABLE: DeviceMetrics.__table__,  # type: ignore[dict-item]
    DRIFT_TABLE: DriftWindow.__table__,  # type: ignore[dict-item]
    EVENTS_TABLE: DeviceEvent.__table__,  # type: ignore[dict-item]
}
_DEVICES: Table = Device.__table__  # type: ignore[assignment]
# SQLite caps bound parameters per statement; PostgreSQL at 65535. Rows have at most 10 columns.
_INSERT_CHUNK = 500
_ID_CHUNK = 500

DriftListener = Callable[[set[tuple[str, str]]], None]


@dataclass
class BatchResult:
    """What became of one batch, by channel: stored (new), duplicate (seen before) or dropped."""

    stored: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    dropped: list[Dropped] = field(default_factory=list)
    enrolled: list[str] = field(default_factory=list)
    drift_models: set[tuple[str, str]] = field(default_factory=set)

    @property
    def total(self) -> int:
        return sum(self.stored.values()) + sum(self.duplicates.values()) + len(self.dropped)


class TransientStoreError(Exception):
    """The database did not take the batch for a reason that may pass (down, busy, restarting)."""


class BatchWriter:
    def __init__(
        self, database: Database, metrics: IngestMetrics, *, on_drift: DriftListener | None = None
    ) -> None:
        self.database = database
        self.metrics = metrics
        self.on_drift = on_drift

    # --- the entry point --------------------------------------------------------------------------

    def write(self, messages: Sequence[Message]) -> BatchResult:
        """Decode and store ``messages``; raises ``TransientStoreError`` when the database is away
        (the caller keeps the batch and retries). Anything else is handled here."""
        result = BatchResult()
        decoded: list[Decoded] = []
        for message in messages:
            outcome = decode_message(message)
            if isinstance(outcome, Dropped):
                result.dropped.append(outcome)
            else:
                decoded.append(outcome)
        if decoded:
            try:
                self._store(decoded, result)
            except TransientStoreError:
                raise
            except SQLAlchemyError as exc:
                log.warning("a batch of %d messages failed (%s); storing them one by one", len(decoded), exc)
                self._store_one_by_one(decoded, result)
        self._count(result)
        return result

    def _store(self, decoded: list[Decoded], result: BatchResult) -> None:
        attempt = BatchResult()
        try:
            with self.database.session() as session:
                self._store_in(session, decoded, attempt)
        except OperationalError as exc:
            if _is_transient(exc):
                raise TransientStoreError(str(exc).splitlines()[0]) from exc
            raise
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise TransientStoreError(str(exc).splitlines()[0]) from exc
            raise
        _merge(result, attempt)

    def _store_one_by_one(self, decoded: list[Decoded], result: BatchResult) -> None:
        for message in decoded:
            try:
                self._store([message], result)
            except TransientStoreError:
                raise
            except SQLAlchemyError as exc:
                log.error(
                    "dropping %s seq %s: the database refused it: %s", message.device_id, message.seq, exc
                )
                result.dropped.append(
                    Dropped(
                        message.channel.value,
                        DropReason.STORE_FAILED,
                        str(exc).splitlines()[0],
                        message.device_id,
                    )
                )

    # --- one transaction --------------------------------------------------------------------------

    def _store_in(self, session: Session, decoded: list[Decoded], result: BatchResult) -> None:
        devices = load_device_states(session, {m.device_id for m in decoded})
        refused = self._enroll(session, decoded, devices, result)
        plan = plan_rows([m for m in decoded if id(m) not in refused] if refused else decoded, devices)
        result.dropped.extend(plan.dropped)
        for message in plan.repeats:
            result.duplicates[message.channel.value] += 1
        new_keys: set[Key] = set()
        for table, rows in plan.rows.items():
            if rows:
                new_keys |= insert_new_rows(session, _TABLES[table], rows)
        for message in plan.accepted:
            bucket = result.stored if key_of(message) in new_keys else result.duplicates
            bucket[message.channel.value] += 1
            if message.channel is Channel.DRIFT and key_of(message) in new_keys:
                result.drift_models.add((message.payload.model, message.payload.version))
        update_devices(session, device_changes(devices, plan.accepted, new_keys).values())

    def _enroll(
        self, session: Session, decoded: list[Decoded], devices: dict[str, DeviceState], result: BatchResult
    ) -> set[int]:
        """A device nobody provisioned registers itself with the one-time token in its first birth.

        Returns the births whose token was refused (by ``id``): they are dropped and counted here,
        once, as ``enrollment_refused``.
        """
        refused: set[int] = set()
        for message in decoded:
            payload = message.payload
            if (
                message.channel is not Channel.STATUS
                or message.device_id in devices
                or not payload.enrollment_token
            ):
                continue
            try:
                with session.begin_nested():
                    enrollment = redeem_enrollment(
                        session,
                        payload.enrollment_token,
                        message.device_id,
                        profile=payload.profile or None,
                        agent_version=payload.agent_version or None,
                    )
                    if enrollment.device.fleet != message.fleet:
                        raise EnrollmentRefused(
                            f"the token is for fleet {enrollment.device.fleet!r}, "
                            f"but the device publishes under fleet {message.fleet!r}"
                        )
            except ServiceError as exc:  # EnrollmentRefused, or a Conflict when two servers race
                log.warning("enrollment of device %r refused: %s", message.device_id, exc.message)
                result.dropped.append(
                    Dropped(
                        message.channel.value, DropReason.ENROLLMENT_REFUSED, exc.message, message.device_id
                    )
                )
                refused.add(id(message))
                continue
            log.info("device %r enrolled itself into fleet %r", message.device_id, enrollment.device.fleet)
            result.enrolled.append(message.device_id)
            devices.update(load_device_states(session, {message.device_id}))
        return refused

    # --- counters ---------------------------------------------------------------------------------

    def _count(self, result: BatchResult) -> None:
        for channel, count in result.stored.items():
            self.metrics.messages.labels(channel, "stored").inc(count)
        for channel, count in result.duplicates.items():
            self.metrics.messages.labels(channel, "duplicate").inc(count)
        reasons = Counter((d.channel, d.reason.value) for d in result.dropped)
        for (channel, reason), count in reasons.items():
            self.metrics.drop(channel, reason, count)
        if result.enrolled:
            self.metrics.enrollments.inc(len(result.enrolled))
        for dropped in result.dropped:
            # One line per drop, at a level that says whether the device or the server is at fault.
            level = logging.ERROR if dropped.reason is DropReason.STORE_FAILED else logging.WARNING
            log.log(
                level,
                "dropped a %s message from %s: %s: %s",
                dropped.channel,
                dropped.device_id or "an unknown publisher",
                dropped.reason.value,
                dropped.detail,
            )
        if result.drift_models and self.on_drift is not None:
            try:
                self.on_drift(set(result.drift_models))
            except Exception:  # the drift monitor must never stop the ingest
                log.exception("notifying the drift monitor failed")


# --- SQL helpers -----------------------------------------------------------------------------------


def load_device_states(session: Session, ids: Iterable[str]) -> dict[str, DeviceState]:
    wanted = sorted(ids)
    states: dict[str, DeviceState] = {}
    columns = (
        _DEVICES.c.id,
        _DEVICES.c.fleet,
        _DEVICES.c.online,
        _DEVICES.c.last_seen,
        _DEVICES.c.last_seq,
        _DEVICES.c.status_seq,
        _DEVICES.c.will_seq,
        _DEVICES.c.metrics_seq,
        _DEVICES.c.updated_at,
    )
    for start in range(0, len(wanted), _ID_CHUNK):
        chunk = wanted[start : start + _ID_CHUNK]
        for row in session.execute(select(*columns).where(_DEVICES.c.id.in_(chunk))):
            states[row.id] = DeviceState(
                id=row.id,
                fleet=row.fleet,
                online=bool(row.online),
                last_seen=row.last_seen,
                last_seq=row.last_seq,
                status_seq=row.status_seq,
                will_seq=row.will_seq,
                metrics_seq=row.metrics_seq,
                updated_at=row.updated_at,
            )
    return states


def insert_new_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> set[Key]:
    """INSERT the rows, skipping (device_id, seq) pairs already stored; the keys that were new.

    ``payload`` arrives as JSON text and is bound as text (a cast to JSONB on PostgreSQL; SQLite
    keeps JSON as text anyway), so no row pays for a second serialisation.
    """
    dialect = session.get_bind().dialect.name
    statement = _insert_statement(table, dialect)
    new: set[Key] = set()
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start : start + _INSERT_CHUNK]
        for device_id, seq in session.execute(statement, chunk):
            new.add((table.name, device_id, int(seq)))
    return new


_STATEMENTS: dict[tuple[str, str], Any] = {}


def _insert_statement(table: Table, dialect: str) -> Any:
    cached = _STATEMENTS.get((table.name, dialect))
    if cached is not None:
        return cached
    payload: Any = bindparam("payload", type_=Text())
    if dialect == "postgresql":
        insert: Any = postgresql.insert
        payload = cast(payload, postgresql.JSONB())
    else:
        insert = sqlite.insert
    statement = (
        insert(table)
        .values(
            {
                column.name: bindparam(column.name, type_=column.type)
                for column in table.columns
                if column.name not in ("id", "payload")
            }
            | {"payload": payload}
        )
        .on_conflict_do_nothing(index_elements=["device_id", "seq"])
        .returning(table.c.device_id, table.c.seq)
    )
    _STATEMENTS[(table.name, dialect)] = statement
    return statement


_TOUCH = (
    update(_DEVICES)
    .where(_DEVICES.c.id == bindparam("b_id"))
    .values(
        last_seen=bindparam("b_last_seen"),
        last_seq=bindparam("b_last_seq"),
        # updated_at is the record's, not the telemetry's: keep it (its onupdate would bump it).
        updated_at=bindparam("b_updated_at"),
    )
)
_STATUS = (
    update(_DEVICES)
    .where(_DEVICES.c.id == bindparam("b_id"))
    .values(
        online=bindparam("b_online"),
        status=bindparam("b_status"),
        status_seq=bindparam("b_status_seq"),
        will_seq=bindparam("b_will_seq"),
        agent_version=bindparam("b_agent_version"),
        profile=bindparam("b_profile"),
        models=bindparam("b_models"),
        updated_at=bindparam("b_now"),
    )
)
_METRICS = (
    update(_DEVICES)
    .where(_DEVICES.c.id == bindparam("b_id"))
    .values(
        latest_metrics=bindparam("b_metrics"),
        metrics_seq=bindparam("b_metrics_seq"),
        updated_at=bindparam("b_updated_at"),
    )
)


def update_devices(session: Session, changes: Iterable[DeviceChange]) -> None:
    """Three executemany UPDATEs at most: last seen, status, latest metrics."""
    touch: list[dict[str, Any]] = []
    statuses: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    now = utcnow()
    for change in changes:
        state = change.state
        if change.status is not None:
            status = change.status
            statuses.append(
                {
                    "b_id": state.id,
                    "b_online": state.online,
                    "b_status": status.model_dump(mode="json", exclude={"enrollment_token"}),
                    "b_status_seq": state.status_seq,
                    "b_will_seq": state.will_seq,
                    "b_agent_version": (status.agent_version or None),
                    "b_profile": status.profile or None,
                    "b_models": models_of(status),
                    "b_now": now,
                }
            )
        updated_at = now if change.status is not None else state.updated_at
        if change.touched:
            touch.append(
                {
                    "b_id": state.id,
                    "b_last_seen": state.last_seen,
                    "b_last_seq": state.last_seq,
                    "b_updated_at": updated_at,
                }
            )
        if change.metrics is not None:
            metrics.append(
                {
                    "b_id": state.id,
                    "b_metrics": change.metrics.model_dump(mode="json"),
                    "b_metrics_seq": state.metrics_seq,
                    "b_updated_at": updated_at,
                }
            )
    for statement, params in ((_STATUS, statuses), (_TOUCH, touch), (_METRICS, metrics)):
        if params:
            session.execute(statement, params)


def _is_transient(exc: OperationalError) -> bool:
    """Connection trouble or a locked SQLite file passes; a missing table or column does not."""
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    permanent = ("no such table", "no such column", "does not exist", "syntax error")
    return exc.connection_invalidated or not any(marker in text for marker in permanent)


def _merge(into: BatchResult, other: BatchResult) -> None:
    into.stored.update(other.stored)
    into.duplicates.update(other.duplicates)
    into.dropped.extend(other.dropped)
    into.enrolled.extend(other.enrolled)
    into.drift_models |= other.drift_models
