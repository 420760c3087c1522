"""Append-only, hash-chained audit log, kept at the central service and at every node."""

from spe.audit.models import (
    AuditEntryMixin,
    AuditHeadMixin,
    CentralAuditEntry,
    CentralAuditHead,
    NodeAuditEntry,
    NodeAuditHead,
)
from spe.audit.service import AuditLog, ChainBreak, VerifyReport

__all__ = [
    "AuditEntryMixin",
    "AuditHeadMixin",
    "AuditLog",
    "CentralAuditEntry",
    "CentralAuditHead",
    "ChainBreak",
    "NodeAuditEntry",
    "NodeAuditHead",
    "VerifyReport",
]
