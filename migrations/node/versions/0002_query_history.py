"""query history: the sets each user was answered, for the differencing check

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 07:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "query_answered_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=320), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("query_hash", sa.String(length=64), nullable=False),
        sa.Column("cell", sa.String(length=200), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("shown", sa.Boolean(), nullable=False),
        sa.Column("bitmap", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_query_answered_sets")),
    )
    op.create_index("ix_query_answered_sets_user_at", "query_answered_sets",
                    ["user_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_query_answered_sets_user_at", table_name="query_answered_sets")
    op.drop_table("query_answered_sets")
