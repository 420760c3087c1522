"""The hub sends the CA's revocation list (its SPE_PKI_DIR/crl.pem) to every node: as soon
as the file changes (checked every `INTERVAL` seconds, and at once after a removal with
revocation), and again to each node that has not confirmed the current list (down during
a push, added later). A node keeps only a list the CA signed and newer than its own
(gateway/node/trust/endpoints.py), so a push can only add revocations.

A node that did not take the list is tried again after `INTERVAL` seconds, then after twice
as long each time up to `MAX_BACKOFF` (a federation of hundreds of nodes would otherwise
re-send to every slow node every 2 s, adding load just while they are slow); a new list
goes to every node at once whatever their backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from gateway.hub.fanout import Fanout, push
from gateway.hub.rounds import Outages
from spe.wire.context import ContextSigner
from spe.wire.revocation import CRL_PATH, CrlPush

INTERVAL = 2.0
#: The longest a node that keeps failing waits for its next try of the same list.
MAX_BACKOFF = 300.0
log = logging.getLogger("spe.hub")


class CrlPusher:
    def __init__(self, fanout: Fanout, signer: ContextSigner, pki_dir: Path) -> None:
        self.fanout = fanout
        self.signer = signer
        self.path = Path(pki_dir) / "crl.pem"
        self._confirmed: dict[str, str] = {}  # node -> digest of the list it holds
        # node -> (digest tried, seconds to wait, monotonic time of its next try)
        self._backoff: dict[str, tuple[str, float, float]] = {}

    def _current(self) -> CrlPush | None:
        try:
            return CrlPush(crl=self.path.read_text())
        except (OSError, ValueError):
            return None

    async def push_now(self, *, only_behind: bool = False) -> dict[str, str]:
        """Send the current list (to the nodes that have not confirmed it, with
        `only_behind`); node -> outcome."""
        body = await asyncio.to_thread(self._current)
        if body is None:
            return {}
        digest = body.digest()
        now = time.monotonic()
        nodes = [n for n in self.fanout.nodes
                 if not only_behind or (self._confirmed.get(n) != digest
                                        and not self._waiting(n, digest, now))]
        if not nodes:
            return {}
        outcomes = await push(self.fanout, self.signer, nodes, CRL_PATH,
                              body.model_dump(mode="json"), digest)
        for node, outcome in outcomes.items():
            # A node holding a newer list than this hub's answers 409: nothing to send it.
            if outcome == "delivered" or "newer revocation list" in outcome:
                self._confirmed[node] = digest
                self._backoff.pop(node, None)
            else:
                tried, wait, _ = self._backoff.get(node, (digest, INTERVAL / 2, now))
                wait = min(MAX_BACKOFF, wait * 2) if tried == digest else INTERVAL
                self._backoff[node] = (digest, wait, now + wait)
        return outcomes

    def _waiting(self, node: str, digest: str, now: float) -> bool:
        """Whether `node` failed this same list recently and its next try is not due."""
        tried, _, due = self._backoff.get(node, ("", 0.0, 0.0))
        return tried == digest and now < due

    async def run(self, interval: float = INTERVAL) -> None:
        outages = Outages()
        while True:
            with contextlib.suppress(Exception):  # a failed round is retried next round
                missed = {n: o for n, o in (await self.push_now(only_behind=True)).items()
                          if o != "delivered"}
                # Said once per node that falls behind, not every round it stays behind.
                if outages.news(set(missed)):
                    log.warning("revocation list not delivered to %s", missed)
            await asyncio.sleep(interval)


__all__ = ["INTERVAL", "MAX_BACKOFF", "CrlPusher"]
