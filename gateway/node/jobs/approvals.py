"""Code an institution vets before it runs here: the decisions (SQL on `code_approvals`
and the held jobs) and what an approver reads (the code's files, a diff).

policies/jobs `decision` says per node whether code needs its approvers' approval
("approval"), must be in the node's registry ("registry") or neither ("none"). A job whose
code awaits approval is held (`AWAITING_APPROVAL`) and never given to a worker; an
approval queues every held job of that permit with that code, a rejection fails them with
the approver's reason. The newest decision for (permit, code) holds for later jobs.
"""

from __future__ import annotations

import difflib
import hashlib
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.node.jobs.models import CodeApproval, NodeJob
from spe.wire.code_archive import CodeArchiveError, read_code
from spe.wire.code_review import (
    MAX_DIFF_CHARS,
    MAX_SHOWN_FILE_BYTES,
    MAX_SHOWN_FILES,
    CodeFile,
    HeldJob,
    PastDecision,
)
from spe.wire.jobs import AWAITING_APPROVAL, FAILED, QUEUED


def utcnow() -> datetime:
    return datetime.now(UTC)


def sha256_of(code: bytes) -> str:
    """The code's SHA-256, as the hub's context named it (`qh`) when the job came."""
    return hashlib.sha256(code).hexdigest()


def latest(session: Session, pid: str, sha256: str) -> CodeApproval | None:
    """The decision that holds for this code under this permit (the newest)."""
    return session.execute(
        select(CodeApproval).where(CodeApproval.pid == pid, CodeApproval.code_sha256 == sha256)
        .order_by(CodeApproval.id.desc()).limit(1)).scalar_one_or_none()


def last_approved(session: Session, pid: str, *, other_than: str | None = None
                  ) -> CodeApproval | None:
    """The code approved last under the permit (the base of a new version's diff)."""
    query = select(CodeApproval).where(CodeApproval.pid == pid,
                                       CodeApproval.decision == "approve")
    if other_than is not None:
        query = query.where(CodeApproval.code_sha256 != other_than)
    return session.execute(query.order_by(CodeApproval.id.desc()).limit(1)).scalar_one_or_none()


def decisions(session: Session, pid: str) -> list[PastDecision]:
    rows = session.execute(select(CodeApproval).where(CodeApproval.pid == pid)
                           .order_by(CodeApproval.id.desc()).limit(100)).scalars()
    return [PastDecision(code_sha256=r.code_sha256, decision=r.decision,  # type: ignore[arg-type]
                         approver=r.approver, reason=r.reason,
                         decided_at=r.decided_at.isoformat()) for r in rows]


def held(session: Session, pid: str | None = None, sha256: str | None = None
         ) -> list[NodeJob]:
    """Jobs awaiting approval, oldest first (of one permit and code, if given)."""
    query = select(NodeJob).where(NodeJob.state == AWAITING_APPROVAL)
    if pid is not None:
        query = query.where(NodeJob.pid == pid)
    jobs = list(session.execute(query.order_by(NodeJob.created_at, NodeJob.id)).scalars())
    if sha256 is not None:  # the hash is not a column: computed from each held archive
        jobs = [j for j in jobs if sha256_of(j.code) == sha256]
    return jobs


def held_jobs(jobs: list[NodeJob]) -> list[HeldJob]:
    return [HeldJob(job_id=j.id, user_id=j.user_id, created_at=j.created_at.isoformat())
            for j in jobs]


def record(session: Session, *, pid: str, sha256: str, code: bytes, decision: str,
           approver: str, reason: str, now: datetime | None = None) -> CodeApproval:
    row = CodeApproval(pid=pid, code_sha256=sha256, decision=decision, approver=approver,
                       reason=reason, code=code, decided_at=now or utcnow())
    session.add(row)
    session.flush()
    return row


def release(session: Session, job_ids: list[str]) -> list[str]:
    """Held jobs to the workers (queued); only those still held (a cancelled one stays)."""
    if not job_ids:
        return []
    return list(session.execute(
        update(NodeJob).where(NodeJob.id.in_(job_ids), NodeJob.state == AWAITING_APPROVAL)
        .values(state=QUEUED).returning(NodeJob.id)
        .execution_options(synchronize_session=False)).scalars())


def fail(session: Session, job_ids: list[str], reason: str,
         now: datetime | None = None) -> list[str]:
    """Held jobs ended as failed with the approvers' reason; they never ran."""
    if not job_ids:
        return []
    return list(session.execute(
        update(NodeJob).where(NodeJob.id.in_(job_ids), NodeJob.state == AWAITING_APPROVAL)
        .values(state=FAILED, reason=reason, finished_at=now or utcnow())
        .returning(NodeJob.id)
        .execution_options(synchronize_session=False)).scalars())


# ---- what the approver reads ------------------------------------------------------------

def _text(data: bytes) -> str | None:
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def files_of(code: bytes) -> list[CodeFile]:
    """The archive's files, each as text where it is text and small enough to show."""
    try:
        files = read_code(code)
    except CodeArchiveError as exc:
        return [CodeFile(path="(archive)", size=len(code), note=f"not readable: {exc}")]
    out = []
    for index, (path, data) in enumerate(files.items()):
        text = _text(data) if len(data) <= MAX_SHOWN_FILE_BYTES else None
        note = ("" if text is not None else
                "over the size shown" if len(data) > MAX_SHOWN_FILE_BYTES else "binary")
        if index >= MAX_SHOWN_FILES:
            text, note = None, "not shown: too many files"
        out.append(CodeFile(path=path, size=len(data), text=text, note=note))
    return out


def _lines(code: bytes | None) -> dict[str, list[str]]:
    if code is None:
        return {}
    try:
        files = read_code(code)
    except CodeArchiveError:
        return {"(archive)": ["(not readable)\n"]}
    out = {}
    for path, data in files.items():
        text = _text(data)
        lines = (text.splitlines() if text is not None
                 else [f"(binary, {len(data)} bytes, sha256 "
                       f"{hashlib.sha256(data).hexdigest()})"])
        out[path] = [line + "\n" for line in lines]
    return out


def diff(before: bytes | None, after: bytes) -> str:
    """A unified diff of every file (difflib), from the approved version to this one."""
    if before is None:
        return ""
    old, new = _lines(before), _lines(after)
    chunks: list[str] = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path, []), new.get(path, [])
        if a == b:
            continue
        chunks.extend(difflib.unified_diff(
            a, b, fromfile=f"a/{path}" if path in old else "/dev/null",
            tofile=f"b/{path}" if path in new else "/dev/null"))
    text = "".join(chunks)
    if len(text) > MAX_DIFF_CHARS:
        text = text[:MAX_DIFF_CHARS] + "\n... (diff cut at the size shown)\n"
    return text


__all__ = ["decisions", "diff", "fail", "files_of", "held", "held_jobs", "last_approved",
           "latest", "record", "release", "sha256_of"]
