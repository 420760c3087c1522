"""The Rego tests in policies/ run as part of the suite, one pytest case each."""

from __future__ import annotations

from pathlib import Path

import pytest

from spe.policy import run_rego_tests
from spe.settings import REPO_ROOT

RESULTS = run_rego_tests(REPO_ROOT / "policies")


def test_every_policy_has_tests():
    tested = {r.file.split("/")[0] for r in RESULTS}
    areas = {p.name for p in (REPO_ROOT / "policies").iterdir() if p.is_dir()}
    assert areas
    assert areas <= tested


@pytest.mark.parametrize("result", RESULTS, ids=[f"{r.file}::{r.name}" for r in RESULTS])
def test_rego(result):
    assert result.passed, result.message


def test_a_failing_rego_test_is_reported(tmp_path: Path):
    area = tmp_path / "demo"
    area.mkdir()
    (area / "demo.rego").write_text("package demo\nimport rego.v1\nx := 1\n")
    (area / "demo_test.rego").write_text(
        "package demo_test\nimport rego.v1\n"
        "test_wrong if { data.demo.x == 2 }\n"
        "test_right if { data.demo.x == 1 }\n"
    )
    results = {r.name: r.passed for r in run_rego_tests(tmp_path)}
    assert results == {"test_wrong": False, "test_right": True}
