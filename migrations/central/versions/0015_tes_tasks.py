"""tes_tasks: what the GA4GH TES API keeps of a task beside its job (name, description,
tags, the executor and the inputs as sent)

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-06 23:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
# 0013 and 0014 are being added beside this one; the merge re-chains it after them.
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tes_tasks",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("environment", sa.String(length=32), nullable=False),
        sa.Column("executor", sa.JSON(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("resources", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"],
                                name=op.f("fk_tes_tasks_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_tes_tasks")),
    )
    op.create_index(op.f("ix_tes_tasks_user_id"), "tes_tasks", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tes_tasks_user_id"), table_name="tes_tasks")
    op.drop_table("tes_tasks")
