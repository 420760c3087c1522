"""job_environment: the analysis environment a job runs in

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 23:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Jobs queued before there were several environments ran in the one there was, which
    # is now the default "statistics".
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("environment", sa.String(length=32), nullable=False,
                                   server_default="statistics"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("environment")
