"""The central service's scheduled harvest: every `SPE_CATALOGUE_HARVEST_INTERVAL_SECONDS`,
the nodes in `SPE_CATALOGUE_NODES` are harvested, as `spe catalogue harvest` does by hand.
At the centre the list is read again every round (spe/app.py `_harvest_nodes`), so an
institution an admin adds to the federation at the running centre is harvested from the
next round on, and one removed is not harvested any more.

A failing node is reported and audited by the harvest itself; a round that fails as a
whole (the database is down, say) is logged and the next round tries again. The nodes are
called with the central service's own tokens (spe.identity.machine_token: OAuth 2.0 client
credentials at the identity provider), renewed before they expire and when a node refuses
one, so the schedule outlives any token.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Callable

from catalogue.harvester import run_harvest
from catalogue.status import HarvestNotStarted, HarvestStatus
from spe.identity.client_credentials import BearerSource
from spe.policy import PolicyService

log = logging.getLogger("spe.catalogue")

ACTOR = "scheduler:catalogue-harvester"


def harvest_round(database_url: str, nodes: list[str], token: str | BearerSource,
                  tls: ssl.SSLContext | None = None,
                  policy: PolicyService | None = None,
                  status: HarvestStatus | None = None, trigger: str = "schedule",
                  begun: bool = False) -> int:
    """One round; returns how many nodes failed. With `status`, the round's progress is
    kept there (and a round asked for while one runs is not started: -1); `begun`: the
    caller has begun it there already (catalogue.status.HarvestStatus.begin)."""
    if status is not None and not begun and not status.begin(nodes, trigger):
        log.info("catalogue harvest: a round is running already; not started again")
        return -1
    try:
        outcomes = run_harvest(database_url, nodes, token, actor=ACTOR, tls=tls, policy=policy,
                               progress=status.step if status is not None else None)
    except Exception as exc:
        if status is not None:
            status.end(error=f"the round failed: {exc.__class__.__name__}: {exc}"[:500])
        raise
    if status is not None:
        status.end()
    failed = [o for o in outcomes if o.error]
    for o in failed:
        log.warning("catalogue harvest: %s", o.error)
    log.info("catalogue harvest: %d datasets from %d nodes, %d failed",
             sum(1 for o in outcomes if o.identifier), len(nodes), len(failed))
    return len(failed)


async def harvest_periodically(database_url: str,
                               nodes: list[str] | Callable[[], list[str]],
                               token: BearerSource, interval: float,
                               tls: ssl.SSLContext | None = None,
                               policy: PolicyService | None = None,
                               status: HarvestStatus | None = None) -> None:
    """Harvest every `interval` seconds until cancelled (first round after one interval:
    the service has just started and nodes may still be coming up)."""
    while True:
        await asyncio.sleep(interval)
        try:
            current = nodes() if callable(nodes) else nodes
            await asyncio.to_thread(harvest_round, database_url, current, token, tls, policy,
                                    status)
        except Exception:  # a failed round must not end the schedule
            log.exception("catalogue harvest round failed")


def harvest_in_background(database_url: str, nodes: list[str], token: BearerSource,
                          status: HarvestStatus, trigger: str,
                          tls: ssl.SSLContext | None = None,
                          policy: PolicyService | None = None) -> None:
    """Start a round now in a thread of its own (`POST /api/v1/catalogue/harvest`);
    HarvestNotStarted when there is nothing to harvest or a round is running."""
    if not nodes:
        raise HarvestNotStarted("no nodes to harvest: SPE_CATALOGUE_NODES is empty and the "
                                "federation has no members")
    if not status.begin(nodes, trigger):
        raise HarvestNotStarted("a harvest is running already; its progress is in "
                                "GET /api/v1/catalogue/harvest")

    def run() -> None:
        try:
            harvest_round(database_url, nodes, token, tls, policy, status, trigger, begun=True)
        except Exception:  # recorded in the status by harvest_round; the thread just ends
            log.exception("catalogue harvest round failed")

    threading.Thread(target=run, name="catalogue-harvest", daemon=True).start()


__all__ = ["harvest_in_background", "harvest_periodically", "harvest_round"]
