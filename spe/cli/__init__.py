"""The `spe` command (a composition point: it may import every package)."""

from spe.cli.main import app, main

__all__ = ["app", "main"]
