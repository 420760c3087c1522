"""patients.record_key: the cell-key method's fixed random key of each patient

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 20:40:00

HMAC-SHA256(node secret, patient_key) truncated to 32 bits (gateway/node/query/perturb.py).
NULL until a sync sets it, or until the node fills it before its next answer: the secret
is the node's own, not the migration's.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        # BIGINT: a key is in [0, 2^32), beyond a signed 32-bit INTEGER.
        batch_op.add_column(sa.Column("record_key", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_column("record_key")
