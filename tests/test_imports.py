"""The package dependency direction of ARCHITECTURE.md holds (.importlinter, checked by
import-linter's `lint-imports`): spe's core imports neither the catalogue nor the gateway,
the hub and the node share only spe.wire, and no packages import each other in a cycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_hold():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run(
        [lint, "--config", str(ROOT / ".importlinter"), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = result.stdout + result.stderr
    assert "Contracts: " in out, out  # it ran and checked contracts
    assert result.returncode == 0, out
    assert " BROKEN" not in out, out
