"""`spe job submit --environment NAME` sends the name; without it the body names none and
the hub's default applies."""

from __future__ import annotations

from pathlib import Path

import httpx
from typer.testing import CliRunner

import spe.cli.http
from spe.cli.main import app


def test_submit_sends_the_environment_only_when_given(monkeypatch, tmp_path: Path):
    sent: list[dict] = []

    def request(method, url, *, json=None, params=None, timeout=None, headers=None):
        assert (method, url) == ("POST", "http://hub.test/api/v1/jobs")
        sent.append(json)
        return httpx.Response(202, json={"id": "j1", "nodes": []})

    monkeypatch.setattr(spe.cli.http.httpx, "request", request)
    (tmp_path / "main.py").write_text("print(1)\n")
    env = {"SPE_HUB_URL": "http://hub.test", "SPE_TOKEN": "tok"}
    for extra in (["--environment", "imaging"], []):
        result = CliRunner().invoke(app, ["job", "submit", str(tmp_path), "--permit", "P-1",
                                          *extra], env=env)
        assert result.exit_code == 0, result.output
    assert [body.get("environment") for body in sent] == ["imaging", None]
