"""How a command refuses: one red line on stderr and an exit code (kept light: `spe deid`
starts without the other commands' imports)."""

from __future__ import annotations

import typer
from rich.markup import escape

from spe.cli.progress import console


def fail(message: str, code: int = 2) -> typer.Exit:
    # One line however long (no wrapping at the terminal's width), the message as written
    # (brackets in it are not markup).
    console.print("[red]error:[/red]", escape(message), soft_wrap=True)
    return typer.Exit(code)
