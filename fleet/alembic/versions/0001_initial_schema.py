"""Initial schema: tokens, audit log, devices and tags, enrollment, bundles, and the ingest tables.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Types are spelled out here rather than imported from ``fleet.db``: a migration is a snapshot and
must keep meaning the same thing when the models change.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, _JSON, nullable=nullable)


def _device_message_columns(table: str) -> list[sa.Column[object] | sa.Constraint]:
    """What every ingested device message has; (device_id, seq) makes ingest idempotent."""
    return [
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        _ts("sent_at"),
        _ts("received_at"),
        _json("payload"),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=f"fk_{table}_device_id_devices", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("device_id", "seq", name=f"uq_{table}_device_id_seq"),
    ]


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        _ts("created_at"),
        sa.Column("created_by", sa.String(128), nullable=True),
        _ts("last_used_at", nullable=True),
        _ts("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", _BIG_ID, nullable=False),
        _ts("at"),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("actor_role", sa.String(16), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        _json("details"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_action_at", "audit_log", ["action", "at"])

    op.create_table(
        "enrollment_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("fleet", sa.String(64), nullable=False),
        sa.Column("profile", sa.String(64), nullable=True),
        _json("tags"),
        sa.Column("note", sa.String(256), nullable=True),
        _ts("created_at"),
        sa.Column("created_by", sa.String(128), nullable=True),
        _ts("expires_at"),
        _ts("used_at", nullable=True),
        sa.Column("used_by_device", sa.String(128), nullable=True),
        _ts("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_enrollment_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_enrollment_tokens_token_hash"),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("fleet", sa.String(64), nullable=False),
        sa.Column("profile", sa.String(64), nullable=True),
        sa.Column("agent_version", sa.String(64), nullable=True),
        _json("models"),
        sa.Column("online", sa.Boolean(), nullable=False),
        _ts("last_seen", nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        _json("status", nullable=True),
        _json("latest_metrics", nullable=True),
        sa.Column("enrollment", sa.String(16), nullable=False),
        sa.Column("enrollment_token_id", sa.Integer(), nullable=True),
        sa.Column("mqtt_password_hash", sa.String(255), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.ForeignKeyConstraint(
            ["enrollment_token_id"],
            ["enrollment_tokens.id"],
            name="fk_devices_enrollment_token_id_enrollment_tokens",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_devices_fleet", "devices", ["fleet"])
    op.create_index("ix_devices_profile", "devices", ["profile"])
    op.create_table(
        "device_tags",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "key", name="pk_device_tags"),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name="fk_device_tags_device_id_devices", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_device_tags_key_value", "device_tags", ["key", "value"])

    op.create_table(
        "bundles",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("precision", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        _json("manifest"),
        _ts("created"),
        _ts("uploaded_at"),
        sa.Column("uploaded_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("sha256", name="pk_bundles"),
        sa.UniqueConstraint("name", "version", "profile", name="uq_bundles_name_version_profile"),
    )
    op.create_index("ix_bundles_name", "bundles", ["name"])
    op.create_table(
        "server_settings",
        sa.Column("key", sa.String(64), nullable=False),
        _json("value"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("key", name="pk_server_settings"),
    )

    # Filled by the MQTT ingest and the drift analysis.
    op.create_table(
        "device_metrics",
        *_device_message_columns("device_metrics"),
        sa.Column("model_name", sa.String(128), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
    )
    op.create_index("ix_device_metrics_device_id_sent_at", "device_metrics", ["device_id", "sent_at"])
    op.create_table(
        "drift_windows",
        *_device_message_columns("drift_windows"),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        _ts("window_start"),
        _ts("window_end"),
        sa.Column("samples", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_drift_windows_model", "drift_windows", ["model_name", "model_version", "window_end"])
    op.create_table(
        "device_events",
        *_device_message_columns("device_events"),
        sa.Column("kind", sa.String(32), nullable=False),
    )
    op.create_index("ix_device_events_device_id_sent_at", "device_events", ["device_id", "sent_at"])
    op.create_table(
        "alerts",
        sa.Column("id", _BIG_ID, nullable=False),
        _ts("created_at"),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("cohort", sa.String(256), nullable=True),
        sa.Column("feature", sa.String(256), nullable=True),
        sa.Column("metric", sa.String(32), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        _json("details"),
        _ts("resolved_at", nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_created_at", "alerts", ["created_at"])


def downgrade() -> None:
    for table in (
        "alerts",
        "device_events",
        "drift_windows",
        "device_metrics",
        "server_settings",
        "bundles",
        "device_tags",
        "devices",
        "enrollment_tokens",
        "audit_log",
        "api_tokens",
    ):
        op.drop_table(table)
