"""The `spe` command (a composition point: it may import every package)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["app", "main"]


def main() -> None:
    # `spe deid` is a batch tool: it starts without the other commands' imports
    if sys.argv[1:2] == ["deid"]:
        from spe.cli.deid import standalone

        standalone()
        return
    from spe.cli.main import main as run

    run()


def __getattr__(name: str) -> Any:
    if name == "app":
        from spe.cli.main import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
