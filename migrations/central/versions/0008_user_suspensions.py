"""user suspensions: each suspension or reinstatement, in order (the list's epoch)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_suspensions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.String(length=520), nullable=False),
        sa.Column("suspended", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("actor", sa.String(length=520), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_suspensions")),
    )
    op.create_index(op.f("ix_user_suspensions_user_id"), "user_suspensions", ["user_id"])
    op.create_index(op.f("ix_user_suspensions_epoch"), "user_suspensions", ["epoch"])


def downgrade() -> None:
    op.drop_index(op.f("ix_user_suspensions_epoch"), table_name="user_suspensions")
    op.drop_index(op.f("ix_user_suspensions_user_id"), table_name="user_suspensions")
    op.drop_table("user_suspensions")
