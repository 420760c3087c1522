"""The hub keeps every node's copy of the central suspension list current: it pushes the
list on every change (spe/users/endpoints.py) and, every `INTERVAL` seconds, again to each
node that has not confirmed the current epoch (down during a push, added later, or
started before the centre). Until then that node refuses every context signed under the
newer list (gateway/node/trust/door.py): a lag costs availability, never a suspension."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from gateway.hub.fanout import Fanout, push_suspensions
from spe.wire.context import ContextSigner
from spe.wire.suspensions import SuspensionList

INTERVAL = 60.0
log = logging.getLogger("spe.hub")


class SuspensionPusher:
    def __init__(self, fanout: Fanout, signer: ContextSigner,
                 current: Callable[[], SuspensionList]) -> None:
        self.fanout = fanout
        self.signer = signer
        self.current = current  # reads the list from the central database
        self._confirmed: dict[str, int] = {}  # node -> epoch it acknowledged

    async def push(self, listed: SuspensionList, *, only_behind: bool = False
                   ) -> dict[str, str]:
        """Push `listed` (to the nodes behind it only, with `only_behind`); node -> outcome."""
        nodes = [n for n in self.fanout.nodes
                 if not only_behind or self._confirmed.get(n, -1) < listed.epoch]
        if not nodes:
            return {}
        outcomes = await push_suspensions(self.fanout, self.signer, listed, nodes)
        for node, outcome in outcomes.items():
            if outcome == "delivered":
                self._confirmed[node] = max(self._confirmed.get(node, -1), listed.epoch)
        return outcomes

    async def run(self, interval: float = INTERVAL) -> None:
        while True:
            with contextlib.suppress(Exception):  # a failed round is retried next round
                listed = await asyncio.to_thread(self.current)
                if listed.epoch == 0:  # nobody was ever suspended: what a new node holds
                    await asyncio.sleep(interval)
                    continue
                missed = {n: o for n, o in (await self.push(listed, only_behind=True)).items()
                          if o != "delivered"}
                if missed:
                    log.warning("suspension list (epoch %s) not delivered to %s",
                                listed.epoch, missed)
            await asyncio.sleep(interval)


__all__ = ["INTERVAL", "SuspensionPusher"]
