"""Runs the `test_*` rules of `*_test.rego` files, as `opa test` would, with regopy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from regopy import Interpreter, RegoError

from spe.policy.engine import policy_files

_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.M)
_TEST_RULE = re.compile(r"^(test_\w+)\s+if\b", re.M)


@dataclass(frozen=True)
class RegoTestResult:
    file: str
    name: str
    passed: bool
    message: str = ""


def run_rego_tests(policy_dir: Path) -> list[RegoTestResult]:
    results: list[RegoTestResult] = []
    sources = [(f, f.read_text()) for f in policy_files(policy_dir)]
    for test_file in policy_files(policy_dir, tests=True):
        text = test_file.read_text()
        package = _PACKAGE.search(text)
        if package is None:
            results.append(RegoTestResult(str(test_file), "<package>", False, "no package"))
            continue
        interp = Interpreter()
        for f, src in sources:
            interp.add_module(f.name, src)
        interp.add_module(test_file.name, text)
        rel = str(test_file.relative_to(policy_dir))
        for name in dict.fromkeys(_TEST_RULE.findall(text)):
            try:
                output = interp.query(f"data.{package.group(1)}.{name}")
            except RegoError as exc:
                results.append(RegoTestResult(rel, name, False, str(exc).splitlines()[0]))
                continue
            if not output.ok():  # regopy crashes rendering a failed output
                results.append(RegoTestResult(rel, name, False, "evaluation failed"))
                continue
            out = str(output)
            results.append(RegoTestResult(rel, name, out == '{"expressions":[true]}', out))
    return results
