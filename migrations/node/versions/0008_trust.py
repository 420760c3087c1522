"""trust: the hub contexts a node has answered (single use) and the central suspension list

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
        "hub_contexts_used",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_hub_contexts_used")),
    )
    op.create_index(op.f("ix_hub_contexts_used_expires_at"), "hub_contexts_used",
                    ["expires_at"])
    op.create_table(
        "suspension_list",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("users", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suspension_list")),
    )


def downgrade() -> None:
    op.drop_table("suspension_list")
    op.drop_index(op.f("ix_hub_contexts_used_expires_at"), table_name="hub_contexts_used")
    op.drop_table("hub_contexts_used")
