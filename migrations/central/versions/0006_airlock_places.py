"""airlock files: the places the automatic checks point at (rule, line, column)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 17:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('airlock_files', schema=None) as batch_op:
        batch_op.add_column(sa.Column('places', sa.JSON(), nullable=False,
                                      server_default='[]'))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('airlock_files', schema=None) as batch_op:
        batch_op.drop_column('places')
