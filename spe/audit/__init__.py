"""Append-only, hash-chained audit log, kept at the central service and at every node."""

from spe.audit.models import (
    AuditCheckpointMixin,
    AuditEntryMixin,
    AuditHeadMixin,
    AuditWitness,
    CentralAuditCheckpoint,
    CentralAuditEntry,
    CentralAuditHead,
    NodeAuditCheckpoint,
    NodeAuditEntry,
    NodeAuditHead,
)
from spe.audit.service import AuditLog, ChainBreak, VerifyReport

#: The central service's log (the nodes have theirs in gateway.node.app).
CENTRAL_AUDIT = AuditLog(CentralAuditEntry, CentralAuditHead)

__all__ = [
    "CENTRAL_AUDIT",
    "AuditCheckpointMixin",
    "AuditEntryMixin",
    "AuditHeadMixin",
    "AuditLog",
    "AuditWitness",
    "CentralAuditCheckpoint",
    "CentralAuditEntry",
    "CentralAuditHead",
    "ChainBreak",
    "NodeAuditCheckpoint",
    "NodeAuditEntry",
    "NodeAuditHead",
    "VerifyReport",
]
