"""Ingest ordering columns on devices, and an index for open alerts.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

The MQTT ingest orders status messages (births and Last Wills) and metrics by seq. Keeping the
seqs in their own columns lets it decide without parsing the JSON of the last status. Types are
spelled out, as in 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("status_seq", "will_seq", "metrics_seq")


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=True))
    op.create_index("ix_alerts_open", "alerts", ["kind", "model_name", "model_version", "resolved_at"])


def downgrade() -> None:
    op.drop_index("ix_alerts_open", table_name="alerts")
    with op.batch_alter_table("devices") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
