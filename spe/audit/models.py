"""Audit tables. The same columns live in the central database and in each node's."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from spe.db.base import CentralBase, NodeBase


class AuditEntryMixin:
    """One decision or data access. `hash` covers every other column and `prev_hash`."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(120))
    object: Mapped[str] = mapped_column(String(500))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHeadMixin:
    """The chain's single head row: where the next entry links, and where pruning cut it.

    Appending locks this row, so concurrent writers queue instead of forking the chain;
    keeping the last sequence number here is also what reveals deleted tail entries.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))
    # After retention pruning the chain starts from this anchor instead of the genesis hash.
    base_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    base_hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpointMixin:
    """A signed statement of the chain's head: "entry `seq` has hash `head_hash`".

    `body` is the signed text itself (canonical JSON, spe.audit.checkpoints); the other
    columns repeat it for queries and are checked against it. The signature is made with a
    key kept outside the database, so a rewrite of the database cannot re-sign its head.
    """

    __tablename__ = "audit_checkpoint"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    head_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(Text)
    # The signer's certificate (PKI) or public key (PEM): trusted only when it chains to the
    # CA on disk, never because it is stored here.
    cert: Mapped[str] = mapped_column(Text)


class CentralAuditEntry(AuditEntryMixin, CentralBase):
    pass


class CentralAuditHead(AuditHeadMixin, CentralBase):
    pass


class NodeAuditEntry(AuditEntryMixin, NodeBase):
    pass


class NodeAuditHead(AuditHeadMixin, NodeBase):
    pass


class CentralAuditCheckpoint(AuditCheckpointMixin, CentralBase):
    pass


class NodeAuditCheckpoint(AuditCheckpointMixin, NodeBase):
    pass


class AuditWitness(CentralBase):
    """The hub's copies of the nodes' signed checkpoints, kept out of the nodes' reach: a
    node whose database is rewritten disagrees with what the hub witnessed."""

    __tablename__ = "audit_witness"
    __table_args__ = (UniqueConstraint("node_id", "seq", "head_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(String(120), index=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(Text)
    cert: Mapped[str] = mapped_column(Text)
