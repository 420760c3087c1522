"""code_approvals: institutions' approvals of job code per permit; a longer job state

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "code_approvals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pid", sa.String(length=32), nullable=False),
        sa.Column("code_sha256", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("approver", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("code", sa.LargeBinary(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_code_approvals")),
    )
    op.create_index("ix_code_approvals_pid_code_sha256", "code_approvals",
                    ["pid", "code_sha256"], unique=False)
    # "awaiting_approval" is longer than the 16 characters the states had.
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("state", existing_type=sa.String(length=16),
                           type_=sa.String(length=24), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("state", existing_type=sa.String(length=24),
                           type_=sa.String(length=16), existing_nullable=False)
    op.drop_index("ix_code_approvals_pid_code_sha256", table_name="code_approvals")
    op.drop_table("code_approvals")
