"""A job followed to its end, drawn as it goes: rich's live bars on a terminal and in a
notebook (one per institution, and one for the job's parts ended), a plain line per change
anywhere else (a pipe, a log, a captured test). The CLI prints its own lines
(`spe job status --wait`); this is the notebook's `Client.wait(..., progress=True)`."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from spe.client.api import ENDED, part_line
from spe.wire.jobs import AWAITING_APPROVAL

#: How often a wait asks the hub.
POLL_SECONDS = 2.0


def _live(console: Console) -> bool:
    """Live bars where they redraw: a real terminal, or Jupyter with ipywidgets (rich's
    notebook display; without it rich only warns, so plain lines are better)."""
    if console.is_jupyter:
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            return False
        return True
    return console.is_terminal and not console.is_dumb_terminal


class _Draw:
    """What a wait shows: `update(job, elapsed)` after each poll."""

    def __init__(self, console: Console, live: bool) -> None:
        self.console = console
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(),
                            console=console) if live else None
        self.tasks: dict[str, int] = {}
        self.seen: dict[str, str] = {}

    def context(self) -> AbstractContextManager:
        return self.bar if self.bar is not None else nullcontext()

    def update(self, job: dict, elapsed: float) -> None:
        parts = job["nodes"]
        done = sum(n["state"] in ENDED for n in parts)
        if self.bar is not None:
            rows = [(f"job {job['id'][:12]}", done, len(parts))]
            rows += [(f"  {n['node_id']}: {part_line(n)}", int(n["state"] in ENDED), 1)
                     for n in parts]
            for key, (text, completed, total) in zip(
                    ["job", *(n["node_id"] for n in parts)], rows, strict=True):
                if key not in self.tasks:
                    self.tasks[key] = self.bar.add_task(text, total=total)
                self.bar.update(self.tasks[key], description=text, completed=completed,
                                total=total)
            return
        for n in parts:
            line = part_line(n)
            if self.seen.get(n["node_id"]) != line:
                self.seen[n["node_id"]] = line
                self.console.print(f"[{elapsed:4.0f}s] job {job['id'][:12]} {n['node_id']}: "
                                   f"{line} ({done}/{len(parts)} ended)",
                                   markup=False, highlight=False, soft_wrap=True)


def follow(poll: Callable[[float | None], dict], *, limit: float | None = None,
           on_poll: Callable[[dict, float], None] | None = None,
           interval: float = POLL_SECONDS) -> tuple[dict, bool]:
    """Poll until every part of the job has ended or waits for an institution's code
    review (`held`: that can take days, so a wait does not), or `limit` seconds passed
    (then the job as it is and True). `poll(timeout)` gets the job; `on_poll(job,
    elapsed)` sees it."""
    started = time.monotonic()
    while True:
        left = None if limit is None else limit - (time.monotonic() - started)
        job = poll(60.0 if left is None else max(1.0, min(60.0, left)))
        if on_poll:
            on_poll(job, time.monotonic() - started)
        if all(n["state"] in ENDED or n["state"] == AWAITING_APPROVAL for n in job["nodes"]):
            return job, False
        if limit is not None and time.monotonic() - started + interval > limit:
            return job, True
        time.sleep(interval)


def held(job: dict) -> list[str]:
    """Each part of `job` that waits for its institution's code review, in words."""
    return [f"{n['node_id']} {part_line(n)}" for n in job["nodes"]
            if n["state"] == AWAITING_APPROVAL]


def follow_drawn(poll: Callable[[float | None], dict], *, limit: float | None = None,
                 console: Console | None = None, interval: float = POLL_SECONDS
                 ) -> tuple[dict, bool]:
    """`follow`, drawn on `console` (default: standard error) as it goes."""
    console = console or Console(stderr=True)
    draw = _Draw(console, _live(console))
    with draw.context():
        return follow(poll, limit=limit, on_poll=draw.update, interval=interval)
