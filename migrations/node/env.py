"""Alembic environment for the node database (SQLite or PostgreSQL)."""

from __future__ import annotations

from alembic import context

import gateway.node.federated.models  # noqa: F401  (registers tables)
import gateway.node.index.models  # noqa: F401
import gateway.node.jobs.models  # noqa: F401
import gateway.node.permits.models  # noqa: F401
import gateway.node.query.models  # noqa: F401
import gateway.node.trust.models  # noqa: F401
from spe.db import make_engine
from spe.db.base import NodeBase as Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        # Batch mode lets later ALTERs work on SQLite too.
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
