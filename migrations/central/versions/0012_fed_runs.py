"""fed_runs: the federated computations (ComBat, Flower) the hub drives, round by round

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 07:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fed_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("pid", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=320), nullable=False),
        sa.Column("app", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("rounds", sa.JSON(), nullable=False),
        sa.Column("privacy", sa.JSON(), nullable=False),
        sa.Column("airlock", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fed_runs")),
    )
    op.create_index(op.f("ix_fed_runs_pid"), "fed_runs", ["pid"], unique=False)
    op.create_index(op.f("ix_fed_runs_user_id"), "fed_runs", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_fed_runs_user_id"), table_name="fed_runs")
    op.drop_index(op.f("ix_fed_runs_pid"), table_name="fed_runs")
    op.drop_table("fed_runs")
