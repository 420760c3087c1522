"""conditions.display, observations.display: the codings' display names

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 18:50:00

The source's display of each coding ("Glioma", "Body mass index"), kept so the dataset
descriptor can publish the terms held by at least the threshold of patients, for the
catalogue's search. NULL until the next sync reads them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("conditions", "observations"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("display", sa.String(length=255), nullable=True))


def downgrade() -> None:
    for table in ("conditions", "observations"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("display")
