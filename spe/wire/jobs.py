"""The hub-node job contract: what the hub sends a node, what a node answers, and what a
researcher may learn of a job before its outputs are reviewed. Both sides read this
module; neither imports the other.

- `POST /api/v1/jobs` (`JOBS_PATH`): a `JobSubmission`, whose `code` is base64 of a
  gzipped tar of the code folder (`spe.wire.code_archive`), at most `MAX_ARCHIVE_BYTES`
  packed and `MAX_CODE_BYTES` unpacked in `MAX_CODE_FILES` entries; the hub's signed
  context (`spe.wire.context.CONTEXT_HEADER`) names the SHA-256 of the decoded code. A node
  answers 202 with a `JobAccepted`.
- `GET /api/v1/jobs/{id}` and `POST .../cancel`: a `JobStatus`. It carries the runner's
  own words about the job only (`state`, a `reason` from `RUNNER_REASONS` or about who
  cancelled it, and how the extract was made): never the job's text, the names of its
  outputs, its exit code or signal, or a count of the data. What the job printed is one
  of its outputs (`LOG_NAME`), reviewed in the airlock with the rest.
- `GET /api/v1/jobs/{id}/outputs`: the outputs for the central airlock
  (`spe.wire.outputs.JobOutputs`); a job that ran and failed sends its log only.

Refusals are `{"error", "detail"}` with the types below (`spe.errors`).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from spe.errors import Conflict, Forbidden, SPEError
from spe.sandbox.environments import DEFAULT as DEFAULT_ENVIRONMENT
from spe.sandbox.environments import NAME_PATTERN as ENVIRONMENT_PATTERN
from spe.sandbox.limits import RequestedLimits

JOBS_PATH = "/api/v1/jobs"

MiB = 1024 * 1024
#: The packed code (a tar.gz) either side accepts; base64 makes it `MAX_CODE_B64` chars.
MAX_ARCHIVE_BYTES = 50 * MiB
MAX_CODE_B64 = 4 * -(-MAX_ARCHIVE_BYTES // 3)
#: The code folder unpacked, and its entries.
MAX_CODE_BYTES = 50 * MiB
MAX_CODE_FILES = 10_000
MAX_ENTRY_CHARS = 255

# --- states ------------------------------------------------------------------------------
QUEUED = "queued"
STAGING = "staging"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"
#: Held at a node whose policy wants the code approved first (policies/jobs
#: `code_review`): accepted, not queued to the workers until an approver of that
#: institution approves the code's SHA-256 for the permit (spe.wire.code_review).
AWAITING_APPROVAL = "awaiting_approval"

ACTIVE = frozenset({STAGING, RUNNING})
FINAL = frozenset({SUCCEEDED, FAILED, TIMED_OUT, CANCELLED})
STATES = frozenset({QUEUED, AWAITING_APPROVAL}) | ACTIVE | FINAL
#: States whose job ran in the sandbox and may have a log for the airlock.
RAN = frozenset({SUCCEEDED, FAILED, TIMED_OUT})

State = Literal["queued", "awaiting_approval", "staging", "running", "succeeded", "failed",
                "timed_out", "cancelled"]

# --- the runner's own words --------------------------------------------------------------
#: The file the runner writes at the top of a job's outputs once the sandbox has ended:
#: the end of the job's stdout and stderr. Whatever the job itself wrote there is replaced.
LOG_NAME = "job-log.txt"

EXITED_WITH_ERROR = "exited with an error"
#: A limit the runner itself saw hit (spe.sandbox limit names), in its words.
LIMIT_REASONS = {
    "wall": "time limit", "cpu": "CPU time limit", "memory": "memory limit",
    "processes": "process limit", "output": "output quota", "scratch": "scratch quota",
    "file_size": "file size limit", "open_files": "open files limit",
}
STAGING_FAILED = "the extract could not be staged (the node's audit has the details)"
RISK_REFUSED = "the policy refuses a job over this extract at its re-identification risk"
BAD_CODE = "the job's code archive is not valid"
NO_SANDBOX = "the sandbox could not start the job"
NODE_ERROR = "the node failed while running the job"
TAKEN = "the job was taken from its worker"
WORKER_LOST = "worker lost"
RUNNER_REASONS = frozenset({EXITED_WITH_ERROR, *LIMIT_REASONS.values(), STAGING_FAILED,
                            RISK_REFUSED, BAD_CODE, NO_SANDBOX, NODE_ERROR, TAKEN,
                            WORKER_LOST, f"{WORKER_LOST}; queued again"})
#: Who or what cancelled a job: a user id as the hub vouched for it, or the permit's stop.
_CANCELLED = re.compile(r"cancelled by [^\s;]{1,320}|permit (suspended|revoked)")
#: An institution's code review (spe.wire.code_review): a human's decision about the code
#: the researcher sent, not anything computed from the data, so its words are told.
_CODE_REVIEW = re.compile(
    r"the code \(sha256 [0-9a-f]{64}\) (awaits approval by [A-Za-z0-9_.-]{1,64}'s approvers"
    r"|was rejected by [A-Za-z0-9_.-]{1,64}'s approvers: [^\r\n]{1,500})")
NOT_TOLD = "(a reason outside the job contract, not shown)"


def public_reason(reason: str) -> str:
    """`reason` if it is in the contract's words (one of `RUNNER_REASONS`, with the note
    that the job was taken from its worker, or who cancelled it), else `NOT_TOLD`: words
    from an older version's record or a misbehaving node never reach a researcher."""
    first, _, rest = reason.partition("; ")
    if (reason == "" or reason in RUNNER_REASONS or _CANCELLED.fullmatch(reason)
            or _CODE_REVIEW.fullmatch(reason)):
        return reason
    if rest == TAKEN and first in RUNNER_REASONS:
        return reason
    return NOT_TOLD


# --- refusals ----------------------------------------------------------------------------
class JobRefused(Forbidden):
    """A policy refused the job (permit, targets, limits)."""

    error = "refused_by_policy"


class InvalidJob(SPEError):
    status_code = 422
    error = "invalid_job"


class CodeTooLarge(SPEError):
    status_code = 413
    error = "code_too_large"


#: For the submit routes' OpenAPI: the refusal of code over the limit.
TOO_LARGE_RESPONSE = {413: {"description": "code_too_large: the packed code is over "
                                           "MAX_ARCHIVE_BYTES"}}


class NoOutputs(Conflict):
    """The job has nothing for the airlock (it did not run, or was cancelled)."""

    error = "no_outputs"


def decode_code(code_b64: str) -> bytes:
    """The packed code of a submission, refused over the one limit both sides apply (a
    413; its base64 length is looked at before decoding) or when not base64 (a 422)."""
    too_large = CodeTooLarge(f"the packed code is over the limit of "
                             f"{MAX_ARCHIVE_BYTES // MiB} MiB ({MAX_ARCHIVE_BYTES} bytes)")
    if len(code_b64) > MAX_CODE_B64:
        raise too_large
    try:
        code = base64.b64decode(code_b64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidJob("code: not base64 (a tar.gz of the code folder)") from None
    if len(code) > MAX_ARCHIVE_BYTES:
        raise too_large
    return code


# --- what travels ------------------------------------------------------------------------
class JobSubmission(BaseModel):
    """The hub to a node. `code` is read with `decode_code` (its limit, a 413)."""

    # base64 of a tar.gz (spe.wire.code_archive); the schema states the limit, and
    # `decode_code` enforces it with a 413 rather than a validation error.
    code: str = Field(min_length=4, json_schema_extra={"maxLength": MAX_CODE_B64})
    entry: str = Field(default="main.py", min_length=1, max_length=MAX_ENTRY_CHARS)
    limits: RequestedLimits = Field(default_factory=dict)
    # The analysis environment the code runs in (spe.sandbox.environments); the node's
    # policy decides whether it runs that one. Absent (a hub of an older version): the
    # default, the one environment there was.
    environment: str = Field(default=DEFAULT_ENVIRONMENT, pattern=ENVIRONMENT_PATTERN,
                             max_length=32)


class JobAccepted(BaseModel):
    job_id: str
    state: State


Word = Annotated[str, StringConstraints(max_length=40, pattern=r"^[A-Za-z0-9_.:+() -]*$")]


class StagingSummary(BaseModel):
    """How the job's extract was made, as the researcher may read it unreviewed: the
    policy's choices and what layer 3 generalised (a job must know it to read the
    extract), never what the extract holds (no counts, no risk figures). Every field is
    a short word or a flag, so that not even a misbehaving node can carry data in it."""

    model_config = ConfigDict(extra="ignore")

    data_version: Word = ""
    form: Word = ""
    layers: list[Word] = Field(default_factory=list, max_length=10)
    pseudonymised: bool | None = None
    key: Word = ""
    cached: bool | None = None
    staged_at: Word | None = None
    risk_ok: bool | None = None  # the policy's threshold holds over the extract
    # quasi-identifier -> generalisation level (spe.anonymize.risk)
    generalised: dict[Word, Annotated[int, Field(ge=0, le=10)]] = Field(
        default_factory=dict, max_length=10)
    suppressed: bool | None = None  # whether layer 3 removed patients (not how many)
    allowed: bool | None = None  # whether policies/jobs lets a job run over it


#: Staging's steps in order, with the share of the whole each starts at (the images are
#: most of the work). A step's own progress fills its share.
STAGING_STEPS = {"dicom": (0, 80), "fhir": (80, 15), "risk": (95, 5)}
#: Percent is shown in steps of this, so that it says how far staging is, not how many
#: files the extract holds.
PERCENT_STEP = 5


class StagingProgress(BaseModel):
    """How far a job's staging is, while it stages: the step (`STAGING_STEPS`) and the
    percent of the whole, in steps of `PERCENT_STEP`. No counts."""

    model_config = ConfigDict(extra="ignore")

    step: Literal["dicom", "fhir", "risk"]
    percent: int = Field(ge=0, le=100)


def staging_percent(step: str, done: int, total: int) -> int:
    """The whole staging's percent at `done` of `total` of `step`, in steps of 5."""
    start, share = STAGING_STEPS.get(step, (0, 0))
    part = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
    whole = start + share * part
    return int(whole // PERCENT_STEP * PERCENT_STEP)


class JobStatus(BaseModel):
    """A job at a node, as its researcher, an output checker and the hub see it."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    node_id: str
    pid: str
    state: State
    attempts: int = 0
    reason: str = ""  # the runner's words (`public_reason`), or who cancelled it
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    staging: StagingSummary | None = None
    progress: StagingProgress | None = None  # while staging


__all__ = [
    "ACTIVE", "AWAITING_APPROVAL", "DEFAULT_ENVIRONMENT", "ENVIRONMENT_PATTERN", "FINAL",
    "JOBS_PATH", "LOG_NAME", "MAX_ARCHIVE_BYTES", "MAX_CODE_B64", "MAX_CODE_BYTES",
    "MAX_CODE_FILES", "RAN", "RUNNER_REASONS", "STATES", "CodeTooLarge", "InvalidJob",
    "JobAccepted", "JobRefused", "JobStatus", "JobSubmission", "NoOutputs", "StagingProgress",
    "StagingSummary", "decode_code", "public_reason", "staging_percent",
]
