"""A succeeded job's outputs, as a node hands them to the central airlock (the hub collects
them with `GET /api/v1/jobs/{job_id}/outputs` at the node; gateway/hub/collect.py).

`report` lists every entry the job left, with the node's verdict and reasons (its checks
knew the extract's ids and dates); `files` carries the bytes of the entries not blocked
only: what is blocked never leaves the node.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

MAX_FILES = 10_000
#: Who the hub signs for when it collects outputs: no identity provider's user id (those
#: are `user@issuer`), with a role no user needs.
COLLECTOR, COLLECTOR_ROLE = "hub:airlock", "airlock"


class OutputFile(BaseModel):
    path: str = Field(min_length=1, max_length=1024)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    data: str  # base64


class JobOutputs(BaseModel):
    job_id: str
    node_id: str
    pid: str
    user_id: str
    verdict: str
    reasons: list[str] = Field(default_factory=list)
    report: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_FILES)
    files: list[OutputFile] = Field(default_factory=list, max_length=MAX_FILES)
