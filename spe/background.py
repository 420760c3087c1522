"""Stopping a service's background tasks (harvest, collection, witness, checkpoints, job
dispatch) when it shuts down, whatever they were awaiting at the time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger("spe.background")


async def stop_tasks(tasks: Iterable[asyncio.Task | None], *, grace: float = 1.0,
                     tries: int = 30) -> None:
    """Cancel every task and wait until each has ended.

    One cancellation is not always enough: Python 3.11's `asyncio.wait_for` swallows it
    when its inner future completes at the same moment, and a loop that retries each round
    then simply goes on to the next (a shutdown that waited for it hung for good). A task
    still running `grace` seconds after its cancel is cancelled again, up to `tries` times;
    then it is left, with a warning, rather than hang the service's stop."""
    pending = {t for t in tasks if t is not None}
    for _ in range(tries):
        if not pending:
            return
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=grace)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("background task %s failed at stop", task.get_name(),
                          exc_info=task.exception())
    if pending:
        log.warning("background tasks still running after %s cancellations: %s", tries,
                    ", ".join(sorted(t.get_name() for t in pending)))


__all__ = ["stop_tasks"]
