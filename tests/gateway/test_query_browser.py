"""The federated query page in a real browser: headless Chromium (Debian's) via Playwright,
against the real central app under uvicorn whose hub asks three real nodes over mutual TLS.

What a researcher does: sign in, build a question from rows, run a count and read each
institution's answer and the combined total; ask about a rare code and see it suppressed;
see a stopped institution reported unreachable while the others answer; send a bad query
from the JSON box and read the hub's reasons; ask for a stratified answer and read its
cells. Screenshots of each step are kept in $SPE_TEST_ARTIFACTS (default test-artifacts/)
for a person to look at.

The central app is its own demo issuer (`oidc_issuer` is its own URL), so the researcher's
token is verified there only: the nodes never see it, they trust the hub's signed context.
Every step asks as another user, each with a daily budget of its own at the nodes. The
page's values are the API's for the same question: a node perturbs a count the same way
whoever asks it again (cell-key method).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import browser as shared
from tests.browser import TIMEOUT_MS, artifacts_dir, shot
from tests.gateway.conftest import RARE, SITES, NodeServers
from tests.servers import bind, serve

pytestmark = pytest.mark.browser

browser = shared.browser  # one headless Chromium for the module (tests/browser.py)
DATASET = "site-a/imaging-and-clinical-records"


# ---- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return artifacts_dir("query-browser")


@dataclass
class Central:
    url: str
    issuer: object  # spe.identity.DemoIssuer, the central app's own
    nodes: NodeServers

    def token(self, user: str, roles: tuple[str, ...] = ("researcher",)) -> str:
        return self.issuer.mint(user, list(roles), name=user)

    def ask(self, user: str, query: dict) -> dict:
        """The same question through the API, as another user: what the page should show."""
        resp = httpx.post(f"{self.url}/api/v1/query", json=query, timeout=30,
                          headers={"Authorization": f"Bearer {self.token(user)}"})
        resp.raise_for_status()
        return resp.json()


@pytest.fixture
def central(node_servers: NodeServers, tmp_path: Path) -> Iterator[Central]:
    """The real central app under uvicorn, its hub configured with the three nodes."""
    from spe.app import create_central_app
    from spe.db.migrate import upgrade
    from spe.identity import demo_issuer

    # Bound first, so the issuer URL (which tokens must name) is known before the app is
    # built. The nodes keep their own settings: they never verify a user's token.
    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = node_servers.settings.model_copy(update={
        "database_url": f"sqlite:///{tmp_path / 'central.db'}",
        "federation_nodes": node_servers.urls, "oidc_issuer": url,
        "query_timeout_seconds": 5.0})
    upgrade(settings.resolved_database_url, "central")
    with serve(create_central_app(settings), sock, lifespan="on"):
        yield Central(url, demo_issuer(settings), node_servers)


@pytest.fixture
def page(browser, central):
    """A fresh browser context per test (its own session storage). Any JS error on the page
    fails the test."""
    context = browser.new_context(base_url=central.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        context.close()


# ---- helpers --------------------------------------------------------------------------



def sign_in(page, central: Central, user: str) -> None:
    from playwright.sync_api import expect

    page.get_by_label("Bearer token").fill(central.token(user))
    page.get_by_test_id("signin").click()
    expect(page.get_by_test_id("signed-in")).to_contain_text(f"{user} (researcher)")


def criterion(page, n: int):
    """The n-th criterion row (1-based)."""
    return page.get_by_test_id("criterion").nth(n - 1)


def set_condition(row, code: str, *, prefix: bool = False, negate: bool = False) -> None:
    row.get_by_label("Type").select_option("condition")
    row.get_by_label("Code system").select_option("icd-10")
    row.get_by_label("Code", exact=True).fill(code)
    if prefix:
        row.get_by_label("Prefix").check()
    if negate:
        row.get_by_label("NOT").check()


def run(page) -> None:
    """Run, and wait until the answer (or an error) is in and the page is no longer busy."""
    from playwright.sync_api import expect

    page.get_by_test_id("run").click()
    expect(page.locator("#answer:not([hidden]), #query-error:not([hidden])")).to_have_count(1)
    expect(page.get_by_test_id("results")).to_have_attribute("aria-busy", "false")
    expect(page.get_by_test_id("run")).to_be_enabled()


def node_row(page, site: str):
    return page.locator(f'[data-testid="node-row"][data-node="{site}"]')


def shown_json(page) -> dict:
    import json

    return json.loads(page.get_by_test_id("json").input_value())


def by_site(answer: dict) -> dict[str, dict]:
    return {n["node_id"]: n for n in answer["nodes"]}


FEMALE_NOT_CANCER = {"where": {"type": "and", "of": [
    {"type": "patient", "sex": "female"},
    {"type": "not", "of": {"type": "condition", "system": "icd-10", "code": "C",
                           "prefix": True}}]}, "answer": {"kind": "count"}}


# ---- tests ----------------------------------------------------------------------------


def test_a_count_across_three_nodes_then_a_rare_code_suppressed(page, central, artifacts):
    from playwright.sync_api import expect

    page.goto(f"/query?dataset={DATASET.replace('/', '%2F')}")
    expect(page.get_by_role("heading", name="Federated query")).to_be_visible()
    expect(page.get_by_test_id("dataset-note")).to_contain_text(
        "Asking all institutions; the dataset's institution is site-a")
    expect(page.get_by_test_id("results")).to_have_attribute("aria-live", "polite")
    sign_in(page, central, "qb-ursula")
    assert page.evaluate("sessionStorage.length") == 1

    # Female AND NOT (ICD-10 C*): two rows, the second negated with a prefix code.
    criterion(page, 1).get_by_label("Sex").select_option("female")
    page.get_by_test_id("add-criterion").click()
    expect(page.get_by_test_id("criterion")).to_have_count(2)
    set_condition(criterion(page, 2), "C", prefix=True, negate=True)
    page.get_by_test_id("advanced").locator("summary").click()
    assert shown_json(page) == FEMALE_NOT_CANCER  # the JSON box follows the form
    expect(page.get_by_test_id("json-state")).to_have_text("Follows the form.")
    shot(page, artifacts, "01-built")

    # A row added and removed again leaves the query as it was.
    page.get_by_test_id("add-criterion").click()
    criterion(page, 3).get_by_role("button", name="Remove criterion 3").click()
    expect(page.get_by_test_id("criterion")).to_have_count(2)
    assert shown_json(page) == FEMALE_NOT_CANCER

    # The busy state while the hub waits for the nodes (the request is held until seen).
    held = []
    page.route("**/api/v1/query", lambda route: held.append(route))
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("busy")).to_be_visible()
    expect(page.get_by_test_id("run")).to_be_disabled()
    expect(page.get_by_test_id("results")).to_have_attribute("aria-busy", "true")
    shot(page, artifacts, "02-busy")
    page.wait_for_function("() => true")  # let the route handler run
    assert len(held) == 1, "the page sent one query"
    held[0].continue_()
    expect(page.get_by_test_id("answer")).to_be_visible()
    expect(page.get_by_test_id("busy")).to_be_hidden()
    page.unroute("**/api/v1/query")

    expected = by_site(central.ask("qb-ursula-api", FEMALE_NOT_CANCER))
    rows = page.get_by_test_id("node-row")
    expect(rows).to_have_count(3)
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.node)") == list(SITES)
    shown = 0
    for site in SITES:
        row = node_row(page, site)
        status = expected[site]["status"]
        # 10 to 30 such women per site: a count near the threshold may be suppressed, as
        # its noise decides; the page says what the API says for the same question.
        assert status in ("answered", "suppressed"), expected[site]
        expect(row.get_by_test_id("node-status")).to_have_text(status)
        expect(row.get_by_test_id("node-ms")).to_have_text(re.compile(r"^\d[\d,]* ms$"))
        if status == "answered":
            value = expected[site]["answer"]["total"]["value"]
            expect(row.get_by_test_id("node-value")).to_have_text(f"{value:,}")
            shown += value
    expect(node_row(page, "site-a").get_by_test_id("node-id")).to_contain_text(
        "dataset's institution")
    if shown:
        expect(page.get_by_test_id("total-value")).to_have_text(f"{shown:,}")
    expect(page.get_by_test_id("sites")).to_have_text(
        "3 of 3 institutions answered; a combined answer needs at least 2.")
    shot(page, artifacts, "03-count")

    # The rare code: three patients at site-a, none elsewhere. Suppressed, never a number.
    page.get_by_test_id("signout").click()
    sign_in(page, central, "qb-victor")
    criterion(page, 1).get_by_role("button", name="Remove criterion 1").click()
    row = criterion(page, 1)
    row.get_by_label("NOT").uncheck()
    row.get_by_label("Prefix").uncheck()
    row.get_by_label("Code", exact=True).fill(RARE)
    assert shown_json(page)["where"] == {"type": "condition", "system": "icd-10",
                                         "code": RARE}
    run(page)
    a = node_row(page, "site-a")
    expect(a).to_have_attribute("data-status", "suppressed")
    expect(a.get_by_test_id("node-status")).to_have_text("suppressed")
    expect(a.get_by_test_id("node-count")).to_contain_text("suppressed")
    expect(a.get_by_test_id("cell-reason")).to_contain_text("fewer than 10 patients")
    expect(a.get_by_test_id("node-count")).not_to_contain_text("3")
    expect(a.get_by_test_id("node-notes")).to_contain_text("fewer than 10 patients")
    expect(a.get_by_test_id("node-value")).to_have_count(0)
    expect(page.get_by_test_id("total-text")).to_contain_text("No combined total")
    expect(page.get_by_test_id("total-value")).to_have_count(0)
    shot(page, artifacts, "04-rare-suppressed")


def test_a_stopped_node_is_shown_unreachable_while_the_others_answer(page, central,
                                                                      artifacts):
    from playwright.sync_api import expect

    central.nodes.running["site-b"].stop()
    page.goto("/query")
    expect(page.get_by_test_id("dataset-note")).to_be_hidden()
    sign_in(page, central, "qb-wendy")
    criterion(page, 1).get_by_label("Sex").select_option("female")
    run(page)
    b = node_row(page, "site-b")
    expect(b.get_by_test_id("node-status")).to_have_text("unreachable")
    expect(b.get_by_test_id("node-count")).to_contain_text("ConnectError")
    shown = 0
    for site in ("site-a", "site-c"):
        expect(node_row(page, site).get_by_test_id("node-status")).to_have_text("answered")
        shown += int(node_row(page, site).get_by_test_id("node-value").inner_text())
    expect(page.get_by_test_id("total-value")).to_have_text(f"{shown:,}")
    expect(page.get_by_test_id("sites")).to_have_text(
        "2 of 3 institutions answered; a combined answer needs at least 2.")
    shot(page, artifacts, "05-unreachable")

    # The same cohort as a yes/no question: yes, without a number.
    page.get_by_test_id("kind-boolean").check()
    run(page)
    expect(page.get_by_test_id("answer")).to_have_attribute("data-kind", "boolean")
    expect(node_row(page, "site-a").get_by_test_id("node-count")).to_have_text(
        "yes (at least 10)")
    expect(node_row(page, "site-b").get_by_test_id("node-status")).to_have_text("unreachable")
    expect(page.get_by_test_id("total-text")).to_have_text(
        "Yes: at least one institution has at least 10 such patients.")


def test_a_bad_query_shows_the_hubs_reasons(page, central, artifacts):
    from playwright.sync_api import expect

    page.goto("/query")
    # The page as it opens, Run at once: said on the page, nothing sent (no 401 yet).
    run(page)
    expect(page.get_by_test_id("error-heading")).to_contain_text("nothing was sent")
    expect(page.get_by_test_id("error-message")).to_have_text(
        ["Criterion 1: a patient criterion needs sex or age"])
    # Not signed in: the hub's 401, and what to do about it.
    criterion(page, 1).get_by_label("Sex").select_option("male")
    run(page)
    expect(page.get_by_test_id("error-heading")).to_contain_text("401")
    expect(page.get_by_test_id("query-error")).to_contain_text("Sign in with a researcher")

    sign_in(page, central, "qb-xavier")
    page.get_by_test_id("advanced").locator("summary").click()
    box = page.get_by_label("Query JSON")
    # Not JSON at all: said at once, nothing sent.
    box.fill('{"where": ')
    expect(page.get_by_test_id("json-state")).to_contain_text("Edited by hand")
    run(page)
    expect(page.get_by_test_id("error-heading")).to_contain_text("nothing was sent")

    # JSON the hub refuses: each of its reasons, as a list.
    box.fill('{"where": {"type": "patient"}, "answer": {"kind": "stratified"}}')
    # The form no longer overwrites an edited JSON.
    criterion(page, 1).get_by_label("Sex").select_option("female")
    assert shown_json(page)["where"] == {"type": "patient"}
    run(page)
    expect(page.get_by_test_id("error-heading")).to_contain_text("422")
    messages = page.get_by_test_id("error-message")
    expect(messages).to_have_count(2)
    expect(messages.nth(0)).to_have_text(
        "where.patient: a patient criterion needs sex or age")
    expect(messages.nth(1)).to_contain_text("answer: a stratified answer needs `by`")
    expect(page.get_by_test_id("answer")).to_be_hidden()
    shot(page, artifacts, "06-invalid-422")

    # Back to the form: the JSON follows it again.
    page.get_by_test_id("rebuild").click()
    assert shown_json(page)["where"] == {"type": "patient", "sex": "female"}


def test_a_stratified_answer_by_sex_shows_its_cells(page, central, artifacts):
    from playwright.sync_api import expect

    page.goto("/query")
    sign_in(page, central, "qb-yvonne")
    set_condition(criterion(page, 1), "C", prefix=True, negate=True)
    expect(page.get_by_test_id("by1")).to_be_disabled()
    page.get_by_test_id("kind-stratified").check()
    expect(page.get_by_test_id("by1")).to_be_enabled()
    page.get_by_label("By", exact=True).select_option("sex")
    query = shown_json(page)
    assert query["answer"] == {"kind": "stratified", "by": ["sex"]}
    run(page)
    expected = central.ask("qb-yvonne-api", query)
    table = page.get_by_test_id("cells-table")
    expect(table).to_be_visible()
    expect(table.locator("thead th")).to_have_text(
        ["Sex", *SITES, "All institutions"])
    rows = table.get_by_test_id("cell-row")
    expect(rows).to_have_count(len(expected["cells"]))
    keys = {c["key"]["sex"] for c in expected["cells"]}
    assert {"female", "male"} <= keys
    for cell in expected["cells"]:
        row = table.locator(f'[data-key="sex={cell["key"]["sex"]}"]')
        total = "suppressed" if cell["suppressed"] else f"{cell['value']:,}"
        expect(row.get_by_test_id("cell-total")).to_have_text(total)
    assert any(not c["suppressed"] for c in expected["cells"]), expected
    for site in SITES:
        expect(node_row(page, site).get_by_test_id("node-status")).to_have_text(
            by_site(expected)[site]["status"].replace("_", " "))
    shot(page, artifacts, "07-stratified")


def test_the_page_is_served_with_a_strict_content_security_policy(central):
    resp = httpx.get(f"{central.url}/query?dataset=x", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    assert "%ROOT%" not in resp.text
    for asset in ("query.js", "query.css"):
        assert httpx.get(f"{central.url}/query/static/{asset}", timeout=10).status_code == 200
    assert "/query" not in httpx.get(f"{central.url}/openapi.json", timeout=10).json()["paths"]
