"""task queue: procrastinate's tables on PostgreSQL (jobs handed to workers on any machine)

On SQLite (the embedded default) a node's jobs are polled by its own worker threads and
nothing is created here. The schema is the one of the procrastinate release pyproject.toml
pins (3.10); a newer release brings its own delta migrations
(`procrastinate.schema.SchemaManager.get_migrations_path()`), to be applied by a later
revision here.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 11:00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("procrastinate_events", "procrastinate_periodic_defers", "procrastinate_jobs",
           "procrastinate_workers")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from procrastinate.schema import SchemaManager

    _run(bind, SchemaManager.get_schema())


def _run(bind, sql: str) -> None:
    """Through the driver's own cursor with no parameters: many statements, literal %."""
    with bind.connection.dbapi_connection.cursor() as cursor:
        cursor.execute(sql)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    _run(bind, f"DROP TABLE IF EXISTS {', '.join(_TABLES)} CASCADE")
    # Its functions and types.
    _run(bind, """
        DO $$ DECLARE f record; BEGIN
          FOR f IN SELECT oid::regprocedure AS sig FROM pg_proc
                   WHERE proname LIKE 'procrastinate\\_%' LOOP
            EXECUTE 'DROP FUNCTION IF EXISTS ' || f.sig || ' CASCADE';
          END LOOP;
          FOR f IN SELECT typname FROM pg_type WHERE typname LIKE 'procrastinate\\_%'
                   AND typtype IN ('e', 'c') LOOP
            EXECUTE 'DROP TYPE IF EXISTS ' || quote_ident(f.typname) || ' CASCADE';
          END LOOP;
        END $$""")
