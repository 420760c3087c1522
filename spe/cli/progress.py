"""Progress for long work (synthesis, syncs, harvests, the demo's start) on stderr.

On a terminal: rich's live bars. Anywhere else (CI, a pipe, a log file): plain lines, one
per task at most every `SPE_PROGRESS_INTERVAL` seconds (default 5) besides its first and
its last, with no control characters, so logs stay readable. The domain functions only
call back with numbers (spe.synth.generate, gateway.node.sync.sync_index,
catalogue.harvester.harvest_nodes); what they report is drawn here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

console = Console(stderr=True)

DEFAULT_INTERVAL = 5.0


class Tracker(Protocol):
    def update(self, label: str, done: int, total: int | None, *, unit: str = "",
               note: str = "") -> None:
        """Task `label` has `done` of `total` (None: unknown) `unit`s; `note` is shown after."""
        ...


def interactive() -> bool:
    """Live bars only on a real terminal that can redraw them."""
    return console.is_terminal and not console.is_dumb_terminal


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("SPE_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def plain_line(label: str, done: int, total: int | None, unit: str = "", note: str = "") -> str:
    """`sync site-a dicom: 120/400 files (30%), 2 skipped`: one line, printable characters only."""
    count = f"{done}/{total}" if total is not None else f"{done}"
    if total:
        count += f" ({100 * done // total}%)"
    text = f"{label}: {count}" + (f" {unit}" if unit else "") + (f", {note}" if note else "")
    return "".join(ch if ch.isprintable() else "?" for ch in text)


class PlainLines:
    """Line-based progress: a task's first update, its last (done == total), and in between
    at most one line every `interval` seconds."""

    def __init__(self, write, interval: float | None = None) -> None:
        self._write = write
        self.interval = _interval() if interval is None else interval
        self._last: dict[str, float] = {}
        self._pending: dict[str, str] = {}
        self._finished: set[str] = set()

    def update(self, label: str, done: int, total: int | None, *, unit: str = "",
               note: str = "") -> None:
        line = plain_line(label, done, total, unit, note)
        now = time.monotonic()
        finished = total is not None and done >= total
        last = self._last.get(label)
        if label in self._finished and finished:
            return
        if last is None or finished or now - last >= self.interval:
            self._write(line)
            self._last[label] = now
            self._pending.pop(label, None)
            if finished:
                self._finished.add(label)
        else:
            self._pending[label] = line

    def close(self) -> None:
        """The last state of tasks whose last update was held back (a total never known)."""
        for line in self._pending.values():
            self._write(line)
        self._pending.clear()


class _Bars:
    def __init__(self, bar: Progress) -> None:
        self._bar = bar
        self._tasks: dict[str, int] = {}

    def update(self, label: str, done: int, total: int | None, *, unit: str = "",
               note: str = "") -> None:
        text = label + (f" ({note})" if note else "")
        if label not in self._tasks:
            self._tasks[label] = self._bar.add_task(text, total=total)
        self._bar.update(self._tasks[label], completed=done, total=total, description=text)


def progress_bar() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _write_line(line: str) -> None:
    console.file.write(line + "\n")
    console.file.flush()


@contextmanager
def tracker() -> Iterator[Tracker]:
    """Live bars on a terminal, plain throttled lines elsewhere."""
    if interactive():
        with progress_bar() as bar:
            yield _Bars(bar)
        return
    lines = PlainLines(_write_line)
    try:
        yield lines
    finally:
        lines.close()


def say(text: str) -> None:
    """A one-line status (a phase starting), plain when not on a terminal."""
    if interactive():
        console.print(text)
    else:
        _write_line("".join(ch if ch.isprintable() else "?" for ch in text))


@contextmanager
def stage_counter(label: str, unit: str = "") -> Iterator:
    """A counter for work whose total is unknown up front: `tick(stage, n)` advances it."""
    with tracker() as track:
        counts: dict[str, int] = {}

        def tick(stage: str, n: int) -> None:
            counts[stage] = counts.get(stage, 0) + n
            track.update(f"{label}: {stage}", counts[stage], None, unit=unit)

        yield tick


@contextmanager
def task_bars(unit: str = "") -> Iterator:
    """One bar per task whose total is known: `tick(label, done, total)` sets it."""
    with tracker() as track:

        def tick(label: str, done: int, total: int) -> None:
            track.update(label, done, total, unit=unit)

        yield tick


def sync_ticks(track: Tracker, prefix: str = "sync"):
    """gateway.node.sync's callback (a SyncProgress) drawn on `track`, one task per stage."""

    def tick(p) -> None:
        track.update(f"{prefix} {p.stage}", p.done, p.total, unit=p.unit,
                     note=f"{p.skipped} skipped")

    return tick


def synth_ticks(track: Tracker):
    """spe.synth.generate's callback (institution, patients done, patients) on `track`."""

    def tick(label: str, done: int, total: int) -> None:
        track.update(label, done, total, unit="patients written")

    return tick


_HARVEST_PHASES = {"fetching": 0, "validated": 2, "stored": 3, "failed": 3}


def harvest_ticks(track: Tracker):
    """catalogue.harvester's callback (a HarvestStep) on `track`: one task per node, in
    three steps (fetched, validated, stored), or failed with its reason."""

    def tick(step) -> None:
        n = step.datasets
        note = {"fetching": "fetching descriptors",
                "validated": f"fetched and validated {n} descriptor{'s' * (n != 1)}",
                "stored": f"stored {n} dataset{'s' * (n != 1)}",
                "failed": f"failed: {step.error}"}.get(step.phase, step.phase)
        track.update(f"harvest {step.node}", _HARVEST_PHASES.get(step.phase, 0), 3, note=note)

    return tick
