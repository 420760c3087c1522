"""catalogue: HealthDCAT-AP datasets harvested from the nodes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 11:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "catalogue_datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identifier", sa.String(length=300), nullable=False),
        sa.Column("node_id", sa.String(length=120), nullable=False),
        sa.Column("collection", sa.String(length=120), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("keywords", sa.JSON(), nullable=False),
        sa.Column("health_categories", sa.JSON(), nullable=False),
        sa.Column("themes", sa.JSON(), nullable=False),
        sa.Column("dataset_type", sa.String(length=255), nullable=False),
        sa.Column("publisher_name", sa.String(length=255), nullable=False),
        sa.Column("publisher_email", sa.String(length=320), nullable=False),
        sa.Column("contact_email", sa.String(length=320), nullable=False),
        sa.Column("hdab_name", sa.String(length=255), nullable=False),
        sa.Column("hdab_email", sa.String(length=320), nullable=False),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("legal_bases", sa.JSON(), nullable=False),
        sa.Column("access_rights", sa.String(length=16), nullable=False),
        sa.Column("population_coverage", sa.Text(), nullable=False),
        sa.Column("applicable_legislation", sa.JSON(), nullable=False),
        sa.Column("curated_at", tz, nullable=True),
        sa.Column("curated_by", sa.String(length=320), nullable=True),
        sa.Column("node_name", sa.String(length=255), nullable=False),
        sa.Column("number_of_records", sa.Integer(), nullable=True),
        sa.Column("number_of_unique_individuals", sa.Integer(), nullable=True),
        sa.Column("number_of_series", sa.Integer(), nullable=True),
        sa.Column("number_of_instances", sa.Integer(), nullable=True),
        sa.Column("min_typical_age", sa.Integer(), nullable=True),
        sa.Column("max_typical_age", sa.Integer(), nullable=True),
        sa.Column("temporal_start", sa.Date(), nullable=True),
        sa.Column("temporal_end", sa.Date(), nullable=True),
        sa.Column("modalities", sa.JSON(), nullable=False),
        sa.Column("body_parts", sa.JSON(), nullable=False),
        sa.Column("manufacturers", sa.JSON(), nullable=False),
        sa.Column("coding_systems", sa.JSON(), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.Column("completeness", sa.JSON(), nullable=False),
        sa.Column("suppressed", sa.JSON(), nullable=False),
        sa.Column("suppression_threshold", sa.Integer(), nullable=False),
        sa.Column("harvested_at", tz, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalogue_datasets")),
        sa.UniqueConstraint("identifier", name=op.f("uq_catalogue_datasets_identifier")),
    )
    with op.batch_alter_table("catalogue_datasets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_catalogue_datasets_node_id"), ["node_id"],
                              unique=False)
    op.create_table(
        "catalogue_facets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("facet", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=300), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["catalogue_datasets.id"],
                                name=op.f("fk_catalogue_facets_dataset_id_catalogue_datasets"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalogue_facets")),
    )
    op.create_index("ix_catalogue_facets_lookup", "catalogue_facets",
                    ["facet", "value", "dataset_id"])
    op.create_index(op.f("ix_catalogue_facets_dataset_id"), "catalogue_facets", ["dataset_id"])
    revision_table = op.create_table(
        "catalogue_revision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalogue_revision")),
    )
    op.bulk_insert(revision_table, [{"id": 1, "revision": 0}])
    # Full-text search, per dialect (catalogue.repository queries both).
    if op.get_bind().dialect.name == "postgresql":
        # A narrow table of its own: a text match reads only these pages, not the wide,
        # often rewritten dataset rows.
        op.create_table(
            "catalogue_text",
            sa.Column("dataset_id", sa.Integer(), nullable=False),
            sa.Column("search_vector", postgresql.TSVECTOR(), nullable=False),
            sa.ForeignKeyConstraint(["dataset_id"], ["catalogue_datasets.id"],
                                    name=op.f("fk_catalogue_text_dataset_id_catalogue_datasets"),
                                    ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("dataset_id", name=op.f("pk_catalogue_text")),
        )
        op.create_index("ix_catalogue_text_search_vector", "catalogue_text",
                        ["search_vector"], postgresql_using="gin")
    else:
        # rowid = catalogue_datasets.id; columns weighted title > keywords > body in bm25.
        op.execute("CREATE VIRTUAL TABLE catalogue_fts USING fts5("
                   "title, keywords, body, tokenize='porter unicode61 remove_diacritics 2')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_table("catalogue_text")
    else:
        op.execute("DROP TABLE IF EXISTS catalogue_fts")
    op.drop_table("catalogue_revision")
    op.drop_index(op.f("ix_catalogue_facets_dataset_id"), table_name="catalogue_facets")
    op.drop_index("ix_catalogue_facets_lookup", table_name="catalogue_facets")
    op.drop_table("catalogue_facets")
    with op.batch_alter_table("catalogue_datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_catalogue_datasets_node_id"))
    op.drop_table("catalogue_datasets")
