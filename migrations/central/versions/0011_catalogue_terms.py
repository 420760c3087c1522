"""catalogue_datasets.clinical_terms: the SNOMED CT and LOINC terms a node publishes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 18:55:00

Each harvest fills it from the descriptor's `clinical_terms` (terms held by at least the
node's threshold of patients, with their displays) and rebuilds the dataset's search text
with them and with the names of its ICD-10 categories, modalities and body parts
(catalogue/concepts.py). Datasets harvested before get their new search text at the next
harvest.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("catalogue_datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("clinical_terms", sa.JSON(), nullable=False,
                                      server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("catalogue_datasets", schema=None) as batch_op:
        batch_op.drop_column("clinical_terms")
