"""The hub's background rounds (the airlock's collection, the audit witness): one step every
interval until the service stops; a failed round is logged and tried again the next."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

# Nodes often start after the centre (the demo, a host rebooting): a node unreachable in the
# centre's first seconds is not yet news.
STARTUP_GRACE = 30.0


class Outages:
    """Which nodes a background round could not reach, said once per outage and not in the
    service's first `STARTUP_GRACE` seconds."""

    def __init__(self, grace: float = STARTUP_GRACE) -> None:
        self.since = time.monotonic()
        self.grace = grace
        self.reported: set[str] = set()

    def news(self, failing: set[str]) -> set[str]:
        """Of the nodes failing this round, those to report now."""
        if time.monotonic() - self.since < self.grace:
            return set()
        new = failing - self.reported
        self.reported = set(failing)
        return new


async def every(interval: float, step: Callable[[], Awaitable[object]], what: str,
                log: logging.Logger) -> None:
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:  # a node or the database down: try again next round
            log.exception("%s failed", what)
        await asyncio.sleep(interval)


__all__ = ["STARTUP_GRACE", "Outages", "every"]
