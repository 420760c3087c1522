"""`spe job status --wait` and `spe job list` against a scripted hub: the states a hub
gives one after another, the lines printed while waiting, the exit codes, and the errors
(bad input exit 2, an unreachable hub exit 1, never a traceback)."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

import spe.cli.http
import spe.cli.job
from spe.cli.main import app

JOB = "0123abcd"


def _job(*parts: dict) -> dict:
    return {"id": JOB, "permit": "P-1", "user": "carol@demo", "code_sha256": "0" * 64,
            "entry": "main.py", "limits": {}, "created_at": "2026-01-31T14:05:00+00:00",
            "nodes": [{"node_id": f"site-{'ab'[i]}", "job_id": f"n{i}", "submitted": "queued",
                       "attempts": 1, "reason": "", **p} for i, p in enumerate(parts)]}


@pytest.fixture
def hub(monkeypatch):
    """A hub answering GET /api/v1/jobs/<JOB> with the next of `hub.answers` (the last one
    again once they run out); `hub.calls` counts the reads."""

    class Hub:
        answers: list[dict] = []
        calls = 0

    def request(method, url, *, json=None, params=None, timeout=None, headers=None):
        assert headers == {"Authorization": "Bearer tok"}
        assert url == f"http://hub.test/api/v1/jobs/{JOB}", url
        answer = Hub.answers[min(Hub.calls, len(Hub.answers) - 1)]
        Hub.calls += 1
        return httpx.Response(200, json=answer)

    monkeypatch.setattr(spe.cli.http.httpx, "request", request)
    monkeypatch.setattr(spe.cli.job, "POLL_SECONDS", 0.0)
    return Hub


def _run(*args: str):
    env = {"COLUMNS": "200", "SPE_HUB_URL": "http://hub.test", "SPE_TOKEN": "tok"}
    return CliRunner().invoke(app, ["job", *args], env=env)


def test_wait_prints_each_change_and_exits_0_when_all_succeeded(hub):
    hub.answers = [
        _job({"state": "queued"}, {"state": "queued"}),
        _job({"state": "staging", "progress": {"step": "dicom", "percent": 40}},
             {"state": "queued"}),
        _job({"state": "staging", "progress": {"step": "dicom", "percent": 40}},
             {"state": "queued"}),  # no change: no line
        _job({"state": "staging", "progress": {"step": "fhir", "percent": 80}},
             {"state": "running"}),
        _job({"state": "succeeded"}, {"state": "succeeded"}),
    ]
    result = _run("status", JOB, "--wait")
    assert result.exit_code == 0, result.output
    lines = [line.split("] ", 1)[1] for line in result.stderr.splitlines()]
    assert lines == ["site-a: queued", "site-b: queued", "site-a: staging (dicom, 40%)",
                     "site-a: staging (fhir, 80%)", "site-b: running",
                     "site-a: succeeded", "site-b: succeeded"]
    assert "succeeded" in result.stdout  # then the usual status, on stdout
    assert "error" not in result.stdout
    assert hub.calls == 5


def test_wait_exits_1_naming_the_part_that_failed(hub):
    hub.answers = [_job({"state": "running"}, {"state": "staging"}),
                   _job({"state": "succeeded"}, {"state": "failed",
                                                 "reason": "exited with an error"})]
    result = _run("status", JOB, "--wait", "--json")
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["nodes"][1]["state"] == "failed"
    assert "did not succeed everywhere: site-b failed: exited with an error" in result.stderr
    assert "Traceback" not in result.output


def test_wait_gives_up_after_its_timeout_and_says_so(hub, monkeypatch):
    monkeypatch.setattr(spe.cli.job, "POLL_SECONDS", 0.2)
    hub.answers = [_job({"state": "running"})]
    result = _run("status", JOB, "--wait", "--timeout", "0.5")
    assert result.exit_code == 1, result.output
    assert "gave up waiting after 0.5 s: site-a running" in result.stderr
    assert 1 <= hub.calls <= 4


def test_wait_ends_when_what_is_left_waits_for_code_review_and_says_so(hub):
    held = {"state": "awaiting_approval",
            "reason": "held for code review by the institution's approvers"}
    hub.answers = [_job(held, {"state": "running"}),  # the other part still runs: go on
                   _job(held, {"state": "succeeded"}),
                   _job({"state": "running"}, {"state": "succeeded"})]
    result = _run("status", JOB, "--wait")
    assert result.exit_code == 1, result.output
    assert hub.calls == 2
    assert ("waits for code review: site-a awaiting_approval: held for code review by the "
            "institution's approvers; run this again once") in result.stderr
    assert "did not succeed" not in result.stderr
    assert "Traceback" not in result.output


def test_without_wait_one_read(hub):
    hub.answers = [_job({"state": "running"})]
    result = _run("status", JOB)
    assert result.exit_code == 0, result.output
    assert hub.calls == 1
    assert "running" in result.stdout


def test_bad_input_exits_2_and_an_unreachable_hub_1(monkeypatch):
    assert _run("status", "not/a/job", "--wait").exit_code == 2
    assert _run("status", JOB, "--wait", "--timeout", "0").exit_code == 2

    def refuse(*args, **kwargs):
        raise httpx.ConnectError("connection refused")

    monkeypatch.setattr(spe.cli.http.httpx, "request", refuse)
    for args in (("list",), ("status", JOB, "--wait")):
        result = _run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "cannot reach the hub at http://hub.test" in result.stderr
        assert "Traceback" not in result.output
    no_token = CliRunner().invoke(app, ["job", "list"], env={
        "SPE_HUB_URL": "http://hub.test", "SPE_TOKEN": ""})
    assert no_token.exit_code == 2
    assert "give --token" in no_token.stderr
