"""Every decision of policies/ (a rule `NAME := f(input)`, what spe.policy asks for) has an
explicit `default NAME := {"allow": false, ...}`: an input the rules do not decide on is a
recorded denial, not an undefined answer."""

from __future__ import annotations

import re

import pytest

from spe.policy import EmbeddedEngine, PolicyService
from spe.settings import REPO_ROOT

POLICIES = REPO_ROOT / "policies"
_DECISION = re.compile(r"^(\w+) := \w+\(input\)$", re.M)
_PACKAGE = re.compile(r"^package (\S+)$", re.M)


def decisions() -> list[tuple[str, str, str]]:
    """(file, package path, rule) of every decision rule of the non-test policy files."""
    out = []
    for path in sorted(POLICIES.rglob("*.rego")):
        if path.name.endswith("_test.rego"):
            continue
        text = path.read_text()
        package = _PACKAGE.search(text).group(1).replace(".", "/")
        out += [(path.relative_to(POLICIES).as_posix(), package, rule)
                for rule in _DECISION.findall(text)]
    return out


def test_the_decisions_are_found():
    found = {f"{package}/{rule}" for _, package, rule in decisions()}
    assert {"authz/decision", "query/node_decision", "jobs/access", "permits/decision",
            "airlock/decision", "catalogue/curation/decision"} <= found


@pytest.mark.parametrize(("path", "package", "rule"), decisions())
def test_every_decision_defaults_to_deny(path, package, rule):
    text = (POLICIES / path).read_text()
    default = re.search(rf"^default {rule} := (\{{.*\}})$", text, re.M)
    assert default, f"{path}: {rule} has no default"
    assert '"allow": false' in default.group(1)
    assert text.index(default.group(0)) < text.index(f"\n{rule} := ")  # before the rule


@pytest.mark.parametrize(("path", "package", "rule"), decisions())
def test_an_undecided_input_is_a_denial_with_a_reason_not_an_error(path, package, rule):
    decision = PolicyService(EmbeddedEngine(POLICIES)).decide(f"{package}/{rule}", {})
    assert decision.allow is False
    assert not decision.error, decision.reason
    assert decision.reason.startswith("denied")
