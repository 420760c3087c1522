"""The request id: one per incoming request, taken from `X-Request-ID` when it is
well-formed (a proxy's or the hub's), else made here; returned in the response and sent
on by the hub with every call it makes to the nodes, so one federated query's log lines
share it at the hub and at each node.

Kept in context variables: a request's task and the worker threads it hands work to
(`run_in_threadpool` copies the context) see their own request's id.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

REQUEST_ID_HEADER = "X-Request-ID"
#: What an incoming id may look like: a UUID, a proxy's hex id, `hub-...`. Anything else
#: (too long, spaces, quotes, control characters that could forge a log line) is replaced.
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{7,127}")

request_id_var: ContextVar[str | None] = ContextVar("spe_request_id", default=None)
user_var: ContextVar[str | None] = ContextVar("spe_request_user", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def accepted_request_id(value: str | None) -> str:
    """The incoming id if well-formed, else a new one."""
    if value and _WELL_FORMED.fullmatch(value):
        return value
    return new_request_id()


def current_request_id() -> str | None:
    return request_id_var.get()


def request_id_headers() -> dict[str, str]:
    """The header that carries the current request's id on an outgoing call ({} outside a
    request: background work)."""
    rid = request_id_var.get()
    return {REQUEST_ID_HEADER: rid} if rid else {}
