"""The hub-node contract of an institution's code review: what the hub asks a node on an
approver's behalf and what the node answers. Both sides read this module; neither imports
the other.

A node whose policy wants a job's code approved first (policies/jobs `code_review`:
"approval") holds the job (`spe.wire.jobs.AWAITING_APPROVAL`) until an approver of that
institution approves the code's SHA-256 for the permit; the approval holds for every later
job of that permit with the same code. The approver acts at the centre (as for permits);
the hub passes each step to the node with a context naming the approver's institution.

- `GET REVIEWS_PATH`: the code awaiting review at the node (`CodeReviewSummary` list);
  the context's `qh` is `review_hash("list")`.
- `GET REVIEWS_PATH/{pid}/{sha256}`: one code (`CodeReviewDetail`: its files, a unified
  diff against the version of the permit approved last, the researchers, the decisions so
  far); `qh` is `review_hash("read", pid, sha256)`.
- `POST REVIEWS_PATH/{pid}/{sha256}` (`CodeDecision`): approve (the held jobs go to the
  workers) or reject (they fail with the reason); `qh` is `review_hash("decide", pid,
  sha256, decision, reason)`, so a context cannot carry another decision.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, Field

REVIEWS_PATH = "/api/v1/code-reviews"

#: The node's policy choices (policies/jobs `code_review`).
REVIEW_MODES = ("none", "approval", "registry")

MAX_REASON = 500
#: What a review shows of the code (the rest is named, not shown).
MAX_SHOWN_FILE_BYTES = 256 * 1024
MAX_SHOWN_FILES = 200
MAX_DIFF_CHARS = 512 * 1024


def review_hash(action: str, pid: str = "", sha256: str = "", decision: str = "",
                reason: str = "") -> str:
    """What the hub's context names for one review call (its `qh`)."""
    canonical = json.dumps([action, pid, sha256, decision, reason], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def awaiting_reason(sha256: str, node_id: str) -> str:
    return f"the code (sha256 {sha256}) awaits approval by {node_id}'s approvers"


def rejected_reason(sha256: str, node_id: str, reason: str) -> str:
    one_line = " ".join(reason.split())[:MAX_REASON] or "no reason given"
    return f"the code (sha256 {sha256}) was rejected by {node_id}'s approvers: {one_line}"


class CodeDecision(BaseModel):
    decision: Literal["approve", "reject"]
    reason: str = Field(min_length=1, max_length=MAX_REASON)


class HeldJob(BaseModel):
    job_id: str
    user_id: str
    created_at: str


class CodeReviewSummary(BaseModel):
    node_id: str
    pid: str
    code_sha256: str
    researchers: list[str]
    jobs: list[HeldJob]
    # The code approved last under this permit, which the diff is against (None: first).
    previous_sha256: str | None = None


class CodeFile(BaseModel):
    path: str
    size: int
    text: str | None = None  # None: binary, or over MAX_SHOWN_FILE_BYTES (named only)
    note: str = ""


class PastDecision(BaseModel):
    code_sha256: str
    decision: Literal["approve", "reject"]
    approver: str
    reason: str
    decided_at: str


class CodeReviewDetail(CodeReviewSummary):
    files: list[CodeFile]
    diff: str  # unified diff against previous_sha256's code ("" when none or unchanged)
    decisions: list[PastDecision]  # this permit's, newest first
    decided: Literal["approve", "reject"] | None = None  # this code's, if decided


class DecisionOutcome(BaseModel):
    node_id: str
    pid: str
    code_sha256: str
    decision: Literal["approve", "reject"]
    released: list[str]  # job ids queued for the workers
    failed: list[str]  # job ids failed with the reason


__all__ = [
    "MAX_REASON", "REVIEWS_PATH", "REVIEW_MODES", "CodeDecision", "CodeFile",
    "CodeReviewDetail", "CodeReviewSummary", "DecisionOutcome", "HeldJob", "PastDecision",
    "awaiting_reason", "rejected_reason", "review_hash",
]
