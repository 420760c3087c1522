"""The harvest rounds this central service runs (scheduled, or asked for with
`POST /api/v1/catalogue/harvest`): the one running now with its progress per node, and
the last one finished with each node's outcome and, for a failure, its reason.

Held in memory: it is this process's work. What lasts (each node's last harvest time and
datasets) is read from the catalogue itself (catalogue.service.harvest_status).
"""

from __future__ import annotations

import threading
from copy import deepcopy
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from catalogue import repository
from catalogue.harvester import HarvestStep
from catalogue.schemas import HarvestedNode, HarvestStatusOut
from spe.errors import Conflict


def _now() -> str:
    return datetime.now(UTC).isoformat()


class HarvestStatus:
    """Thread-safe: the harvest runs in a worker thread, the API reads from the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[str, Any] | None = None
        self._last: dict[str, Any] | None = None

    def running(self) -> bool:
        with self._lock:
            return self._current is not None

    def begin(self, urls: list[str], trigger: str) -> bool:
        """Start a round; False when one is running already (that one goes on)."""
        with self._lock:
            if self._current is not None:
                return False
            self._current = {
                "trigger": trigger, "state": "running", "started_at": _now(),
                "finished_at": None, "nodes_total": len(urls), "nodes_done": 0, "error": None,
                "nodes": [{"url": u, "phase": "waiting", "datasets": 0, "error": None,
                           "at": None} for u in urls],
            }
            return True

    def step(self, step: HarvestStep) -> None:
        """The harvest's progress callback (catalogue.harvester.HarvestProgress)."""
        with self._lock:
            current = self._current
            if current is None:
                return
            current["nodes_done"] = max(current["nodes_done"], step.nodes_done)
            current["nodes_total"] = step.nodes_total
            node = next((n for n in current["nodes"] if n["url"] == step.node), None)
            if node is None:
                node = {"url": step.node}
                current["nodes"].append(node)
            node.update(phase=step.phase, datasets=step.datasets, error=step.error or None,
                        at=_now())

    def end(self, error: str | None = None) -> None:
        """The round is over; `error` when it failed as a whole (the database was down)."""
        with self._lock:
            current = self._current
            if current is None:
                return
            failed = error is not None or any(n["phase"] == "failed" for n in current["nodes"])
            current.update(state="failed" if failed else "finished", finished_at=_now(),
                           error=error)
            self._last, self._current = current, None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"running": self._current is not None,
                    "current": deepcopy(self._current), "last": deepcopy(self._last)}


class HarvestNotStarted(Conflict):
    """A harvest asked for that cannot start (one is running; no nodes to harvest)."""


def status_out(session: Session, status: HarvestStatus, *, can_start: bool) -> HarvestStatusOut:
    """This service's rounds with what the catalogue holds per node."""
    nodes = [HarvestedNode(node_id=node_id, node_name=name or node_id, datasets=count,
                           last_harvested_at=at)
             for node_id, name, count, at in repository.harvested_nodes(session)]
    return HarvestStatusOut(**status.snapshot(), nodes=nodes, can_start=can_start)


__all__ = ["HarvestNotStarted", "HarvestStatus", "status_out"]
