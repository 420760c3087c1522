"""What the browser tests share: Debian's headless Chromium through Playwright, the rule
for a missing browser (skipped outside CI, a failure in CI), and screenshots kept in
$SPE_TEST_ARTIFACTS (default test-artifacts/) for a person to look at.

A test module imports the fixture it uses (`from tests.browser import browser`) and marks
itself `pytestmark = pytest.mark.browser`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from spe.settings import REPO_ROOT
from tests.conftest import IN_CI

CHROMIUM = os.environ.get("SPE_TEST_CHROMIUM", "/usr/bin/chromium")
# No GPU, sandbox or network extras in a container; nothing phones home (the machine is
# offline, and a test must not wait on that).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: Playwright's expect() and actions wait this long (a loaded CI machine is slow).
TIMEOUT_MS = 15_000


def missing(reason: str):
    """Skip outside CI; in CI the browser test is required, so its absence is a failure."""
    if IN_CI:
        pytest.fail(f"{reason} (required in CI: .ci/run installs chromium, "
                    "pyproject's test extra playwright)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium for the test module (each person gets their own context)."""
    try:
        from playwright.sync_api import Error, expect, sync_playwright
    except ImportError:
        missing("the playwright package is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        try:
            launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Error as exc:
            missing(f"Chromium at {CHROMIUM} did not start: {exc}")
        try:
            yield launched
        finally:
            launched.close()


def artifacts_dir(name: str) -> Path:
    """$SPE_TEST_ARTIFACTS/<name>/, created."""
    base = Path(os.environ.get("SPE_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
    out = base / name
    out.mkdir(parents=True, exist_ok=True)
    return out


def shot(page, artifacts: Path, name: str) -> Path:
    """A full-page screenshot `<name>.png`, checked to be there and not empty."""
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file(), f"no screenshot at {path}"
    assert path.stat().st_size > 1000, f"empty screenshot at {path}"
    return path


__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "TIMEOUT_MS", "artifacts_dir", "browser", "missing",
           "shot"]
