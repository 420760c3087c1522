"""The merged membership the hub's Fanout calls, and the admins' changes to it."""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlsplit

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway.hub.membership import repository
from gateway.hub.membership.schemas import NodeOut
from spe.audit import AuditLog
from spe.db import session_scope
from spe.errors import Conflict, NotFound, SPEError

log = logging.getLogger("spe.hub")
#: How long a worker process of the centre may serve from its copy before it reads the
#: table again (a change through this process is seen at once: `invalidate`).
REFRESH_SECONDS = 1.0


class BadNodeUrl(SPEError):
    status_code = 422
    error = "bad_node_url"


class Membership:
    """node id -> base URL: SPE_FEDERATION_NODES with the admins' changes over it."""

    def __init__(self, sessions: sessionmaker[Session], configured: dict[str, str], *,
                 refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.sessions = sessions
        self.configured = dict(configured)
        self.refresh_seconds = refresh_seconds
        self._nodes: dict[str, str] | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def current(self) -> dict[str, str]:
        now = time.monotonic()
        if self._nodes is not None and now - self._read_at < self.refresh_seconds:
            return self._nodes
        with self._lock:
            if self._nodes is None or time.monotonic() - self._read_at >= self.refresh_seconds:
                try:
                    with session_scope(self.sessions) as session:
                        self._nodes = {n.node_id: n.url for n in self._merged(session)}
                except SQLAlchemyError as exc:
                    # Fail closed: a node removed in the table must not come back from
                    # the variable because the table could not be read.
                    log.error("federation membership unreadable (%s): %s",
                              type(exc).__name__, "keeping the last one read"
                              if self._nodes is not None else "calling no node")
                    if self._nodes is None:
                        return {}
                self._read_at = time.monotonic()
        return self._nodes or {}

    def invalidate(self) -> None:
        self._read_at = 0.0

    def listing(self, session: Session) -> list[NodeOut]:
        return self._merged(session)

    def _merged(self, session: Session) -> list[NodeOut]:
        out = {node_id: NodeOut(node_id=node_id, url=url, source="environment")
               for node_id, url in self.configured.items()}
        for row in repository.changes(session):
            if row.state == "removed":
                out.pop(row.node_id, None)
            elif row.url:
                out[row.node_id] = NodeOut(node_id=row.node_id, url=row.url, source="admin")
        return [out[k] for k in sorted(out)]

    def add(self, session: Session, node_id: str, url: str, *, actor: str, reason: str,
            audit: AuditLog, production: bool) -> NodeOut:
        url = _check_url(url, production=production)
        current = {n.node_id: n for n in self._merged(session)}
        if node_id in current and current[node_id].url == url:
            raise Conflict(f"{node_id} is already a member at {url}")
        repository.set_state(session, node_id, state="member", url=url, actor=actor)
        audit.record(session, actor=actor, action="federation.add", object=node_id,
                     decision="allow", reason=reason or "-",
                     details={"url": url, "replaces": current[node_id].url
                              if node_id in current else None})
        return NodeOut(node_id=node_id, url=url, source="admin")

    def remove(self, session: Session, node_id: str, *, actor: str, reason: str,
               audit: AuditLog) -> None:
        current = {n.node_id: n for n in self._merged(session)}
        if node_id not in current:
            raise NotFound(f"{node_id} is not a member of the federation "
                           f"(`spe federation list`)")
        repository.set_state(session, node_id, state="removed", url=None, actor=actor)
        audit.record(session, actor=actor, action="federation.remove", object=node_id,
                     decision="allow", reason=reason or "-",
                     details={"url": current[node_id].url})


def _check_url(url: str, *, production: bool) -> str:
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise BadNodeUrl(f"{url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise BadNodeUrl(f"{url!r} is not an https:// URL of the node")
    if parts.scheme != "https" and production:
        raise BadNodeUrl(f"{url!r} is plain HTTP; nodes are called over mutual TLS: use "
                         f"https://")
    if parts.query or parts.fragment or parts.username:
        raise BadNodeUrl(f"{url!r}: give the node's base URL only (no query, fragment or "
                         f"user)")
    return url.strip().rstrip("/")


__all__ = ["BadNodeUrl", "Membership"]
