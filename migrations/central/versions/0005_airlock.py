"""airlock review: requests, files, reviews

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 08:20:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('airlock_requests',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('node_id', sa.String(length=120), nullable=False),
    sa.Column('pid', sa.String(length=32), nullable=False),
    sa.Column('requester', sa.String(length=320), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_airlock_requests'))
    )
    with op.batch_alter_table('airlock_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_airlock_requests_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_airlock_requests_pid'), ['pid'], unique=False)
        batch_op.create_index(batch_op.f('ix_airlock_requests_requester'), ['requester'], unique=False)
        batch_op.create_index(batch_op.f('ix_airlock_requests_state'), ['state'], unique=False)

    op.create_table('airlock_files',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.String(length=32), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('notes', sa.JSON(), nullable=False),
    sa.Column('stored', sa.Boolean(), nullable=False),
    sa.Column('stored_path', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['request_id'], ['airlock_requests.id'], name=op.f('fk_airlock_files_request_id_airlock_requests'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_airlock_files')),
    sa.UniqueConstraint('request_id', 'path', name=op.f('uq_airlock_files_request_id'))
    )
    with op.batch_alter_table('airlock_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_airlock_files_request_id'), ['request_id'], unique=False)

    op.create_table('airlock_reviews',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.String(length=32), nullable=False),
    sa.Column('reviewer', sa.String(length=320), nullable=False),
    sa.Column('decision', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['airlock_requests.id'], name=op.f('fk_airlock_reviews_request_id_airlock_requests'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_airlock_reviews')),
    sa.UniqueConstraint('request_id', 'reviewer', name=op.f('uq_airlock_reviews_request_id'))
    )
    with op.batch_alter_table('airlock_reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_airlock_reviews_request_id'), ['request_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('airlock_reviews', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_airlock_reviews_request_id'))
    op.drop_table('airlock_reviews')
    with op.batch_alter_table('airlock_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_airlock_files_request_id'))
    op.drop_table('airlock_files')
    with op.batch_alter_table('airlock_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_airlock_requests_state'))
        batch_op.drop_index(batch_op.f('ix_airlock_requests_requester'))
        batch_op.drop_index(batch_op.f('ix_airlock_requests_pid'))
        batch_op.drop_index(batch_op.f('ix_airlock_requests_job_id'))
    op.drop_table('airlock_requests')
