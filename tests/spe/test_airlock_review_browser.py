"""An output checker on /airlock, in a real browser (headless Chromium via Playwright,
against the central app under uvicorn): a file the automatic checks sent to review lists
where they point (line, column, rule), and its content shows those lines marked, while its
reasons name no value. One request per job, a section per site: the review buttons go once
the checker has reviewed and once the request is released, and come back when a later
site's outputs void the reviews."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from spe.airlock import OutputRules
from spe.airlock.review.service import submit_outputs
from spe.app import create_central_app
from spe.db import session_scope
from spe.identity import demo_issuer
from spe.settings import Settings
from tests import browser as shared
from tests.browser import TIMEOUT_MS
from tests.central import catalogued_central
from tests.servers import bind, serve
from tests.spe.test_permits import apply_and_submit, hdab, review, uid

pytestmark = pytest.mark.browser
browser = shared.browser

# "value" is not named as a count: its small whole numbers go to review, at line 2.
FLAGGED = "code,value\nI10,7\nE11,44\nJ45,52\n"


def test_a_checker_sees_the_places_the_checks_point_at(browser, database_url: str,
                                                       tmp_path: Path):

    catalogued_central(database_url, ("site-a", "site-b"), patients=100,
                       conditions={"C71": 20})
    settings = Settings(data_dir=tmp_path, database_url=database_url,
                        oidc_issuer="http://central.test")
    issuer = demo_issuer(settings)
    app = create_central_app(settings)
    client = TestClient(app, base_url="http://central.test")
    with client:
        client.as_ = lambda user, role, institution=None: {  # type: ignore[attr-defined]
            "Authorization": "Bearer " + issuer.mint(user, [role], institution=institution)}
        pid = apply_and_submit(client)
        assert review(client, pid, "bob", "site-a").status_code == 200
        assert review(client, pid, "bea", "site-b").status_code == 200
        assert hdab(client, pid, "issue").json()["status"] == "active"
        out = tmp_path / "job-out"
        out.mkdir()
        (out / "by_code.csv").write_text(FLAGGED)
        with session_scope(app.state.ctx.sessions) as session:
            rid = submit_outputs(session, job_id="job-1", node_id="site-a", pid=pid,
                                 requester=uid("alice"), output_dir=out,
                                 storage_dir=settings.resolved_airlock_dir,
                                 rules=OutputRules(), policy=app.state.ctx.policy,
                                 awaiting=["site-b"]).id
        later = tmp_path / "job-out-b"
        later.mkdir()
        (later / "by_code.csv").write_text("code,patients\nI10,40\n")

        def site_b_arrives() -> None:
            with session_scope(app.state.ctx.sessions) as session:
                submit_outputs(session, job_id="job-1", node_id="site-b", pid=pid,
                               requester=uid("alice"), output_dir=later,
                               storage_dir=settings.resolved_airlock_dir,
                               rules=OutputRules(), policy=app.state.ctx.policy)
        _walk(browser, settings, issuer, rid, site_b_arrives)


def _walk(browser, settings, issuer, rid, site_b_arrives) -> None:
    from playwright.sync_api import expect

    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    errors: list[str] = []
    with serve(create_central_app(settings), sock, lifespan="on"):
        context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"/airlock?request={rid}")
            page.get_by_label("Bearer token").fill(issuer.mint("olga", ["output_checker"]))
            page.get_by_test_id("signin").click()
            row = page.locator('[data-testid="file-row"][data-path="by_code.csv"]')
            expect(row).to_have_attribute("data-verdict", "review")
            expect(row.get_by_test_id("file-reasons")).to_contain_text(
                "under the threshold of 10 in a column not named as a count")
            expect(row.get_by_test_id("file-reasons")).not_to_contain_text("7")
            place = row.locator('[data-testid="place"][data-rule="small-number"]')
            expect(place).to_have_text("line 2, column 2: small-number")
            row.get_by_test_id("view-content").click()
            content = page.get_by_test_id("file-content")
            expect(content).to_have_text(FLAGGED)  # the whole file, as text
            flagged = content.get_by_test_id("flagged-line")
            expect(flagged).to_have_count(1)
            expect(flagged).to_have_attribute("data-line", "2")
            expect(flagged).to_have_text("I10,7\n")
            assert "small-number" in flagged.get_attribute("title")

            # olga approves: her buttons go (and stay gone on a fresh load).
            form, why = page.get_by_test_id("review-form"), page.get_by_test_id(
                "review-unavailable")
            expect(page.get_by_test_id("awaiting")).to_contain_text("site-b")
            page.get_by_test_id("approve").click()
            expect(page.get_by_test_id("review-done")).to_contain_text("approval is recorded")
            expect(form).to_be_hidden()
            expect(why).to_contain_text("You have approved")
            page.reload()
            expect(page.get_by_test_id("approvals")).to_have_text("1 of 2 approvals")
            expect(form).to_be_hidden()
            expect(page.get_by_test_id("approve")).to_be_hidden()

            # site-b's outputs arrive: the request says her review is void; she reviews again.
            site_b_arrives()
            page.goto("/airlock")
            row = page.locator(f'[data-testid="request-row"][data-rid="{rid}"]')
            expect(row).to_have_attribute("data-sites", "site-a site-b")
            expect(row.get_by_test_id("review-again")).to_be_visible()
            page.goto(f"/airlock?request={rid}")
            expect(page.get_by_test_id("site-section")).to_have_count(2)
            expect(page.get_by_test_id("review-note")).to_contain_text("site-b")
            expect(page.get_by_test_id("review-note")).to_contain_text("void")
            expect(page.get_by_test_id("void-reviews")).to_contain_text("1 earlier review")
            expect(page.get_by_test_id("approvals")).to_have_text("0 of 2 approvals")
            expect(page.locator('[data-testid="file-row"][data-name="site-b/by_code.csv"]')
                   ).to_have_count(1)
            expect(page.get_by_test_id("approve")).to_be_visible()
            page.get_by_test_id("approve").click()
            expect(form).to_be_hidden()

            # otto gives the second approval: released, and nobody's buttons remain.
            page.get_by_test_id("signout").click()
            page.get_by_label("Bearer token").fill(issuer.mint("otto", ["output_checker"]))
            page.get_by_test_id("signin").click()
            expect(page.get_by_test_id("approve")).to_be_visible()
            page.get_by_test_id("approve").click()
            expect(page.get_by_test_id("request-state")).to_have_text("released")
            expect(form).to_be_hidden()
            expect(why).to_contain_text("released")
            page.reload()
            expect(page.get_by_test_id("request-state")).to_have_text("released")
            expect(page.get_by_test_id("approve")).to_be_hidden()
        finally:
            context.close()
    assert errors == []
