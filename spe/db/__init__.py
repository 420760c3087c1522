"""Engines, sessions and the declarative base shared by the central service and the nodes."""

from spe.db.base import CentralBase, NodeBase
from spe.db.session import make_engine, make_sessionmaker, session_scope

__all__ = ["CentralBase", "NodeBase", "make_engine", "make_sessionmaker", "session_scope"]
