"""One call from the hub to a node's jobs API, shared by the job service (gateway/hub/jobs.py)
and the airlock's collection (gateway/hub/collect.py), which calls the nodes the same way."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx

from gateway.hub.fanout import _detail
from spe.wire.context import CONTEXT_HEADER
from spe.wire.jobs import JOBS_PATH

if TYPE_CHECKING:
    from gateway.hub.service import Hub


async def call_node(hub: Hub, node_id: str, method: str, path: str, context: str, *,
                json: Any = None, timeout: float | None = None) -> tuple[int, Any]:
    """One call to a node: (HTTP status, body) or (0, why it could not be reached)."""
    url = hub.fanout.nodes.get(node_id)
    if url is None:
        return 0, "not a node of this hub"
    try:
        resp = await asyncio.wait_for(hub.fanout.client().request(
            method, url.rstrip("/") + path, json=json, headers={CONTEXT_HEADER: context},
            timeout=timeout or hub.fanout.timeout), timeout=timeout or hub.fanout.timeout)
    except (TimeoutError, httpx.TimeoutException):
        return 0, "timed out"
    except httpx.HTTPError as exc:
        return 0, f"unreachable: {type(exc).__name__}"
    if resp.is_success:
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return 502, "the node's answer is not JSON"
    return resp.status_code, _detail(resp)


__all__ = ["JOBS_PATH", "call_node"]
