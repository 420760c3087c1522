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
from collections.abc import Callable

from catalogue.harvester import run_harvest
from spe.identity.client_credentials import BearerSource
from spe.policy import PolicyService

log = logging.getLogger("spe.catalogue")

ACTOR = "scheduler:catalogue-harvester"


def harvest_round(database_url: str, nodes: list[str], token: str | BearerSource,
                  tls: ssl.SSLContext | None = None,
                  policy: PolicyService | None = None) -> int:
    """One round; returns how many nodes failed."""
    outcomes = run_harvest(database_url, nodes, token, actor=ACTOR, tls=tls, policy=policy)
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
                               policy: PolicyService | None = None) -> None:
    """Harvest every `interval` seconds until cancelled (first round after one interval:
    the service has just started and nodes may still be coming up)."""
    while True:
        await asyncio.sleep(interval)
        try:
            current = nodes() if callable(nodes) else nodes
            await asyncio.to_thread(harvest_round, database_url, current, token, tls, policy)
        except Exception:  # a failed round must not end the schedule
            log.exception("catalogue harvest round failed")


__all__ = ["harvest_periodically", "harvest_round"]
