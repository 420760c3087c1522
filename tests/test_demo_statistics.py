"""The statistics tier on the demo's own data, from outside (issue 16's "Done when").

`spe demo` at its default size (3 x 300 patients of the synthetic generator), asked over
HTTP with the researcher tokens the demo writes, as a researcher (or an attacker) would:
the same question a hundred times, a tracker pair around groups of three, a count by sex,
fifty related questions. The test alone reads the nodes' indexes, to know the truth.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.test_demo import _free_ports_below_ephemeral, _wait_healthy

ICD10 = "http://hl7.org/fhir/sid/icd-10"
SITES = ("site-a", "site-b", "site-c")


@dataclass
class Demo:
    url: str
    tokens: dict[str, str]
    data_dir: Path

    def ask(self, token: str, where: dict, answer: dict | None = None) -> dict:
        body = {"where": where, **({"answer": answer} if answer else {})}
        resp = httpx.post(f"{self.url}/api/v1/query", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {self.tokens[token]}"})
        assert resp.status_code == 200, resp.text
        return resp.json()

    def sql(self, site: str, statement: str) -> list[tuple]:
        with sqlite3.connect(self.data_dir / "nodes" / site / "node.db") as conn:
            return conn.execute(statement).fetchall()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Demo]:
    tmp = tmp_path_factory.mktemp("demo-statistics")
    port = _free_ports_below_ephemeral()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "spe.cli", "demo", "--data-dir", str(tmp / "demo"),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output: list[str] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail("demo exited early:\n" + "".join(output))
            output.append(line)
            if "press Ctrl-C to stop" in line:
                break
        else:
            pytest.fail("demo did not come up:\n" + "".join(output))
        assert "federation: 3 nodes, 900 patients" in "".join(output)
        _wait_healthy(f"http://127.0.0.1:{port}/health")
        tokens = json.loads((tmp / "demo" / "tokens.json").read_text())
        yield Demo(f"http://127.0.0.1:{port}", tokens, tmp / "demo")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _node(answer: dict, site: str) -> dict:
    return next(n for n in answer["nodes"] if n["node_id"] == site)


def _total(node: dict) -> int | None:
    a = node.get("answer") or {}
    return (a.get("total") or {}).get("value")


@pytest.mark.slow
def test_the_same_question_a_hundred_times_gets_one_value(demo):
    where = {"type": "condition", "system": "icd-10", "code": "I10", "prefix": True}
    seen = {json.dumps([(n["node_id"], n["status"], _total(n)) for n in a["nodes"]])
            + json.dumps(a["total"]) for a in (demo.ask("researcher", where)
                                               for _ in range(100))}
    assert len(seen) == 1, seen


@pytest.mark.slow
def test_a_tracker_pair_does_not_reveal_groups_of_three(demo):
    """"Everyone", then "everyone but those with code C", for every code that exactly
    three patients of a site have: the difference of the site's two values is 3 no more
    often than the noise gives by chance, and both are answered."""
    groups = [(site, code) for site in SITES for (code,) in demo.sql(site, (
        "SELECT code FROM conditions GROUP BY code "
        "HAVING COUNT(DISTINCT patient_id) = 3 ORDER BY code"))][:12]
    assert len(groups) >= 4, groups
    everyone = {"type": "not", "of": {"type": "condition", "system": "icd-10",
                                      "code": "Z00.000"}}
    broad = demo.ask("researcher:carol", everyone)
    exact, sds = 0, []
    for site, code in groups:
        narrowed = demo.ask("researcher:carol", {"type": "and", "of": [everyone, {
            "type": "not", "of": {"type": "condition", "system": "icd-10", "code": code}}]})
        a, b = _node(broad, site), _node(narrowed, site)
        assert a["status"] == b["status"] == "answered", (a, b)
        assert a["answer"]["total"]["perturbed"]
        assert b["answer"]["total"]["perturbed"]
        sds.append(a["answer"]["total"]["sd"])
        exact += _total(a) - _total(b) == 3
    n, sd = len(groups), float(np.mean(sds))
    p = min(1.0, 1 / (2 * sd * np.sqrt(np.pi)))  # P(difference of two noises = 0)
    assert exact <= n * p + 2 * np.sqrt(n * p * (1 - p)), f"{exact} of {n} exactly 3"
    assert exact < n


@pytest.mark.slow
def test_a_count_by_sex_gives_a_total_and_the_two_real_sexes(demo):
    women = {"type": "patient", "sex": "female"}
    a = demo.ask("researcher", {"type": "or", "of": [women, {"type": "patient",
                                                              "sex": "male"}]},
                 {"kind": "stratified", "by": ["sex"]})
    assert a["total"]["value"] is not None, a
    shown = {c["key"]["sex"]: c for c in a["cells"] if not c["suppressed"]}
    assert {"female", "male"} <= set(shown), a["cells"]
    for n in a["nodes"]:
        assert n["status"] == "answered", n
        assert _total(n) is not None, n


@pytest.mark.slow
def test_fifty_related_questions_are_all_answered(demo):
    """Ten common categories, each alone and with four filters: fifty questions by one
    researcher, each answered by every node (a value or a suppression with its reason),
    never refused."""
    filters = [None, {"type": "patient", "sex": "female"}, {"type": "patient", "sex": "male"},
               {"type": "patient", "age": {"min": 65}},
               {"type": "imaging", "modality": ["CT"]}]
    codes = ["I10", "E11", "I63", "I21", "J44", "C71", "G35", "G30", "C50", "C34"]
    refused = []
    for code in codes:
        for f in filters:
            c = {"type": "condition", "system": "icd-10", "code": code, "prefix": True}
            where = c if f is None else {"type": "and", "of": [c, f]}
            a = demo.ask("researcher:carol", where, {"kind": "stratified", "by": ["sex"]})
            for n in a["nodes"]:
                if n["status"] not in ("answered", "suppressed"):
                    refused.append((code, f, n["node_id"], n["status"], n.get("reason")))
                elif n["status"] == "suppressed":
                    assert n["answer"]["notes"], n  # a reason the researcher can act on
    assert not refused, refused
