"""spe.client's drawing of a job being waited for, without a hub: bars where a console can
redraw them (a terminal; a notebook with ipywidgets), a plain line per change elsewhere;
and the CA bundle named when it cannot be read."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from spe.client import NotConfigured
from spe.client.progress import follow, follow_drawn

STATES = [
    [("site-a", "queued", None), ("site-b", "queued", None)],
    [("site-a", "staging", {"step": "dicom", "percent": 40}), ("site-b", "running", None)],
    [("site-a", "running", None), ("site-b", "succeeded", None)],
    [("site-a", "succeeded", None), ("site-b", "succeeded", None)],
]


def _poller():
    seen = iter(STATES)

    def poll(timeout):
        parts = next(seen)
        return {"id": "a" * 32, "nodes": [
            {"node_id": n, "state": s, **({"progress": p} if p else {})} for n, s, p in parts]}

    return poll


def test_a_terminal_gets_live_bars_per_institution():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    job, gave_up = follow_drawn(_poller(), console=console, interval=0.0)
    assert not gave_up
    assert {n["state"] for n in job["nodes"]} == {"succeeded"}
    drawn = out.getvalue()
    assert "\x1b[" in drawn  # redrawn in place
    assert "site-a: succeeded" in drawn
    assert "2/2" in drawn  # the job's bar: both parts ended


def test_elsewhere_a_plain_line_per_change():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    follow_drawn(_poller(), console=console, interval=0.0)
    lines = out.getvalue().splitlines()
    assert "\x1b[" not in out.getvalue()
    assert any("site-a: staging (dicom, 40%) (0/2 ended)" in line for line in lines), lines
    assert lines[-1].endswith("site-a: succeeded (2/2 ended)"), lines
    assert len(lines) == 7  # each part's every change once: 2 + 2 + 2 + 1


def test_a_limit_gives_up_with_the_job_as_it_is():
    job, gave_up = follow(_poller(), limit=0.001, interval=1.0)
    assert gave_up
    assert job["nodes"][0]["state"] == "queued"


def test_an_unreadable_ssl_cert_file_is_named(tmp_path: Path, monkeypatch):
    from spe.client import Client

    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(NotConfigured, match=r"SSL_CERT_FILE .*missing.pem: not a readable"):
        Client("https://hub.example", "t")
