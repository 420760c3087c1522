"""Writing and verifying the hash chain.

Each entry's hash is SHA-256 over its canonical JSON (sequence number, time, actor, action,
object, decision, reason, details) and the previous entry's hash, so editing, deleting or
reordering any row breaks the chain at that row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spe.audit.models import (
    AuditCheckpointMixin,
    AuditEntryMixin,
    AuditHeadMixin,
    CentralAuditCheckpoint,
    CentralAuditEntry,
    NodeAuditCheckpoint,
    NodeAuditEntry,
)

GENESIS = "0" * 64
DECISIONS = frozenset({"allow", "deny", "info", "error"})


def _utc(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything is written in UTC.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def entry_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    object: str,
    decision: str,
    reason: str,
    details: str,
    prev_hash: str,
) -> str:
    canonical = json.dumps(
        {
            "seq": seq,
            "at": _utc(at).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "object": object,
            "decision": decision,
            "reason": reason,
            "details": details,
            "prev": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.problem}"


@dataclass
class VerifyReport:
    checked: int = 0
    breaks: list[ChainBreak] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def first_bad(self) -> ChainBreak | None:
        return self.breaks[0] if self.breaks else None


class AuditLog:
    """The audit log of one database, given its entry and head models."""

    def __init__(self, entry_model: type[AuditEntryMixin], head_model: type[AuditHeadMixin],
                 checkpoint_model: type[AuditCheckpointMixin] | None = None):
        self.entry_model = entry_model
        self.head_model = head_model
        # Where the signed heads of this log go (spe.audit.checkpoints).
        self.checkpoint_model = checkpoint_model or (
            NodeAuditCheckpoint if issubclass(entry_model, NodeAuditEntry)
            else CentralAuditCheckpoint if issubclass(entry_model, CentralAuditEntry) else None)
        # `record`'s statements, built once (Core, bound parameters): claim the head (a
        # no-op UPDATE takes the row's lock, or SQLite's write lock, and reads it, so
        # concurrent writers queue instead of forking the chain), insert the entry, move
        # the head.
        head = head_model.__table__
        self._claim = (update(head).where(head.c.id == 1).values(last_seq=head.c.last_seq)
                       .returning(head.c.last_seq, head.c.last_hash))
        self._insert = insert(entry_model.__table__)
        self._advance = (update(head).where(head.c.id == 1)
                         .values(last_seq=bindparam("new_seq"), last_hash=bindparam("new_hash")))

    def _head(self, session: Session) -> AuditHeadMixin:
        if session.get_bind().dialect.name == "sqlite":
            # SQLite has no FOR UPDATE, and the driver opens the transaction only at the
            # first write: a no-op write first takes the database's write lock, so two
            # requests never read the same head and claim the same sequence number.
            session.execute(update(self.head_model).where(self.head_model.id == 1)
                            .values(last_seq=self.head_model.last_seq))
        head = session.execute(
            select(self.head_model).where(self.head_model.id == 1).with_for_update()
        ).scalar_one_or_none()
        if head is None:
            # The very first entry: writers may race to create the head; one wins, the
            # others (savepoint rolled back) lock the winner's row and go on from it.
            try:
                with session.begin_nested():
                    session.add(self.head_model(id=1, last_seq=0, last_hash=GENESIS,
                                                base_seq=0, base_hash=GENESIS))
            except IntegrityError:
                pass
            head = session.execute(select(self.head_model).where(self.head_model.id == 1)
                                   .with_for_update()).scalar_one()
        return head

    def record(
        self,
        session: Session,
        *,
        actor: str,
        action: str,
        object: str,
        decision: str,
        reason: str = "",
        details: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> AuditEntryMixin:
        """Append one entry in the caller's transaction: it commits or rolls back with it."""
        if decision not in DECISIONS:
            raise ValueError(f"audit decision must be one of {sorted(DECISIONS)}")
        at = _utc(at or datetime.now(UTC))
        # Three Core statements, not the ORM's unit of work: every request writes an entry.
        row = session.execute(self._claim).first()
        if row is None:  # the very first entry: create the head (racing writers handled)
            self._head(session)
            row = session.execute(self._claim).one()
        last_seq, last_hash = row
        fields = {
            "seq": last_seq + 1,
            "at": at,
            "actor": actor[:320],
            "action": action[:120],
            "object": object[:500],
            "decision": decision,
            "reason": reason,
            "details": json.dumps(details or {}, sort_keys=True, default=str),
            "prev_hash": last_hash,
        }
        digest = entry_hash(**fields)
        session.execute(self._insert, {**fields, "hash": digest})
        session.execute(self._advance, {"new_seq": fields["seq"], "new_hash": digest})
        # A head the session holds as an object is now stale: reload it when next read.
        held = session.identity_map.get(Session.identity_key(self.head_model, 1))
        if held is not None:
            session.expire(held)
        return self.entry_model(**fields, hash=digest)

    def record_many(self, session: Session, entries: Iterable[Mapping[str, Any]],
                    *, at: datetime | None = None) -> int:
        """Append several entries in the caller's transaction, chained exactly as that many
        `record` calls would chain them, in three statements instead of three per entry:
        claim the head once, insert every entry (one executemany), move the head once.
        Each entry: `actor`, `action`, `object`, `decision`, optional `reason`, `details`.
        Returns how many were written."""
        batch = list(entries)
        if not batch:
            return 0
        for entry in batch:
            if entry["decision"] not in DECISIONS:
                raise ValueError(f"audit decision must be one of {sorted(DECISIONS)}")
        at = _utc(at or datetime.now(UTC))
        row = session.execute(self._claim).first()
        if row is None:
            self._head(session)
            row = session.execute(self._claim).one()
        seq, prev = row
        rows = []
        for entry in batch:
            seq += 1
            fields = {
                "seq": seq,
                "at": at,
                "actor": entry["actor"][:320],
                "action": entry["action"][:120],
                "object": entry["object"][:500],
                "decision": entry["decision"],
                "reason": entry.get("reason", ""),
                "details": json.dumps(entry.get("details") or {}, sort_keys=True, default=str),
                "prev_hash": prev,
            }
            prev = entry_hash(**fields)
            rows.append({**fields, "hash": prev})
        session.execute(self._insert, rows)
        session.execute(self._advance, {"new_seq": seq, "new_hash": prev})
        held = session.identity_map.get(Session.identity_key(self.head_model, 1))
        if held is not None:
            session.expire(held)
        return len(rows)

    def entries(self, session: Session, *, batch: int = 2000,
                after: int = -1) -> Iterator[AuditEntryMixin]:
        model = self.entry_model
        last = after
        while True:
            rows = session.execute(
                select(model).where(model.seq > last).order_by(model.seq).limit(batch)
            ).scalars().all()
            if not rows:
                return
            yield from rows
            last = rows[-1].seq
            session.expunge_all()

    def verify(self, session: Session, *, start: tuple[int, str] | None = None,
               end: tuple[int, str] | None = None) -> VerifyReport:
        """Walk the chain from its anchor (or from `start`, an entry's sequence number and
        hash already checked) to its head (or to `end`, a head read before: entries
        appended since are not walked); name every entry where it breaks."""
        report = VerifyReport()
        head = session.execute(
            select(self.head_model).where(self.head_model.id == 1)
        ).scalar_one_or_none()
        if start is None:
            start = (head.base_seq, head.base_hash) if head else (0, GENESIS)
        if end is None and head is not None:
            end = (head.last_seq, head.last_hash)
        expected_seq = start[0] + 1
        prev = start[1]
        for entry in self.entries(session, after=start[0]):
            if end is not None and entry.seq > end[0]:
                break
            report.checked += 1
            if entry.seq != expected_seq:
                report.breaks.append(ChainBreak(
                    expected_seq,
                    f"missing: found entry {entry.seq} where entry {expected_seq} belongs "
                    "(entries deleted or reordered)",
                ))
            recomputed = entry_hash(
                seq=entry.seq, at=entry.at, actor=entry.actor, action=entry.action,
                object=entry.object, decision=entry.decision, reason=entry.reason,
                details=entry.details, prev_hash=entry.prev_hash,
            )
            if recomputed != entry.hash:
                report.breaks.append(ChainBreak(entry.seq, "content does not match its hash "
                                                           "(entry edited)"))
            elif entry.prev_hash != prev:
                report.breaks.append(ChainBreak(entry.seq, "does not link to the entry before "
                                                           "it (entries deleted or reordered)"))
            prev = entry.hash
            expected_seq = entry.seq + 1
        if end is not None and (end[0] != expected_seq - 1 or end[1] != prev):
            report.breaks.append(ChainBreak(
                end[0],
                f"the chain ends at entry {expected_seq - 1} but its head records entry "
                f"{end[0]} (entries deleted from the end)",
            ))
        return report

    def prune(self, session: Session, *, retention_days: int, now: datetime | None = None) -> int:
        """Delete entries older than the retention period, keeping the chain verifiable.

        The hash of the last deleted entry becomes the new anchor. Refuses a retention
        shorter than a year (EHDS Art. 73(1)(e)).
        """
        if retention_days < 365:
            raise ValueError("audit retention must be at least 365 days (EHDS Art. 73(1)(e))")
        cutoff = _utc(now or datetime.now(UTC)) - timedelta(days=retention_days)
        model = self.entry_model
        last_old = session.execute(
            select(model).where(model.at < cutoff).order_by(model.seq.desc()).limit(1)
        ).scalar_one_or_none()
        if last_old is None:
            return 0
        head = self._head(session)
        removed = session.execute(delete(model).where(model.seq <= last_old.seq)).rowcount
        head.base_seq = last_old.seq
        head.base_hash = last_old.hash
        session.flush()
        return removed or 0
