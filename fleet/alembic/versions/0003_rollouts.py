"""Rollouts: the rollout, each targeted device's progress, and each device's desired state.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01

Types are spelled out, as in 0001: a migration is a snapshot of the schema it creates.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("target", sa.String(1024), nullable=False),
        sa.Column("canary", sa.String(16), nullable=False),
        sa.Column("wave_percents", _JSON, nullable=False),
        sa.Column("wave_sizes", _JSON, nullable=False),
        sa.Column("bake_s", sa.Float(), nullable=False),
        sa.Column("device_timeout_s", sa.Float(), nullable=False),
        sa.Column("gates", _JSON, nullable=False),
        sa.Column("allow_rollback", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("settled", sa.Boolean(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        _ts("wave_started_at"),
        _ts("window_started_at"),
        _ts("wave_committed_at"),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decision", _JSON, nullable=True),
        _ts("created_at", nullable=False),
        sa.Column("created_by", sa.String(128), nullable=True),
        _ts("updated_at", nullable=False),
        _ts("finished_at"),
        sa.PrimaryKeyConstraint("id", name="pk_rollouts"),
    )
    op.create_index("ix_rollouts_model", "rollouts", ["model"])
    op.create_index("ix_rollouts_state_settled", "rollouts", ["state", "settled"])
    op.create_table(
        "rollout_devices",
        sa.Column("rollout_id", sa.String(32), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("profile", sa.String(64), nullable=True),
        sa.Column("bundle_sha256", sa.String(64), nullable=False),
        sa.Column("bundle_size", sa.BigInteger(), nullable=False),
        sa.Column("previous_version", sa.String(64), nullable=True),
        sa.Column("previous_sha256", sa.String(64), nullable=True),
        sa.Column("previous_size", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("report_seq", sa.BigInteger(), nullable=True),
        _ts("assigned_at"),
        _ts("state_at"),
        _ts("progress_at"),
        sa.PrimaryKeyConstraint("rollout_id", "device_id", name="pk_rollout_devices"),
        sa.ForeignKeyConstraint(
            ["rollout_id"], ["rollouts.id"], name="fk_rollout_devices_rollout_id_rollouts", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name="fk_rollout_devices_device_id_devices", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_rollout_devices_rollout_id_state", "rollout_devices", ["rollout_id", "state"])
    op.create_index("ix_rollout_devices_device_id_state", "rollout_devices", ["device_id", "state"])
    op.create_table(
        "desired_states",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("models", _JSON, nullable=False),
        _ts("updated_at", nullable=False),
        sa.Column("published_revision", sa.BigInteger(), nullable=True),
        _ts("published_at"),
        sa.PrimaryKeyConstraint("device_id", name="pk_desired_states"),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name="fk_desired_states_device_id_devices", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("desired_states")
    op.drop_index("ix_rollout_devices_device_id_state", table_name="rollout_devices")
    op.drop_index("ix_rollout_devices_rollout_id_state", table_name="rollout_devices")
    op.drop_table("rollout_devices")
    op.drop_index("ix_rollouts_state_settled", table_name="rollouts")
    op.drop_index("ix_rollouts_model", table_name="rollouts")
    op.drop_table("rollouts")
