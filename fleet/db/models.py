"""The fleet database, as SQLAlchemy 2 declarative models.

The Alembic migrations in ``fleet/alembic/versions`` create exactly these tables (a test compares
the two on SQLite and PostgreSQL). Tables the MQTT ingest and drift analysis fill
(``device_metrics``, ``drift_windows``, ``device_events``, ``alerts``) exist from the first
migration so those parts slot in without reshaping the registry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from fleet.db.types import JSONType, UTCDateTime, utcnow

# Stable constraint names: Alembic needs them to alter tables (and SQLite's batch mode needs them
# to recreate one), and they keep SQLite and PostgreSQL schemas identical.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DEVICE_ID_LENGTH = 128
NAME_LENGTH = 128


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


class ApiToken(Base):
    """An operator's API token. Only its sha256 is stored; the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, for display
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class AuditEntry(Base):
    """Who did what, when, to what: every mutating API call and every refused bundle push."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_action_at", "action", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(NAME_LENGTH))
    actor_role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(256))
    outcome: Mapped[str] = mapped_column(String(16), default="ok")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Device(Base):
    """One edge device: provisioned ahead by an operator, or enrolled by its first birth message."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(DEVICE_ID_LENGTH), primary_key=True)
    fleet: Mapped[str] = mapped_column(String(64), default="default", index=True)
    profile: Mapped[str | None] = mapped_column(String(64), index=True)
    agent_version: Mapped[str | None] = mapped_column(String(64))
    models: Mapped[dict[str, Any]] = mapped_column(default=dict)  # model name -> running version
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[datetime | None]
    last_seq: Mapped[int | None] = mapped_column(BigInteger)  # the highest seq ingested
    status: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # the last status payload
    latest_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The ingest orders status and metrics by seq without parsing the JSON above (migration 0002):
    # the seq of the status applied last, the seq its connection's Last Will carries, and the seq
    # of the metrics in ``latest_metrics``.
    status_seq: Mapped[int | None] = mapped_column(BigInteger)
    will_seq: Mapped[int | None] = mapped_column(BigInteger)
    metrics_seq: Mapped[int | None] = mapped_column(BigInteger)
    enrollment: Mapped[str] = mapped_column(String(16), default="provisioned")
    enrollment_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollment_tokens.id", ondelete="SET NULL")
    )
    mqtt_password_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    tags: Mapped[list[DeviceTag]] = relationship(
        back_populates="device", cascade="all, delete-orphan", lazy="selectin", order_by="DeviceTag.key"
    )

    @property
    def tag_map(self) -> dict[str, str]:
        return {tag.key: tag.value for tag in self.tags}


class DeviceTag(Base):
    """``key=value`` labels; a table (not JSON) so that filtering is an index lookup on both backends."""

    __tablename__ = "device_tags"
    __table_args__ = (Index("ix_device_tags_key_value", "key", "value"),)

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))

    device: Mapped[Device] = relationship(back_populates="tags")


class EnrollmentToken(Base):
    """A one-time token a device presents in its first birth message to register itself."""

    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    fleet: Mapped[str] = mapped_column(String(64), default="default")
    profile: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    note: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_by_device: Mapped[str | None] = mapped_column(String(DEVICE_ID_LENGTH))
    revoked_at: Mapped[datetime | None]


class Bundle(Base):
    """A verified bundle in the registry, stored content-addressed as ``bundles/<sha256>.efb``."""

    __tablename__ = "bundles"
    __table_args__ = (UniqueConstraint("name", "version", "profile"),)

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    version: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(32))
    precision: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str] = mapped_column(String(32))
    manifest: Mapped[dict[str, Any]] = mapped_column()
    created: Mapped[datetime] = mapped_column()  # when the converter built it
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)
    uploaded_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH))


class ServerSetting(Base):
    """Small pieces of server state, such as the hash of the server's own MQTT account."""

    __tablename__ = "server_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# --- filled by the MQTT ingest and drift analysis ----------------------------------------------


class _DeviceMessage:
    """Columns every ingested device message shares; (device_id, seq) makes ingest idempotent."""

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    sent_at: Mapped[datetime] = mapped_column()  # the device's own timestamp
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    payload: Mapped[dict[str, Any]] = mapped_column()


class DeviceMetrics(_DeviceMessage, Base):
    __tablename__ = "device_metrics"
    __table_args__ = (
        UniqueConstraint("device_id", "seq"),
        Index("ix_device_metrics_device_id_sent_at", "device_id", "sent_at"),
    )

    model_name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    model_version: Mapped[str | None] = mapped_column(String(64))


class DriftWindow(_DeviceMessage, Base):
    """Counts in the bundle's frozen bins over one window: merged by adding, never raw data."""

    __tablename__ = "drift_windows"
    __table_args__ = (
        UniqueConstraint("device_id", "seq"),
        Index("ix_drift_windows_model", "model_name", "model_version", "window_end"),
    )

    model_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    model_version: Mapped[str] = mapped_column(String(64))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    samples: Mapped[int] = mapped_column(BigInteger)


class DeviceEvent(_DeviceMessage, Base):
    """Events, OTA reports and status changes (``kind``: ``event``, ``ota`` or ``status``)."""

    __tablename__ = "device_events"
    __table_args__ = (
        UniqueConstraint("device_id", "seq"),
        Index("ix_device_events_device_id_sent_at", "device_id", "sent_at"),
    )

    kind: Mapped[str] = mapped_column(String(32))


class Alert(Base):
    """A drift (or health) threshold crossed: stored, audited, counted in /metrics."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_open", "kind", "model_name", "model_version", "resolved_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    model_name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    model_version: Mapped[str | None] = mapped_column(String(64))
    cohort: Mapped[str | None] = mapped_column(String(256))
    feature: Mapped[str | None] = mapped_column(String(256))
    metric: Mapped[str | None] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    resolved_at: Mapped[datetime | None]
    message: Mapped[str | None] = mapped_column(Text)


# The rollout tables live with the rollout controller, on this Base; importing them here puts them
# in ``Base.metadata`` for Alembic, ``create_all`` and the schema test.
from fleet.rollouts import models as _rollout_models  # noqa: E402, F401
