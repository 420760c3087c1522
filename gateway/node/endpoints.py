"""The node's own API: its operator's view of the index, and the descriptors the central
catalogue harvests. Both pass a node door (gateway/node/trust): a certificate the node
knows, then the policy door with a bearer token."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request

from gateway.node.descriptors import compute_descriptor, descriptor_threshold
from gateway.node.index import repository
from gateway.node.trust import OperatorCaller, TokenCaller
from spe.web import DbSession
from spe.wire.descriptors import DatasetDescriptor

router = APIRouter(prefix="/api/v1", tags=["node"])


@router.get("/index/summary")
def index_summary(_: OperatorCaller, session: DbSession) -> dict:
    """Counts of the local index, unsuppressed: for this node's operator (its own
    certificate, roles admin or hdab), never for the hub or another node."""
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


@router.get("/descriptors", response_model=list[DatasetDescriptor])
def descriptors(caller: TokenCaller, session: DbSession,
                request: Request) -> list[DatasetDescriptor]:
    """The node's dataset descriptors for the central catalogue, small counts suppressed."""
    node = request.app.state.node
    ctx = request.app.state.ctx
    threshold = descriptor_threshold(ctx.policy)  # policies/disclosure; refuses on error
    descriptor = compute_descriptor(session, node_id=node.node_id,
                                    node_name=node.name or node.node_id, threshold=threshold)
    ctx.audit.record(session, actor=caller.id, action="catalogue.descriptor",
                     object=descriptor.identifier, decision="allow",
                     reason=f"descriptor released, counts below {threshold} suppressed",
                     details={"suppressed": descriptor.suppressed})
    return [descriptor]
