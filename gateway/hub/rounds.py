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


#: A round that missed a node comes again after this many seconds, then twice as long each
#: further miss, up to the round's interval: a node that starts a moment after the centre is
#: reached within seconds, not a whole interval later.
RETRY_SOON = 1.0


async def every(interval: float, step: Callable[[], Awaitable[object]], what: str,
                log: logging.Logger, *, missed: Callable[[object], bool] | None = None,
                retry: float = RETRY_SOON) -> None:
    """`step` every `interval` seconds. With `missed` (given the step's result; a failed step
    counts as one), a round that missed something is tried again sooner: after `retry`
    seconds, doubling each further miss, never longer than `interval`."""
    misses = 0
    while True:
        try:
            result = await step()
            miss = missed is not None and missed(result)
        except asyncio.CancelledError:
            raise
        except Exception:  # a node or the database down: try again next round
            log.exception("%s failed", what)
            miss = missed is not None
        misses = misses + 1 if miss else 0
        await asyncio.sleep(min(interval, retry * 2 ** (misses - 1)) if misses else interval)


__all__ = ["RETRY_SOON", "STARTUP_GRACE", "Outages", "every"]
