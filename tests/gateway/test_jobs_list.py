"""The list of one's jobs (GET /api/v1/jobs, `spe job list`, the /jobs page) shows a part
that has finished in its final state, as the hub recorded it when it collected the part,
not "queued" (how its submission went) for ever.

No node is needed: the central service alone, with a job whose parts were collected.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from spe.app import create_central_app
from spe.db import session_scope
from spe.db.migrate import upgrade
from spe.identity import demo_issuer
from spe.jobs.models import CentralJob
from spe.settings import Settings
from tests import browser as shared
from tests.servers import bind, serve

browser = shared.browser  # one headless Chromium for the module (tests/browser.py)


def _add_job(ctx, user: str, nodes: dict, *, age: timedelta = timedelta()) -> str:
    job_id = uuid.uuid4().hex
    with session_scope(ctx.sessions) as session:
        session.add(CentralJob(id=job_id, pid="P-LIST", user_id=user, code_sha256="0" * 64,
                               entry="main.py", limits={},
                               created_at=datetime.now(UTC) - age, nodes=nodes))
    return job_id


#: A job whose two parts were collected: one succeeded (its outputs in a request), one
#: failed (its log alone). Both were "queued" when they were sent.
FINISHED = {"site-a": {"job_id": "a1", "outcome": "queued", "airlock": "r" * 32,
                       "outputs": "collected", "state": "succeeded"},
            "site-b": {"job_id": "b1", "outcome": "queued", "airlock": None,
                       "outputs": "no outputs: the job failed", "state": "failed"}}


@pytest.fixture
def central(database_url: str, tmp_path: Path):
    upgrade(database_url, "central")
    settings = Settings(data_dir=tmp_path, database_url=database_url,
                        oidc_issuer="http://central.test")
    app = create_central_app(settings)
    issuer = demo_issuer(settings)
    with TestClient(app, base_url="http://central.test") as client:
        client.token = lambda user: issuer.mint(user, ["researcher"])  # type: ignore[attr-defined]
        client.ctx = app.state.ctx  # type: ignore[attr-defined]
        yield client


def test_the_jobs_list_shows_a_finished_job_as_finished(central):
    carol = f"carol@{central.base_url}".rstrip("/")
    older = _add_job(central.ctx, carol, FINISHED, age=timedelta(hours=1))
    newer = _add_job(central.ctx, carol, {"site-a": {"job_id": "a2", "outcome": "queued"}})
    resp = central.get("/api/v1/jobs",
                       headers={"Authorization": f"Bearer {central.token('carol')}"})
    assert resp.status_code == 200, resp.text
    jobs = resp.json()
    assert [j["id"] for j in jobs] == [newer, older]  # newest first
    assert {n["node_id"]: n["state"] for n in jobs[1]["nodes"]} == {
        "site-a": "succeeded", "site-b": "failed"}
    assert [n["state"] for n in jobs[0]["nodes"]] == ["queued"]  # no node to ask here


def _cli(central, monkeypatch):
    from typer.testing import CliRunner

    import spe.cli.http
    from spe.cli.main import app

    def through_test_client(method, url, *, json=None, params=None, timeout=None,
                            headers=None):
        return central.request(method, url, json=json, params=params, headers=headers)

    monkeypatch.setattr(spe.cli.http.httpx, "request", through_test_client)
    env = {"COLUMNS": "200", "SPE_HUB_URL": "http://central.test",
           "SPE_TOKEN": central.token("carol")}
    return lambda *args: CliRunner().invoke(app, ["job", *args], env=env)


def test_spe_job_list_shows_each_institutions_final_state(central, monkeypatch):
    run = _cli(central, monkeypatch)
    empty = run("list")
    assert empty.exit_code == 0, empty.output
    assert "no jobs yet" in empty.output
    carol = f"carol@{central.base_url}".rstrip("/")
    job_id = _add_job(central.ctx, carol, FINISHED)
    shown = run("list")
    assert shown.exit_code == 0, shown.output
    row = next(line for line in shown.output.splitlines() if job_id in line)
    assert "P-LIST" in row
    assert "ended: 1 failed, 1 succeeded" in row
    assert "site-a: succeeded" in shown.output
    assert "site-b: failed" in shown.output
    assert "queued" not in shown.output
    as_json = run("list", "--json")
    assert as_json.exit_code == 0, as_json.output
    import json

    [job] = json.loads(as_json.output)
    assert [n["state"] for n in job["nodes"]] == ["succeeded", "failed"]


# ---- the /jobs page ---------------------------------------------------------------------


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[tuple[str, object]]:
    """The central app under uvicorn: (its URL, its issuer, its context)."""
    upgrade(database_url, "central")
    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(data_dir=tmp_path, database_url=database_url, oidc_issuer=url,
                        environment="development")
    app = create_central_app(settings)
    with ExitStack() as stack:
        stack.enter_context(serve(app, sock, lifespan="on"))
        yield url, demo_issuer(settings), app.state.ctx


@pytest.mark.browser
def test_the_jobs_page_lists_a_finished_job_as_finished(browser, served):
    from playwright.sync_api import expect

    url, issuer, ctx = served
    job_id = _add_job(ctx, f"carol@{url}", FINISHED)
    context = browser.new_context(base_url=url)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto("/jobs")
        page.get_by_label("Bearer token").fill(issuer.mint("carol", ["researcher"],
                                                           name="carol"))
        page.get_by_test_id("signin").click()
        row = page.locator(f'[data-testid="job-row"][data-job="{job_id}"]')
        expect(row).to_have_count(1)
        for site, state in (("site-a", "succeeded"), ("site-b", "failed")):
            part = row.locator(f'[data-testid="job-row-node"][data-node="{site}"]')
            expect(part).to_have_attribute("data-state", state)
            expect(part.get_by_test_id("job-row-state")).to_have_text(state)
        expect(row).not_to_contain_text("queued")
    finally:
        context.close()
    assert errors == []
