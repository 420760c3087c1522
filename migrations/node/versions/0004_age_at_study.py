"""studies.age_at_study: the patient's completed years on the study date, indexed

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 08:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("age_at_study", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_studies_age_at_study"), ["age_at_study"],
                              unique=False)
    # Indexes built before this revision get their ages now (a sync refreshes them too).
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        ymd = "CAST(REPLACE({}, '-', '') AS INTEGER)"
    else:
        ymd = ("(CAST(EXTRACT(year FROM {0}) AS INTEGER) * 10000 + "
               "CAST(EXTRACT(month FROM {0}) AS INTEGER) * 100 + "
               "CAST(EXTRACT(day FROM {0}) AS INTEGER))")
    op.execute(
        "UPDATE studies SET age_at_study = ("
        f"{ymd.format('studies.study_date')} - "
        f"(SELECT {ymd.format('patients.birth_date')} FROM patients "
        "WHERE patients.id = studies.patient_id)) / 10000 "
        "WHERE studies.study_date IS NOT NULL AND EXISTS (SELECT 1 FROM patients WHERE "
        "patients.id = studies.patient_id AND patients.birth_date <= studies.study_date)")


def downgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_studies_age_at_study"))
        batch_op.drop_column("age_at_study")
