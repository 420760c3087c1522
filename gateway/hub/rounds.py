"""The hub's background rounds (the airlock's collection, the audit witness): one step every
interval until the service stops; a failed round is logged and tried again the next."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


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


__all__ = ["every"]
