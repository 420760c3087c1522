"""fed_spend: the privacy each federated round spent at the node, per permit

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fed_spend",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pid", sa.String(length=32), nullable=False),
        sa.Column("run", sa.String(length=64), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("noise_multiplier", sa.Float(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("epsilon_run", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fed_spend")),
    )
    op.create_index("ix_fed_spend_pid_run", "fed_spend", ["pid", "run"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_fed_spend_pid_run", table_name="fed_spend")
    op.drop_table("fed_spend")
