"""The node's own API. Every route but /health passes the policy door (spe.web.Caller)."""

from __future__ import annotations

import json

from fastapi import APIRouter

from gateway.node.index import repository
from spe.web import Caller, DbSession

router = APIRouter(prefix="/api/v1", tags=["node"])


@router.get("/index/summary")
def index_summary(_: Caller, session: DbSession) -> dict:
    """Counts of the local index, for operators (admin, hdab); not a researcher-facing answer."""
    run = repository.last_sync_run(session)
    return {
        "counts": repository.counts(session),
        "series_by_modality": repository.modality_counts(session),
        "last_sync": None if run is None else {
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "report": json.loads(run.report or "{}"),
        },
    }
