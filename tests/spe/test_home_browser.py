"""The home page, the navigation every page shares and the API docs, in a real browser
(headless Chromium via Playwright, against the central app under uvicorn).

`/` is a page (it was a JSON 404) linking every page; each navigation link reaches its
page with no script error nor CSP violation, and no link on any page is dead; the
navigation counts what waits for an approver, the access body and an output checker from
real applications and airlock requests; /docs and /redoc render from the package's assets
with every request to another host blocked."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient

from spe.airlock import OutputRules
from spe.airlock.review.service import submit_outputs
from spe.app import create_central_app
from spe.db import session_scope
from spe.identity import DemoIssuer, demo_issuer
from spe.settings import Settings
from spe.web.pages import LINKS
from tests import browser as shared
from tests.browser import TIMEOUT_MS, artifacts_dir, shot
from tests.central import catalogued_central
from tests.servers import bind, serve
from tests.spe.test_permits import apply_and_submit, uid

pytestmark = pytest.mark.browser
browser = shared.browser

#: Each navigation link's page, known by its heading.
HEADINGS = {
    "home": "EHDS secure processing environment",
    "catalogue": "Dataset catalogue",
    "query": "Federated query",
    "permits": "Applications and permits",
    "permit-new": "Apply for a data permit",
    "jobs": "Jobs",
    "fed": "Federated runs",
    "airlock": "Airlock review",
    "code-reviews": "Code review",
    "docs": "API documentation",
}


@dataclass
class Central:
    url: str
    issuer: DemoIssuer
    pid: str  # submitted: waiting for site-a's and site-b's review
    rid: str  # an airlock request waiting for two checkers

    def token(self, user: str, role: str, institution: str | None = None) -> str:
        return self.issuer.mint(user, [role], institution=institution)


@pytest.fixture(scope="module")
def central(tmp_path_factory) -> Iterator[Central]:
    tmp = tmp_path_factory.mktemp("home")
    database_url = catalogued_central(f"sqlite:///{tmp / 'central.db'}",
                                      ("site-a", "site-b"), patients=100,
                                      conditions={"C71": 20})
    settings = Settings(data_dir=tmp, database_url=database_url,
                        oidc_issuer="http://central.test")
    issuer = demo_issuer(settings)
    app = create_central_app(settings)
    with TestClient(app, base_url="http://central.test") as client:
        client.as_ = lambda user, role, institution=None: {  # type: ignore[attr-defined]
            "Authorization": "Bearer " + issuer.mint(user, [role], institution=institution)}
        pid = apply_and_submit(client)
        out = tmp / "job-out"
        out.mkdir()
        (out / "summary.csv").write_text("group,count\nall,120\n")
        with session_scope(app.state.ctx.sessions) as session:
            rid = submit_outputs(session, job_id="job-1", node_id="site-a", pid=pid,
                                 requester=uid("alice"), output_dir=out,
                                 storage_dir=settings.resolved_airlock_dir,
                                 rules=OutputRules(), policy=app.state.ctx.policy).id
    sock = bind()
    with serve(create_central_app(settings), sock, lifespan="on"):
        yield Central(f"http://127.0.0.1:{sock.getsockname()[1]}", issuer, pid, rid)


@dataclass
class Watched:
    page: object
    errors: list[str]  # uncaught exceptions and console errors (a CSP refusal is one)
    offsite: list[str]  # requests to any host but the server's, blocked


def _open(browser, central: Central) -> tuple[object, Watched]:
    context = browser.new_context(base_url=central.url, viewport={"width": 1280,
                                                                  "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    watched = Watched(context.new_page(), [], [])
    here = urlparse(central.url).netloc

    def only_here(route):
        if urlparse(route.request.url).netloc == here:
            route.continue_()
        else:
            watched.offsite.append(route.request.url)
            route.abort()

    context.route("**/*", only_here)
    watched.page.on("pageerror", lambda exc: watched.errors.append(f"pageerror: {exc}"))
    watched.page.on("console", lambda msg: watched.errors.append(f"console: {msg.text}")
                    if msg.type == "error" else None)
    return context, watched


def _nav(page):
    return page.get_by_test_id("site-nav")


def test_home_page_links_every_page_and_no_link_is_dead(browser, central):
    from playwright.sync_api import expect

    context, w = _open(browser, central)
    page = w.page
    artifacts = artifacts_dir("home")
    try:
        resp = page.goto("/")
        assert resp.status == 200, "/ is still not a page"
        assert resp.headers["content-type"].startswith("text/html")
        expect(page.locator("h1")).to_have_text(HEADINGS["home"])
        shot(page, artifacts, "home")
        names = [name for name, _, _ in LINKS]
        assert sorted(names) == sorted(HEADINGS)  # every link is walked below
        seen: set[str] = set()
        for name in names:
            page.goto("/")
            _nav(page).locator(f'a[data-nav="{name}"]').click()
            expect(page.locator("h1").first).to_contain_text(HEADINGS[name])
            expect(_nav(page).locator(f'a[data-nav="{name}"]')).to_have_attribute(
                "aria-current", "page")
            expect(_nav(page)).to_have_attribute("data-ready", "true")
            shot(page, artifacts, f"nav-{name}")
            # Every link this page shows (the navigation's, the page's own) answers.
            for href in page.eval_on_selector_all(
                    "a[href]", "els => els.map(a => a.href)"):
                target = urlparse(href)
                if target.netloc == urlparse(central.url).netloc:
                    seen.add(target.path + (f"?{target.query}" if target.query else ""))
        assert len(seen) >= len(names)
        for path in sorted(seen):
            answer = context.request.get(path)
            assert answer.status < 400, f"dead link {path}: HTTP {answer.status}"
    finally:
        context.close()
    assert w.errors == []
    assert w.offsite == []


def _waiting(page, kind: str):
    return _nav(page).locator(f'[data-waiting="{kind}"]')


def test_the_navigation_shows_who_is_signed_in_and_what_waits_for_them(browser, central):
    from playwright.sync_api import expect

    context, w = _open(browser, central)
    page = w.page
    try:
        page.goto("/")
        expect(_nav(page).get_by_test_id("nav-who")).to_have_text("Not signed in")
        expect(_nav(page).locator("[data-waiting]")).to_have_count(0)

        # site-a's approver: the submitted application waits for site-a's review.
        page.get_by_label("Bearer token").fill(central.token("bob", "approver", "site-a"))
        page.get_by_test_id("signin").click()
        expect(_nav(page).get_by_test_id("nav-who")).to_contain_text("approver, site-a")
        expect(_waiting(page, "approvals")).to_have_attribute("data-count", "1")
        expect(_waiting(page, "approvals")).to_have_text("1 application to review")
        _waiting(page, "approvals").click()
        expect(page).to_have_url(f"{central.url}/permits")
        # Signed in at home is signed in on every page: the queue is there, no sign-in.
        expect(_waiting(page, "approvals")).to_have_attribute("data-count", "1")
        expect(page.get_by_test_id("who")).to_contain_text("bob")
        expect(page.get_by_test_id("queue-table")).to_contain_text(central.pid)

        # Once site-a has reviewed, nothing waits for it (site-b's approver: still one).
        client = context.request
        answer = client.post(f"/api/v1/permits/{central.pid}/reviews",
                             data={"decision": "approve", "reason": ""},
                             headers={"Authorization": "Bearer "
                                      + central.token("bob", "approver", "site-a")})
        assert answer.status == 200, answer.text()
        page.goto("/")
        expect(_waiting(page, "approvals")).to_have_attribute("data-count", "0")
        page.get_by_test_id("signout").click()
        page.get_by_label("Bearer token").fill(central.token("bea", "approver", "site-b"))
        page.get_by_test_id("signin").click()
        expect(_waiting(page, "approvals")).to_have_attribute("data-count", "1")

        # The access body: nothing to decide until every institution has approved.
        page.get_by_test_id("signout").click()
        page.get_by_label("Bearer token").fill(central.token("hilde", "hdab"))
        page.get_by_test_id("signin").click()
        expect(_waiting(page, "decisions")).to_have_attribute("data-count", "0")

        # An output checker: one airlock request waits; the link goes to the queue.
        page.get_by_test_id("signout").click()
        page.get_by_label("Bearer token").fill(central.token("olga", "output_checker"))
        page.get_by_test_id("signin").click()
        expect(_nav(page).get_by_test_id("nav-who")).to_contain_text("output_checker")
        expect(_waiting(page, "reviews")).to_have_attribute("data-count", "1")
        expect(_waiting(page, "reviews")).to_have_text("1 output to review")
        _waiting(page, "reviews").click()
        expect(page).to_have_url(f"{central.url}/airlock")
        expect(page.locator("h1")).to_have_text(HEADINGS["airlock"])

        # The researcher: their jobs running and outputs released (none of either here).
        page.goto("/")
        page.get_by_test_id("signout").click()
        page.get_by_label("Bearer token").fill(central.token("alice", "researcher"))
        page.get_by_test_id("signin").click()
        expect(_waiting(page, "jobs")).to_have_attribute("data-count", "0")
        expect(_waiting(page, "jobs")).to_have_attribute("href", "/jobs")
        expect(page.locator('.card[data-role="researcher"]')).to_have_attribute(
            "data-mine", "true")
        # Signing out at home signs out of every page.
        page.get_by_test_id("signout").click()
        expect(_nav(page).get_by_test_id("nav-who")).to_have_text("Not signed in")
        _nav(page).locator('a[data-nav="permits"]').click()
        expect(page.get_by_test_id("signin-needed")).to_be_visible()
        expect(_nav(page).get_by_test_id("nav-who")).to_have_text("Not signed in")
    finally:
        context.close()
    assert w.errors == []


def test_checker_count_leaves_out_requests_already_reviewed_by_them(browser, central):
    from playwright.sync_api import expect

    context, w = _open(browser, central)
    page = w.page
    try:
        answer = context.request.post(
            f"/api/v1/airlock/requests/{central.rid}/reviews",
            data={"decision": "approve", "reason": "aggregate counts only"},
            headers={"Authorization": "Bearer " + central.token("otto", "output_checker")})
        assert answer.status == 200, answer.text()
        page.goto("/")
        page.get_by_label("Bearer token").fill(central.token("otto", "output_checker"))
        page.get_by_test_id("signin").click()
        expect(_waiting(page, "reviews")).to_have_attribute("data-count", "0")
        page.get_by_test_id("signout").click()
        page.get_by_label("Bearer token").fill(central.token("olga", "output_checker"))
        page.get_by_test_id("signin").click()
        expect(_waiting(page, "reviews")).to_have_attribute("data-count", "1")
    finally:
        context.close()
    assert w.errors == []


@pytest.mark.parametrize(("path", "rendered"), [
    ("/docs", ".swagger-ui .opblock"),
    ("/redoc", "[data-section-id]"),
])
def test_api_docs_render_offline_under_the_pages_csp(browser, central, path, rendered):
    from playwright.sync_api import expect

    context, w = _open(browser, central)
    page = w.page
    try:
        resp = page.goto(path)
        assert resp.status == 200
        assert "script-src 'self'" in resp.headers["content-security-policy"]
        expect(page.locator(rendered).first).to_be_visible()
        expect(page.locator("body")).to_contain_text("/api/v1/permits")
        expect(_nav(page).locator('a[data-nav="docs"]')).to_be_visible()
        shot(page, artifacts_dir("home"), f"docs{path.replace('/', '-')}")
    finally:
        context.close()
    assert w.offsite == [], "the docs asked another host"
    if path == "/redoc":
        # ReDoc's bundle inserts two <style>s before it can be given the nonce and links its
        # vendor's logo from another host: the CSP refuses them (what it is for) and says
        # so in the console; nothing else may go wrong.
        refused = [e for e in w.errors if "Content Security Policy" in e]
        assert len(refused) <= 3, refused
        w.errors[:] = [e for e in w.errors if e not in refused]
    assert w.errors == []
