"""Rich progress bars for long work (synthesis, syncs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def stage_counter(label: str) -> Iterator:
    """A counter for work whose total is unknown up front: `tick(stage, n)` advances it."""
    with progress_bar() as bar:
        tasks: dict[str, int] = {}

        def tick(stage: str, n: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"{label}: {stage}", total=None)
            bar.advance(tasks[stage], n)

        yield tick


@contextmanager
def task_bars() -> Iterator:
    """One bar per task whose total is known: `tick(label, done, total)` sets it."""
    with progress_bar() as bar:
        tasks: dict[str, int] = {}

        def tick(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        yield tick
