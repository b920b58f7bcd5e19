"""How each wave of a rollout ended: passed its gates, promoted by an operator, or aborted.

Revision ID: 0004
Revises: 0003
Create Date: 2026-01-15

``rollouts.wave_ends`` (JSON, ``{"waves": [{"wave", "how", "at", "by", "actor", "reason",
"decision"}, ...]}``) lets ``rollout status`` and ``rollout ls`` tell a wave that passed its gates
from one an operator promoted past them. Rollouts that finished before this migration have none
(null); their audit log still has every decision. Types are spelled out, as in 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(sa.Column("wave_ends", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_column("wave_ends")
