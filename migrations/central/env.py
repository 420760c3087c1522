"""Alembic environment for the central database (SQLite or PostgreSQL)."""

from __future__ import annotations

from alembic import context

import catalogue.models  # noqa: F401
import gateway.hub.membership.models  # noqa: F401
import spe.airlock.review.models  # noqa: F401
import spe.audit.models  # noqa: F401
import spe.federated.models  # noqa: F401
import spe.jobs.models  # noqa: F401
import spe.permits.models  # noqa: F401
import spe.users.models  # noqa: F401  (registers tables)
from spe.db import make_engine
from spe.db.base import CentralBase as Base

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
