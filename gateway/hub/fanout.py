"""Sending one query to every node at once over mutual TLS, each with its own timeout.

Queries go out through one `aiohttp.ClientSession` per hub process (and event loop), which
keeps connections to the nodes open between queries: every federated query makes a
request to each node, and aiohttp's C parser costs the hub about a third of the CPU per
request that httpx does. Everything else the hub sends the nodes (permits, jobs) goes
through `Fanout.client()`, an `httpx.AsyncClient`. A node that is slow, down or refusing
never fails the whole query: its result says what happened and how long the hub waited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import aiohttp
import httpx
from pydantic import ValidationError

from gateway.hub.schemas import NodeResult
from spe.errors import in_words
from spe.observability.request_id import request_id_headers
from spe.pki import ClientTLS
from spe.wire.context import CONTEXT_HEADER, ContextSigner
from spe.wire.permit import document_hash
from spe.wire.query import STATISTICS, NodeAnswer, Query, Step
from spe.wire.suspensions import SUSPENSIONS_PATH, SuspensionList

if TYPE_CHECKING:
    from gateway.hub.membership import Membership

QUERY_PATH = "/api/v1/query"
#: The context's user when the hub pushes its own documents (permits, suspensions).
PUSHER = "hub"
#: Connections the hub keeps open to one node at most (concurrent queries beyond it queue).
PER_NODE_CONNECTIONS = 64


class Fanout:
    """`nodes`: the federation's members (a `Membership` read on every use when one is set,
    so institutions added or removed at the running centre are called or not at once).
    `tls`: an SSL context, or a `spe.pki.ClientTLS` that rebuilds it when the certificates
    or the revocation list change; the pooled connections are then dropped, so none made
    before a revocation is used after it."""

    def __init__(self, nodes: dict[str, str], *, timeout: float,
                 tls: ssl.SSLContext | bool | ClientTLS = True) -> None:
        self._nodes = dict(nodes)
        self.membership: Membership | None = None
        self.timeout = timeout
        self._tls = tls
        self._generation = -1
        self._client: httpx.AsyncClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        #: Told each node's outcome of a query (the hub's metrics: spe/observability).
        self.observe: Callable[[str, str], None] | None = None

    @property
    def nodes(self) -> dict[str, str]:
        return self.membership.current() if self.membership is not None else self._nodes

    @nodes.setter
    def nodes(self, value: dict[str, str]) -> None:
        self._nodes = dict(value)

    def _ssl(self) -> ssl.SSLContext | bool:
        """The current context; a changed one retires the pooled clients first."""
        if not isinstance(self._tls, ClientTLS):
            return self._tls
        ctx = self._tls.context()
        if self._tls.generation != self._generation:
            self._generation = self._tls.generation
            old_client, old_session = self._client, self._session
            self._client = self._session = None
            self._session_loop = None
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to close
                loop = asyncio.get_running_loop()
                if old_client is not None:
                    loop.create_task(old_client.aclose())
                if old_session is not None and not old_session.closed:
                    loop.create_task(old_session.close())
        return ctx

    def client(self) -> httpx.AsyncClient:
        tls = self._ssl()
        if self._client is None:
            self._client = httpx.AsyncClient(
                verify=tls, timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
                event_hooks={"request": [_with_request_id]})
        return self._client

    def query_session(self) -> aiohttp.ClientSession:
        """The session the queries go through, made on first use in the running loop (a
        session belongs to its loop: another loop, e.g. a later test client's, gets its
        own)."""
        tls = self._ssl()
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    # No cap on all nodes together: a cap below the membership (200 before)
                    # made one query to more nodes queue for connections within each node's
                    # timeout and close others' to open new ones. Per node it is bounded.
                    ssl=tls, limit=0, limit_per_host=PER_NODE_CONNECTIONS,
                    # Idle connections are closed before uvicorn's 5 s keep-alive closes
                    # them from its side, so none is reused just as the node drops it.
                    keepalive_timeout=4),
                timeout=aiohttp.ClientTimeout(total=self.timeout))
            self._session_loop = loop
        return self._session

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._session is not None:
            if self._session_loop is asyncio.get_running_loop():
                await self._session.close()
            self._session = None
            self._session_loop = None

    async def ask(self, query: Query, context_for: Callable[[str], str], *,
                  step: Step | None = None, only: Collection[str] | None = None,
                  nodes: dict[str, str] | None = None) -> list[NodeResult]:
        """Every node's answer (or those named in `only`), with `step` for a round of a
        statistic computed in rounds. `nodes`: the members as read when the contexts were
        signed (default: read now)."""
        payload: dict = {"query": query.model_dump(mode="json")}
        if step is not None:
            payload["step"] = step.model_dump(mode="json")
        body = json.dumps(payload).encode()
        results = list(await asyncio.gather(*(
            self._ask_one(node_id, url, body, context_for(node_id))
            for node_id, url in (self.nodes if nodes is None else nodes).items()
            if only is None or node_id in only)))
        if self.observe is not None:
            for r in results:
                self.observe(r.node_id, r.status)
        return results

    async def _ask_one(self, node_id: str, url: str, body: bytes, context: str) -> NodeResult:
        start = time.perf_counter()

        def result(status, **kw) -> NodeResult:
            return NodeResult(node_id=node_id, status=status,
                              ms=round((time.perf_counter() - start) * 1000, 1), **kw)

        try:
            async with asyncio.timeout(self.timeout):
                async with self.query_session().post(
                        url.rstrip("/") + QUERY_PATH, data=body,
                        headers={CONTEXT_HEADER: context, "Content-Type": "application/json",
                                 # the same id in the node's log lines as in the hub's
                                 **request_id_headers()}) as resp:
                    status, content = resp.status, await resp.read()
        except TimeoutError:  # asyncio's, and aiohttp's timeouts (its subclasses)
            return result("timed_out", reason=f"no answer within {self.timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return result("unreachable", reason=f"{_error_name(exc)}: {exc}"[:300])
        if status in (401, 403):
            return result("refused", reason=_detail_of(content))
        if status != 200:
            return result("error", reason=f"HTTP {status}: {_detail_of(content)}")
        try:
            answer = NodeAnswer.model_validate_json(content)
        except ValidationError:
            return result("error", reason="the node's answer is not a valid NodeAnswer")
        if answer.kind in STATISTICS:  # nothing to pool when its rules kept it back
            suppressed = answer.statistic is None
        else:
            suppressed = (answer.total is not None and answer.total.suppressed
                          and all(c.suppressed for c in answer.cells))
        return result("suppressed" if suppressed else "answered", answer=answer)


async def push(fanout: Fanout, signer: ContextSigner, node_ids: list[str], path: str,
               body: dict, subject: str, permit: str | None = None) -> dict[str, str]:
    """PUT `body` to `path` at each node, with a context naming `subject` (the SHA-256 the
    node computes of what is pushed); node -> outcome."""

    async def one(node_id: str) -> tuple[str, str]:
        url = fanout.nodes.get(node_id)
        if url is None:
            return node_id, "not a node of this hub"
        context = signer.sign(user=PUSHER, roles=[PUSHER], tier="permit", query_hash=subject,
                              node_id=node_id, permit=permit)
        try:
            resp = await fanout.client().put(f"{url.rstrip('/')}{path}", json=body,
                                             headers={CONTEXT_HEADER: context})
        except httpx.HTTPError as exc:
            return node_id, f"unreachable: {type(exc).__name__}"
        if resp.status_code != 200:
            return node_id, f"refused: HTTP {resp.status_code}: {_detail(resp)}"
        return node_id, "delivered"

    return dict(await asyncio.gather(*(one(n) for n in node_ids)))


async def push_permit(fanout: Fanout, node_ids: list[str], pid: str, document: str, *,
                      signer: ContextSigner) -> dict[str, str]:
    """PUT the permit's signed document to each node concerned; node -> outcome."""
    return await push(fanout, signer, node_ids, f"/api/v1/permits/{pid}",
                      {"document": document}, document_hash(document), permit=pid)


async def push_suspensions(fanout: Fanout, signer: ContextSigner,
                           suspensions: SuspensionList,
                           node_ids: list[str] | None = None) -> dict[str, str]:
    """PUT the central suspension list to the nodes (default: all); node -> outcome."""
    return await push(fanout, signer, list(fanout.nodes) if node_ids is None else node_ids,
                      SUSPENSIONS_PATH, suspensions.model_dump(mode="json"),
                      suspensions.digest())


async def _with_request_id(request: httpx.Request) -> None:
    """Every call the hub makes to a node on behalf of a request carries its id."""
    request.headers.update(request_id_headers())


def _error_name(exc: BaseException) -> str:
    """The kind of failure as the hub has always named it (httpx's names, which the query
    page and its users know): a node that cannot be connected to is a ConnectError."""
    if isinstance(exc, (aiohttp.ClientConnectorError, ConnectionRefusedError)):
        return "ConnectError"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "RemoteProtocolError"
    return type(exc).__name__


def _detail(resp: httpx.Response) -> str:
    return _detail_of(resp.content)


def _detail_of(content: bytes) -> str:
    """What an error response says: its JSON `detail`, or the start of its text."""
    try:
        body = json.loads(content)
    except ValueError:
        return content.decode(errors="replace")[:200]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list) and all(isinstance(d, dict) for d in detail):
        return in_words(detail)[:300]  # a validation error's fields, in words
    return str(detail)[:300]


__all__ = ["CONTEXT_HEADER", "Fanout", "push", "push_permit", "push_suspensions"]
