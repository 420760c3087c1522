"""Sending one query to every node at once over mutual TLS, each with its own timeout.

One `httpx.AsyncClient` per hub process keeps connections to the nodes open between
queries. A node that is slow, down or refusing never fails the whole query: its result
says what happened and how long the hub waited.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

import httpx
from pydantic import ValidationError

from gateway.hub.schemas import NodeResult
from spe.wire.query import NodeAnswer, Query

QUERY_PATH = "/api/v1/query"
CONTEXT_HEADER = "X-SPE-Hub-Context"


class Fanout:
    def __init__(self, nodes: dict[str, str], *, timeout: float,
                 tls: ssl.SSLContext | bool = True) -> None:
        self.nodes = dict(nodes)
        self.timeout = timeout
        self._tls = tls
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                verify=self._tls, timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=100))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ask(self, query: Query, context_for: Callable[[str], str]) -> list[NodeResult]:
        body = {"query": query.model_dump(mode="json")}
        return list(await asyncio.gather(*(
            self._ask_one(node_id, url, body, context_for(node_id))
            for node_id, url in self.nodes.items())))

    async def _ask_one(self, node_id: str, url: str, body: dict, context: str) -> NodeResult:
        start = time.perf_counter()

        def result(status, **kw) -> NodeResult:
            return NodeResult(node_id=node_id, status=status,
                              ms=round((time.perf_counter() - start) * 1000, 1), **kw)

        try:
            resp = await asyncio.wait_for(
                self.client().post(url.rstrip("/") + QUERY_PATH, json=body,
                                   headers={CONTEXT_HEADER: context}),
                timeout=self.timeout)
        except (TimeoutError, httpx.TimeoutException):
            return result("timed_out", reason=f"no answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return result("unreachable", reason=f"{type(exc).__name__}: {exc}"[:300])
        if resp.status_code in (401, 403):
            return result("refused", reason=_detail(resp))
        if resp.status_code != 200:
            return result("error", reason=f"HTTP {resp.status_code}: {_detail(resp)}")
        try:
            answer = NodeAnswer.model_validate_json(resp.content)
        except ValidationError:
            return result("error", reason="the node's answer is not a valid NodeAnswer")
        suppressed = (answer.total is not None and answer.total.suppressed
                      and all(c.suppressed for c in answer.cells))
        return result("suppressed" if suppressed else "answered", answer=answer)


async def push_permit(fanout: Fanout, node_ids: list[str], pid: str,
                      document: str) -> dict[str, str]:
    """PUT the permit's signed document to each node concerned; node -> outcome."""

    async def one(node_id: str) -> tuple[str, str]:
        url = fanout.nodes.get(node_id)
        if url is None:
            return node_id, "not a node of this hub"
        try:
            resp = await fanout.client().put(f"{url.rstrip('/')}/api/v1/permits/{pid}",
                                             json={"document": document})
        except httpx.HTTPError as exc:
            return node_id, f"unreachable: {type(exc).__name__}"
        if resp.status_code != 200:
            return node_id, f"refused: HTTP {resp.status_code}: {_detail(resp)}"
        return node_id, "delivered"

    return dict(await asyncio.gather(*(one(n) for n in node_ids)))


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return str(detail)[:300]


__all__ = ["Fanout", "push_permit"]
