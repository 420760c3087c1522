"""Paging parameters every list shares, bounded by the schema.

An offset or a cursor beyond a 64-bit signed integer (SQLite's INTEGER, PostgreSQL's
bigint) reached the database driver, which raised (a 500): here it is a 422 naming the
bound, before any query runs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

#: The largest offset or cursor a list accepts: what the databases' integers hold.
MAX_POSITION = 2**63 - 1

Offset = Annotated[int, Query(ge=0, le=MAX_POSITION,
                              description="rows to skip (at most 2^63 - 1)")]
After = Annotated[int, Query(ge=0, le=MAX_POSITION,
                             description="the last sequence number seen (at most 2^63 - 1)")]

__all__ = ["MAX_POSITION", "After", "Offset"]
