"""The start method of the de-identifiers' process pools."""

from __future__ import annotations

import os
import threading
from multiprocessing import get_context
from multiprocessing.context import BaseContext


def pool_context() -> BaseContext:
    """fork where it is safe (cheap: nothing is imported again), spawn when other threads run
    (a node's job workers): a forked child would inherit their locks, held."""
    safe = threading.active_count() == 1 and os.name == "posix"
    return get_context("fork" if safe else "spawn")
