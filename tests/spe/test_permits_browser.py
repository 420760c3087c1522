"""The whole permit path in a real browser: headless Chromium (Debian's) via Playwright,
against the real central app under uvicorn whose hub pushes permits to, and asks, three
real nodes over mutual TLS.

A researcher finds a dataset in the catalogue, applies for it and for a second
institution's with a colleague on the team, is told what is missing, and submits; the
approver of each holding institution approves from their queue, while an outsider
institution's approver is refused; the access body issues the permit, which reaches both
nodes; the researcher asks a federated question under it and gets exact counts where it
covers, a refusal elsewhere; the access body revokes it, the nodes hear at once, and the
researcher's next question is refused. Finally the node itself is asked directly, with a
correctly hub-signed context, and refuses the revoked permit too.

Every person has their own browser context (their own session storage). Screenshots of
each step go to $SPE_TEST_ARTIFACTS (default test-artifacts/)/permits-browser/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests import browser as shared
from tests.browser import TIMEOUT_MS, artifacts_dir, shot
from tests.gateway import conftest as gateway
from tests.gateway.conftest import RARE, SITES, NodeServers
from tests.servers import bind, serve

# The gateway's fixtures: three synthetic institutions' nodes under uvicorn, mutual TLS.
pki, node_dbs, node_servers = gateway.pki, gateway.node_dbs, gateway.node_servers

pytestmark = pytest.mark.browser

browser = shared.browser  # one headless Chromium for the module (tests/browser.py)
DATASET_A = "site-a/imaging-and-clinical-records"
DATASET_B = "site-b/imaging-and-clinical-records"


# ---- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return artifacts_dir("permits-browser")


@dataclass
class Central:
    url: str
    issuer: object  # spe.identity.DemoIssuer, the central app's own
    nodes: NodeServers

    def token(self, user: str, role: str, institution: str | None = None) -> str:
        return self.issuer.mint(user, [role], institution=institution, name=user)

    def uid(self, user: str) -> str:
        """A user id as the permits name people: subject@issuer."""
        return f"{user}@{self.url}"


@pytest.fixture
def central(node_servers: NodeServers, tmp_path: Path) -> Iterator[Central]:
    """The real central app under uvicorn: its own issuer, its hub configured with the three
    nodes, and a catalogue holding one dataset of each."""
    from spe.app import create_central_app
    from spe.identity import demo_issuer
    from tests.central import catalogued_central

    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = node_servers.settings.model_copy(update={
        "database_url": f"sqlite:///{tmp_path / 'central.db'}",
        "federation_nodes": node_servers.urls, "oidc_issuer": url,
        "query_timeout_seconds": 5.0})
    catalogued_central(settings.resolved_database_url, SITES, patients=40)
    with serve(create_central_app(settings), sock, lifespan="on"):
        yield Central(url, demo_issuer(settings), node_servers)


@dataclass
class People:
    """One browser context per person; any JS error on any of their pages fails the test."""

    browser: object
    central: Central
    contexts: list = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(self, user: str, role: str, institution: str | None = None, *,
             at: str = "/permits"):
        """A new browser for `user`, at `at`, signed in on the permit pages' form."""
        from playwright.sync_api import expect

        context = self.browser.new_context(base_url=self.central.url,
                                           viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{user}: {exc}"))
        page.goto(at)
        if at.startswith("/permits"):
            page.get_by_label("Bearer token").fill(
                self.central.token(user, role, institution))
            page.get_by_test_id("signin").click()
            expect(page.get_by_test_id("who")).to_contain_text(f"{user} ({role}")
        return page


@pytest.fixture
def people(browser, central) -> Iterator[People]:
    crowd = People(browser, central)
    try:
        yield crowd
        assert crowd.errors == [], f"JavaScript errors on the pages: {crowd.errors}"
    finally:
        for context in crowd.contexts:
            context.close()


# ---- helpers --------------------------------------------------------------------------



def open_from_list(page, section: str, pid: str) -> None:
    """Follow the application's link in one of the lists on /permits."""
    from playwright.sync_api import expect

    row = page.get_by_test_id(section).locator(f'[data-testid="permit-row"][data-pid="{pid}"]')
    expect(row).to_have_count(1)
    row.get_by_test_id("permit-link").click()
    expect(page.get_by_test_id("permit-id")).to_have_text(pid)


def review(page, decision: str = "approve", conditions: str = "") -> None:
    page.get_by_test_id(f"review-{decision}").check()
    if conditions:
        page.get_by_label("Conditions").fill(conditions)
    page.get_by_test_id("send-review").click()


def pushed(page) -> dict[str, str]:
    from playwright.sync_api import expect

    items = page.get_by_test_id("pushed-node")
    expect(items).to_have_count(2)
    return dict(items.evaluate_all("xs => xs.map(x => [x.dataset.node, x.dataset.outcome])"))


def node_row(page, site: str):
    return page.locator(f'[data-testid="node-row"][data-node="{site}"]')


def run_query(page) -> None:
    from playwright.sync_api import expect

    page.get_by_test_id("run").click()
    expect(page.locator("#answer:not([hidden]), #query-error:not([hidden])")).to_have_count(1)
    expect(page.get_by_test_id("run")).to_be_enabled()


# ---- the test -------------------------------------------------------------------------


def test_the_whole_permit_path_in_the_browser(people, central, artifacts):
    from playwright.sync_api import expect

    # 1. Alice finds site-a's dataset in the catalogue and applies for it.
    alice = people.open("alice", "researcher", at=f"/catalogue/datasets/{DATASET_A}")
    alice.get_by_test_id("apply-permit").click()
    expect(alice).to_have_url(f"{central.url}/permits/new?dataset={DATASET_A.replace('/', '%2F')}")
    expect(alice.get_by_test_id("page-title")).to_have_text("Apply for a data permit")
    alice.get_by_label("Bearer token").fill(central.token("alice", "researcher"))
    alice.get_by_test_id("signin").click()
    expect(alice.get_by_test_id("f-my-id")).to_have_text(central.uid("alice"))
    expect(alice.get_by_test_id("my-id")).to_have_text(central.uid("alice"))
    expect(alice.get_by_label("Datasets")).to_have_value(DATASET_A)  # from ?dataset=
    expect(alice.get_by_test_id("declaration-text")).to_contain_text("advertising or marketing")
    purposes = alice.get_by_label("Purpose (EHDS Art. 53(1))").locator("option")
    expect(purposes).to_have_count(6)
    expect(alice.get_by_label("Purpose (EHDS Art. 53(1))")).to_have_value("scientific_research")

    alice.get_by_label("Organisation").fill("University of Somewhere")
    alice.get_by_label("Title of the project").fill("Rx")  # too short: the API says so
    alice.get_by_label("Summary").fill("Counts of a rare condition across two institutions.")
    alice.get_by_label("Legal basis").fill("GDPR Art. 9(2)(j)")
    alice.get_by_label("Ethics committee reference").fill("EC-2026-117")
    alice.get_by_label("Team members (besides you)").fill(central.uid("carol"))
    alice.get_by_label("Datasets").fill(f"{DATASET_A}\n{DATASET_B}\n")
    # Pseudonymised data needs a justification (the box only shows then).
    expect(alice.get_by_label("Why anonymised data will not do (EHDS Art. 66)")).to_be_hidden()
    alice.get_by_test_id("f-form-pseudonymised").check()
    expect(alice.get_by_label("Why anonymised data will not do (EHDS Art. 66)")).to_be_visible()
    alice.get_by_test_id("f-form-anonymised").check()
    expect(alice.get_by_label("Why anonymised data will not do (EHDS Art. 66)")).to_be_hidden()

    alice.get_by_test_id("save-draft").click()
    expect(alice.get_by_test_id("form-error")).to_contain_text("422")
    expect(alice.get_by_test_id("error-title")).to_contain_text("at least 3 characters")
    expect(alice.get_by_label("Title of the project")).to_have_attribute("aria-invalid", "true")
    shot(alice, artifacts, "01-application-422")

    # Fixed; submitted without the Art. 54 declaration: saved as a draft, not submitted.
    alice.get_by_label("Title of the project").fill("Rare condition counts")
    alice.get_by_test_id("submit-application").click()
    expect(alice.get_by_test_id("form-error")).to_contain_text("409")
    expect(alice.get_by_test_id("form-error")).to_contain_text("EHDS Art. 54")
    expect(alice.get_by_test_id("form-error")).to_contain_text("Saved as draft P-")
    # The address now names the saved draft (a second save edits it, not a new one).
    expect(alice).to_have_url(re.compile(r"/permits/edit/P-\d{4}-[0-9a-f]+$"))
    pid = alice.url.rsplit("/", 1)[1]
    shot(alice, artifacts, "02-application-409")

    alice.get_by_label("I declare that no use prohibited by EHDS Art. 54 is intended.").check()
    alice.get_by_test_id("submit-application").click()
    expect(alice).to_have_url(f"{central.url}/permits/view/{pid}")
    expect(alice.get_by_test_id("permit-status")).to_have_text("submitted")
    expect(alice.get_by_test_id("waiting-for")).to_have_text(
        "Still to review: site-a, site-b.")
    expect(alice.get_by_test_id("members")).to_have_text(central.uid("carol"))
    expect(alice.get_by_test_id("purpose")).to_contain_text("Scientific research")
    expect(alice.get_by_test_id("dataset-row")).to_have_count(2)
    expect(alice.get_by_test_id("event-row")).to_have_count(3)  # create, edit, submit
    expect(alice.get_by_test_id("no-actions")).to_be_visible()  # submitted: nothing to edit
    shot(alice, artifacts, "03-submitted")

    # 2. site-a's approver finds it in the queue and approves, with a condition.
    bob = people.open("bob", "approver", "site-a")
    expect(bob.get_by_test_id("notification").filter(has_text=pid)).to_have_count(1)
    open_from_list(bob, "list-queue", pid)
    review(bob, conditions="Results leave only as aggregates")
    expect(bob.get_by_test_id("action-done")).to_have_text(
        "site-a's review is recorded: approved.")
    expect(bob.get_by_test_id("permit-status")).to_have_text("submitted")
    expect(bob.get_by_test_id("waiting-for")).to_have_text("Still to review: site-b.")
    expect(bob.get_by_test_id("reviewed-note")).to_contain_text("site-a has reviewed")
    shot(bob, artifacts, "04-site-a-approves")

    # 3. An approver of site-c (which holds none of the datasets) may neither read nor approve.
    cid = people.open("cid", "approver", "site-c", at="/permits")
    expect(cid.get_by_test_id("list-queue").get_by_test_id("queue-table-empty")).to_be_visible()
    cid.goto(f"/permits/view/{pid}")
    expect(cid.get_by_test_id("page-error")).to_contain_text("403")
    review(cid)
    expect(cid.get_by_test_id("action-error")).to_contain_text("Refused (403)")
    expect(cid.get_by_test_id("action-error")).to_contain_text(
        "only an approver of an institution holding a requested dataset reviews")
    shot(cid, artifacts, "05-site-c-refused")

    # 4. site-b's approver approves: every institution has.
    bea = people.open("bea", "approver", "site-b")
    open_from_list(bea, "list-queue", pid)
    review(bea)
    expect(bea.get_by_test_id("permit-status")).to_have_text("approved")
    expect(bea.get_by_test_id("institution-row")).to_have_text(
        ["site-aapproved", "site-bapproved"])
    expect(bea.get_by_test_id("conditions")).to_contain_text("only as aggregates")
    shot(bea, artifacts, "06-site-b-approves")

    # 5. The access body issues it; the permit goes to both nodes.
    hilde = people.open("hilde", "hdab")
    open_from_list(hilde, "list-decide", pid)
    expect(hilde.get_by_test_id("review")).to_have_count(2)
    hilde.get_by_label("Reason").fill("Meets EHDS Art. 68")
    hilde.get_by_test_id("decide-issue").click()
    expect(hilde.get_by_test_id("permit-status")).to_have_text("active")
    assert pushed(hilde) == {"site-a": "delivered", "site-b": "delivered"}
    expect(hilde.get_by_test_id("decide-revoke")).to_be_visible()
    shot(hilde, artifacts, "07-issued")

    # 6. Alice sees it active, and asks a federated question under it.
    alice.goto("/permits")
    row = alice.get_by_test_id("list-mine").locator(f'[data-pid="{pid}"]')
    expect(row.get_by_test_id("status")).to_have_text("active")
    expect(alice.get_by_test_id("notification").filter(has_text="issued by the access body")
           ).to_have_count(1)
    shot(alice, artifacts, "08-active-for-alice")
    row.get_by_test_id("permit-link").click()
    expect(alice.get_by_test_id("permit-status")).to_have_text("active")
    alice.get_by_test_id("ask-under-permit").click()
    expect(alice).to_have_url(f"{central.url}/query?permit={pid}")
    expect(alice.get_by_test_id("permit-note")).to_contain_text(f"Asking under permit {pid}")
    expect(alice.get_by_test_id("signed-in")).to_contain_text("alice (researcher)")
    first = alice.get_by_test_id("criterion").first
    first.get_by_label("Type").select_option("condition")
    first.get_by_label("Code", exact=True).fill(RARE)
    run_query(alice)
    a, b, c = (node_row(alice, s) for s in SITES)
    expect(a.get_by_test_id("node-status")).to_have_text("answered")
    expect(a.get_by_test_id("node-value")).to_have_text("3")  # exact, under the threshold
    expect(b.get_by_test_id("node-status")).to_have_text("answered")
    expect(b.get_by_test_id("node-value")).to_have_text("0")
    expect(c.get_by_test_id("node-status")).to_have_text("refused")
    expect(c.get_by_test_id("node-count")).to_contain_text("unknown to this node")
    expect(alice.get_by_test_id("total-value")).to_have_text("3")
    shot(alice, artifacts, "09-query-under-permit")

    # 7. The access body revokes it; both nodes hear at once.
    hilde.get_by_label("Reason").fill("Breach of the conditions")
    hilde.get_by_test_id("decide-revoke").click()
    expect(hilde.get_by_test_id("permit-status")).to_have_text("revoked")
    assert pushed(hilde) == {"site-a": "delivered", "site-b": "delivered"}
    expect(hilde.get_by_test_id("event-row").last).to_contain_text("Breach of the conditions")
    shot(hilde, artifacts, "10-revoked")

    # 8. Alice's next question under the permit is refused, with the reason.
    run_query(alice)
    error = alice.get_by_test_id("query-error")
    expect(error).to_contain_text(f"The hub refused the query under permit {pid} (403)")
    expect(error.get_by_test_id("error-message")).to_contain_text("revoked")
    expect(alice.get_by_test_id("answer")).to_be_hidden()
    shot(alice, artifacts, "11-refused-after-revocation")

    # 9. Past the hub: a correctly hub-signed permit-tier query at site-a is refused there.
    assert_node_refuses(central, pid)

    for name in ("01-application-422", "02-application-409", "03-submitted",
                 "04-site-a-approves", "05-site-c-refused", "06-site-b-approves",
                 "07-issued", "08-active-for-alice", "09-query-under-permit", "10-revoked",
                 "11-refused-after-revocation"):
        path = artifacts / f"{name}.png"
        assert path.is_file(), path
        assert path.stat().st_size > 0, path


def assert_node_refuses(central: Central, pid: str) -> None:
    from spe.pki import client_ssl_context, private_key_of
    from spe.wire.context import ContextSigner
    from spe.wire.query import Query

    nodes = central.nodes
    query = Query.model_validate({"where": {"type": "condition", "system": "icd-10",
                                            "code": RARE}})
    context = ContextSigner(private_key_of(nodes.pki / "hub.key")).sign(
        user=central.uid("alice"), roles=["researcher"], tier="permit",
        query_hash=query.digest(), node_id="site-a", permit=pid)
    with httpx.Client(base_url=nodes.urls["site-a"], timeout=5,
                      verify=client_ssl_context(nodes.pki, "hub")) as client:
        resp = client.post("/api/v1/query", json={"query": query.model_dump(mode="json")},
                           headers={"X-SPE-Hub-Context": context})
    assert resp.status_code == 403, resp.text
    assert "not active" in resp.json()["detail"]


def test_the_pages_are_served_with_a_strict_content_security_policy(central):
    for path in ("/permits", "/permits/new?dataset=x", "/permits/view/P-1",
                 "/permits/edit/P-1"):
        resp = httpx.get(f"{central.url}{path}", timeout=10)
        assert resp.status_code == 200, path
        assert resp.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in resp.headers["content-security-policy"]
        assert "%ROOT%" not in resp.text
    for asset in ("permits.js", "permits.css", "permits.html"):
        assert httpx.get(f"{central.url}/permits/static/{asset}", timeout=10).status_code == 200
    paths = httpx.get(f"{central.url}/openapi.json", timeout=10).json()["paths"]
    assert not any(p.startswith("/permits") for p in paths)
