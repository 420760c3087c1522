"""Alembic, driven from code: the same migrations for SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Literal

from alembic import command
from alembic.config import Config

from spe.settings import REPO_ROOT

Target = Literal["central", "node"]


def alembic_config(url: str, target: Target) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations" / target))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, target: Target, revision: str = "head") -> None:
    command.upgrade(alembic_config(url, target), revision)


def downgrade(url: str, target: Target, revision: str = "base") -> None:
    command.downgrade(alembic_config(url, target), revision)
