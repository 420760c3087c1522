"""airlock: one request per job, with a section per site; review rounds; closed requests

Each file now names the site that sent it (`airlock_files.node_id`, unique with the
path); a request lists its sites and the sites still awaited; reviews count within a
round, so a site's outputs arriving after reviews started void them. Existing per-site
requests are kept readable as they are: each becomes a request with one site (its
`node_id`), its files that site's, its reviews of round 1.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 19:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("airlock_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sites", sa.JSON(), nullable=False,
                                      server_default="[]"))
        batch_op.add_column(sa.Column("awaiting", sa.JSON(), nullable=False,
                                      server_default="[]"))
        batch_op.add_column(sa.Column("review_round", sa.Integer(), nullable=False,
                                      server_default="1"))
        batch_op.add_column(sa.Column("review_note", sa.Text(), nullable=True))
    with op.batch_alter_table("airlock_files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node_id", sa.String(length=120), nullable=True))
    with op.batch_alter_table("airlock_reviews", schema=None) as batch_op:
        batch_op.add_column(sa.Column("round", sa.Integer(), nullable=False,
                                      server_default="1"))

    # Existing requests: one site each, the request's own.
    requests = sa.table("airlock_requests", sa.column("id", sa.String),
                        sa.column("node_id", sa.String), sa.column("reasons", sa.JSON),
                        sa.column("created_at", sa.DateTime(timezone=True)),
                        sa.column("sites", sa.JSON))
    files = sa.table("airlock_files", sa.column("request_id", sa.String),
                     sa.column("node_id", sa.String))
    bind = op.get_bind()
    for rid, node_id, reasons, created in bind.execute(
            sa.select(requests.c.id, requests.c.node_id, requests.c.reasons,
                      requests.c.created_at)).all():
        bind.execute(sa.update(requests).where(requests.c.id == rid).values(sites=[{
            "node_id": node_id, "reasons": list(reasons or []),
            "at": created.isoformat() if created is not None else None}]))
        bind.execute(sa.update(files).where(files.c.request_id == rid)
                     .values(node_id=node_id))

    with op.batch_alter_table("airlock_files", schema=None) as batch_op:
        batch_op.alter_column("node_id", existing_type=sa.String(length=120), nullable=False)
        batch_op.drop_constraint("uq_airlock_files_request_id", type_="unique")
        batch_op.create_unique_constraint("uq_airlock_files_request_id",
                                          ["request_id", "node_id", "path"])
    with op.batch_alter_table("airlock_reviews", schema=None) as batch_op:
        batch_op.drop_constraint("uq_airlock_reviews_request_id", type_="unique")
        batch_op.create_unique_constraint("uq_airlock_reviews_request_id",
                                          ["request_id", "reviewer", "round"])


def downgrade() -> None:
    # Only the latest round's reviews fit the old (request, reviewer) uniqueness; a file
    # path sent by two sites of one request does not fit the old (request, path) one, and
    # such a request cannot be downgraded (the constraint refuses it).
    reviews = sa.table("airlock_reviews", sa.column("request_id", sa.String),
                       sa.column("round", sa.Integer))
    requests = sa.table("airlock_requests", sa.column("id", sa.String),
                        sa.column("review_round", sa.Integer))
    op.get_bind().execute(sa.delete(reviews).where(reviews.c.round < sa.select(
        requests.c.review_round).where(requests.c.id == reviews.c.request_id)
        .scalar_subquery()))
    op.get_bind().execute(sa.text(
        "UPDATE airlock_requests SET state = 'rejected' WHERE state = 'closed'"))
    with op.batch_alter_table("airlock_reviews", schema=None) as batch_op:
        batch_op.drop_constraint("uq_airlock_reviews_request_id", type_="unique")
        batch_op.create_unique_constraint("uq_airlock_reviews_request_id",
                                          ["request_id", "reviewer"])
        batch_op.drop_column("round")
    with op.batch_alter_table("airlock_files", schema=None) as batch_op:
        batch_op.drop_constraint("uq_airlock_files_request_id", type_="unique")
        batch_op.create_unique_constraint("uq_airlock_files_request_id",
                                          ["request_id", "path"])
        batch_op.drop_column("node_id")
    with op.batch_alter_table("airlock_requests", schema=None) as batch_op:
        batch_op.drop_column("review_note")
        batch_op.drop_column("review_round")
        batch_op.drop_column("awaiting")
        batch_op.drop_column("sites")
