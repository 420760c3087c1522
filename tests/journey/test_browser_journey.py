"""Every role's path through the demo in a real browser (Debian's Chromium via Playwright),
from the first address the demo prints, by clicking links only: no address is typed after
the first. Each person has their own browser context and signs in as the pages do today
(the token pasted into the page's box, kept in the tab's sessionStorage), with the tokens
the demo wrote (tokens.json). A screenshot of every step goes to
$SPE_TEST_ARTIFACTS (default test-artifacts/)/journey-browser-<start>/.

Started at `/` the whole path is the target (the home page and shared navigation of
issue 19, xfail until they are merged); started at `/catalogue` (the catalogue's address
the demo prints) it runs on the pages' own links today, as far as they lead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import browser as shared
from tests.browser import TIMEOUT_MS, artifacts_dir, shot
from tests.journey import glue, jobs

browser = shared.browser  # one headless Chromium for the module (tests/browser.py)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DATASET_A = "site-a/imaging-and-clinical-records"
JOB_TIMEOUT_MS = 180_000


@dataclass
class People:
    browser: object
    demo: object
    start: str
    artifacts: Path
    contexts: list = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    shots: list[str] = field(default_factory=list)

    def open(self, who: str):
        """A new browser for the person at the demo's first address (the only one typed)."""
        context = self.browser.new_context(base_url=self.demo.url, accept_downloads=True,
                                           viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{who}: {exc}"))
        page.goto(self.start)
        return page

    def shot(self, page, name: str) -> None:
        shot(page, self.artifacts, f"{len(self.shots) + 1:02d}-{name}")
        self.shots.append(name)


def pending(what: str) -> None:
    pytest.xfail(glue.PENDING[what])


def to_page(page, name: str, fallback) -> None:
    """By the shared navigation's link `name`; while there is none, by `fallback(page)`,
    the pages' own links (None: no link leads there today)."""
    from playwright.sync_api import expect

    link = glue.nav_link(page, name)
    if link.count():
        link.click()
    elif fallback is None:
        pending("home")
    else:
        fallback(page)
    expect(page.locator("body")).to_be_visible()


def permits_by_own_links(page) -> None:
    """Today, from the catalogue: a dataset, "apply", then the permit pages' list link."""
    page.get_by_test_id("result-title").first.click()
    page.get_by_test_id("apply-permit").click()
    page.get_by_test_id("nav-list").click()


def open_permit(page, section: str, pid: str) -> None:
    from playwright.sync_api import expect

    row = page.get_by_test_id(section).locator(f'[data-testid="permit-row"][data-pid="{pid}"]')
    expect(row).to_have_count(1)
    row.get_by_test_id("permit-link").click()
    expect(page.get_by_test_id("permit-id")).to_have_text(pid)


@pytest.fixture(params=["/", "/catalogue"], ids=["from-home", "from-catalogue"])
def people(request, browser, demo) -> Iterator[People]:
    start = request.param
    name = "journey-browser-" + ("home" if start == "/" else "catalogue")
    crowd = People(browser, demo, start, artifacts_dir(name))
    try:
        yield crowd
        assert crowd.errors == [], f"JavaScript errors on the pages: {crowd.errors}"
    finally:
        for context in crowd.contexts:
            context.close()


def test_every_role_reaches_each_step_by_clicking_links(people, demo):
    from playwright.sync_api import expect

    tokens = demo.tokens

    # ---- the researcher: catalogue, a dataset, a federated question, an application ----
    alice = people.open("alice")
    if people.start == "/":
        if glue.nav_link(alice, "catalogue").count() == 0:
            people.shot(alice, "home-missing")
            pending("home")
        people.shot(alice, "home")
        glue.nav_click(alice, "catalogue")
    expect(alice.get_by_test_id("search-form")).to_be_visible()
    alice.get_by_test_id("search-input").fill("imaging")
    alice.get_by_test_id("search-submit").click()
    result = alice.locator(f'[data-testid="result"][data-identifier="{DATASET_A}"]')
    expect(result).to_have_count(1)
    people.shot(alice, "researcher-catalogue-search")
    result.get_by_test_id("result-title").click()
    expect(alice.get_by_test_id("dataset-title")).to_be_visible()
    people.shot(alice, "researcher-dataset")

    alice.get_by_test_id("ask-question").click()
    glue.sign_in(alice, tokens["researcher"], "alice")
    alice.get_by_test_id("run").click()
    expect(alice.locator("#answer:not([hidden]), #query-error:not([hidden])")).to_have_count(1)
    expect(alice.get_by_test_id("answer")).to_be_visible()
    people.shot(alice, "researcher-federated-query")

    alice.go_back()  # the browser's back button: to the dataset, whose link applies
    alice.get_by_test_id("apply-permit").click()
    expect(alice.get_by_test_id("page-title")).to_have_text("Apply for a data permit")
    glue.sign_in(alice, tokens["researcher"], "alice")
    expect(alice.get_by_label("Datasets")).to_have_value(DATASET_A)  # from the link
    alice.get_by_label("Organisation").fill("University of Somewhere")
    alice.get_by_label("Title of the project").fill("Imaging counts by modality")
    alice.get_by_label("Summary").fill("How many studies of each modality site-a and "
                                       "site-b hold.")
    alice.get_by_label("Legal basis").fill("GDPR Art. 9(2)(j)")
    alice.get_by_label("Datasets").fill(f"{DATASET_A}\nsite-b/imaging-and-clinical-records\n")
    alice.get_by_label("I declare that no use prohibited by EHDS Art. 54 is intended.").check()
    people.shot(alice, "researcher-application")
    alice.get_by_test_id("submit-application").click()
    expect(alice).to_have_url(re.compile(r"/permits/view/P-\d{4}-[0-9a-f]+$"))
    pid = alice.url.rsplit("/", 1)[1]
    expect(alice.get_by_test_id("permit-status")).to_have_text("submitted")
    people.shot(alice, "researcher-sees-the-application")

    # ---- each holding institution's approver reviews it ----
    for key, site in (("approver", "site-a"), ("approver:bea", "site-b")):
        approver = people.open(key)
        to_page(approver, "permits", permits_by_own_links)
        glue.sign_in(approver, tokens[key], "(approver")
        open_permit(approver, "list-queue", pid)
        approver.get_by_test_id("review-approve").check()
        approver.get_by_test_id("send-review").click()
        expect(approver.get_by_test_id("action-done")).to_contain_text(f"{site}'s review")
        people.shot(approver, f"approver-{site}-reviews")

    # ---- the access body issues the permit ----
    hilde = people.open("hdab")
    to_page(hilde, "permits", permits_by_own_links)
    glue.sign_in(hilde, tokens["hdab"], "(hdab")
    open_permit(hilde, "list-decide", pid)
    hilde.get_by_label("Reason").fill("Meets EHDS Art. 68")
    hilde.get_by_test_id("decide-issue").click()
    expect(hilde.get_by_test_id("permit-status")).to_have_text("active")
    people.shot(hilde, "access-body-issues")

    # ---- the researcher sees the permit and sends a job under it ----
    alice.reload()
    expect(alice.get_by_test_id("permit-status")).to_have_text("active")
    people.shot(alice, "researcher-sees-the-permit")
    alice.get_by_test_id("job-under-permit").click()
    glue.sign_in(alice, tokens["researcher"], "alice")
    expect(alice.get_by_label("Permit", exact=True)).to_have_value(pid)
    for box in alice.get_by_test_id("f-node").all():
        box.check()
    alice.get_by_label("Python script (runs as main.py)").fill(jobs.SCRIPT)
    people.shot(alice, "researcher-new-job")
    alice.get_by_test_id("submit-job").click()
    expect(alice).to_have_url(re.compile(r"/jobs\?job=[^&]+$"))
    job_id = alice.url.split("job=", 1)[1]
    for site in ("site-a", "site-b"):
        expect(alice.locator(f'[data-testid="job-node"][data-node="{site}"]')
               ).to_have_attribute("data-state", "succeeded", timeout=JOB_TIMEOUT_MS)
    people.shot(alice, "researcher-job-succeeded")

    # ---- two output checkers review the airlock request ----
    for key in ("output_checker", "output_checker:oscar"):
        checker = people.open(key)
        to_page(checker, "airlock", None)  # no page links to /airlock today
        glue.sign_in(checker, tokens[key], "(output_checker")
        rows = checker.locator(f'[data-testid="request-row"][data-job="{job_id}"]')
        expect(rows.first).to_be_visible()
        if rows.count() != 1:
            pending("one-request")
        rows.first.get_by_test_id("request-link").click()
        people.shot(checker, f"checker-{key.split(':')[-1]}-reads")
        checker.get_by_label("Reason").fill("Aggregate counts, all at least 10")
        checker.get_by_test_id("approve").click()
        expect(checker.get_by_test_id("review-done")).to_be_visible()
        people.shot(checker, f"checker-{key.split(':')[-1]}-approves")

    # ---- the researcher downloads the released output ----
    to_page(alice, "jobs", None)
    row = alice.locator(f'[data-testid="job-row"][data-job="{job_id}"]')
    row.locator("a").first.click()
    download_link = alice.locator('[data-testid="download"][data-path="table.csv"]').first
    with alice.expect_download() as download:
        download_link.click()
    data = Path(download.value.path()).read_bytes()
    assert data.startswith(b"modality,n\n"), data
    people.shot(alice, "researcher-downloads")
    assert len(people.shots) >= 14, people.shots
