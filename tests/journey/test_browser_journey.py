"""Every role's path through the demo in a real browser (Debian's Chromium via Playwright),
from the home page `/` by clicking links only: the shared navigation's (`data-nav`), what
waits for each person (`data-waiting`) and the pages' own links. No address is typed after
`/`, and no page is reloaded or gone back to.

Each person has their own browser (a context, one tab) and signs in once at `/` with the
token the demo wrote for their role (tokens.json): signing in there signs in every page of
the tab. A screenshot of every step goes to $SPE_TEST_ARTIFACTS (default test-artifacts/)
/journey-browser/, numbered in order.

The path: the researcher searches the catalogue, opens a dataset, asks a federated
question about it and applies for a permit for it and a second institution's dataset; each
of the two institutions' approvers approves; the access body issues the permit; the
researcher sends a job under it and sees it succeed at both; two output checkers review
the job's one airlock request (both sites' outputs in it); the researcher downloads the
released file.
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

DATASET_A, DATASET_B = jobs.DATASET_A, jobs.DATASET_B
JOB_TIMEOUT_MS = 180_000

#: Each step of each role's path, a screenshot each, in order.
STEPS = [
    "researcher-home-signed-in", "researcher-catalogue-search", "researcher-dataset",
    "researcher-federated-query", "researcher-application", "researcher-sees-the-application",
    "approver-site-a-approves", "approver-site-b-approves", "access-body-issues",
    "researcher-sees-the-permit", "researcher-new-job", "researcher-job-succeeded",
    "checker-olga-reads", "checker-olga-approves", "checker-oscar-reads",
    "checker-oscar-approves", "researcher-sees-the-outputs", "researcher-downloaded",
]


@dataclass
class People:
    browser: object
    demo: object
    artifacts: Path
    contexts: list = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    shots: list[str] = field(default_factory=list)

    def open(self, who: str):
        """A new browser for a person at `/` (the only address typed), signed in there
        with the demo's token for `who` (a key of tokens.json)."""
        from playwright.sync_api import expect

        context = self.browser.new_context(base_url=self.demo.url, accept_downloads=True,
                                           viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{who}: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"{who}: console: {msg.text}")
                if msg.type == "error" else None)
        page.goto("/")
        expect(page.get_by_test_id("page-title")).to_have_text(
            "EHDS secure processing environment")
        page.get_by_label("Bearer token").fill(self.demo.tokens[who])
        page.get_by_test_id("signin").click()
        expect(page.get_by_test_id("signed-in")).to_be_visible()
        nav = page.get_by_test_id("site-nav")
        expect(nav).to_have_attribute("data-signed-in", "true")
        expect(nav).to_have_attribute("data-ready", "true")
        return page

    def shot(self, page, name: str) -> None:
        shot(page, self.artifacts, f"{len(self.shots) + 1:02d}-{name}")
        self.shots.append(name)


def signed_in(page, name: str) -> None:
    """The navigation says who is signed in on this page: the person signed in at `/`."""
    from playwright.sync_api import expect

    nav = page.get_by_test_id("site-nav")
    expect(nav).to_have_attribute("data-ready", "true")
    expect(nav.get_by_test_id("nav-who")).to_contain_text(f"Signed in as {name}")


def waiting(page, kind: str):
    """The navigation's link to what waits for this person (`data-waiting`)."""
    return page.get_by_test_id("site-nav").locator(f'a[data-waiting="{kind}"]')


def follow_waiting(page, kind: str) -> None:
    """Follow it once something waits (a journey's own work; other tests of the session may
    have left more)."""
    from playwright.sync_api import expect

    link = waiting(page, kind)
    expect(link).to_have_attribute("data-count", re.compile(r"^[1-9]\d*$"))
    link.click()


def open_permit(page, section: str, pid: str) -> None:
    from playwright.sync_api import expect

    row = page.get_by_test_id(section).locator(f'[data-testid="permit-row"][data-pid="{pid}"]')
    expect(row).to_have_count(1)
    row.get_by_test_id("permit-link").click()
    expect(page.get_by_test_id("permit-id")).to_have_text(pid)


def find_dataset(page, people: People, shoot: bool) -> None:
    """From any page: the catalogue by the navigation, a search, the dataset's page."""
    from playwright.sync_api import expect

    glue.nav_click(page, "catalogue")
    expect(page.get_by_test_id("search-form")).to_be_visible()
    page.get_by_test_id("search-input").fill("imaging")
    page.get_by_test_id("search-submit").click()
    result = page.locator(f'[data-testid="result"][data-identifier="{DATASET_A}"]')
    expect(result).to_have_count(1)
    if shoot:
        people.shot(page, "researcher-catalogue-search")
    result.get_by_test_id("result-title").click()
    expect(page.get_by_test_id("dataset-title")).to_be_visible()
    if shoot:
        people.shot(page, "researcher-dataset")


@pytest.fixture
def people(browser, demo) -> Iterator[People]:
    crowd = People(browser, demo, artifacts_dir("journey-browser"))
    for old in crowd.artifacts.glob("*.png"):
        old.unlink()  # this run's screenshots only
    try:
        yield crowd
        assert crowd.errors == [], f"JavaScript errors on the pages: {crowd.errors}"
    finally:
        for context in crowd.contexts:
            context.close()


def test_every_role_reaches_each_step_by_clicking_links_from_home(people, demo):
    from playwright.sync_api import expect

    # ---- the researcher: catalogue, a dataset, a federated question, an application ----
    alice = people.open("researcher")
    signed_in(alice, "alice")
    for name in glue.NAV:  # the navigation links every page
        expect(glue.nav_link(alice, name)).to_have_count(1)
    people.shot(alice, "researcher-home-signed-in")
    find_dataset(alice, people, shoot=True)

    alice.get_by_test_id("ask-question").click()
    signed_in(alice, "alice")  # signed in at home
    # The form starts with an empty patient criterion (the hub refuses it, with the reason):
    # adults, as a researcher would ask.
    alice.get_by_label("Age from").fill("18")
    alice.get_by_test_id("run").click()
    said = alice.locator("#answer:not([hidden]), #query-error:not([hidden])")
    expect(said).to_have_count(1)
    assert alice.get_by_test_id("query-error").is_hidden(), said.inner_text()
    expect(alice.get_by_test_id("node-table")).to_contain_text("site-a")
    people.shot(alice, "researcher-federated-query")

    find_dataset(alice, people, shoot=False)
    alice.get_by_test_id("apply-permit").click()
    expect(alice.get_by_test_id("page-title")).to_have_text("Apply for a data permit")
    signed_in(alice, "alice")
    expect(alice.get_by_label("Datasets")).to_have_value(DATASET_A)  # from the link
    alice.get_by_label("Organisation").fill("University of Somewhere")
    alice.get_by_label("Title of the project").fill("Imaging counts by modality")
    alice.get_by_label("Summary").fill("How many studies of each modality site-a and "
                                       "site-b hold.")
    alice.get_by_label("Legal basis").fill("GDPR Art. 9(2)(j)")
    alice.get_by_label("Datasets").fill(f"{DATASET_A}\n{DATASET_B}\n")
    alice.get_by_label("I declare that no use prohibited by EHDS Art. 54 is intended.").check()
    people.shot(alice, "researcher-application")
    alice.get_by_test_id("submit-application").click()
    expect(alice).to_have_url(re.compile(r"/permits/view/P-\d{4}-[0-9a-f]+$"))
    pid = alice.url.rsplit("/", 1)[1]
    expect(alice.get_by_test_id("permit-status")).to_have_text("submitted")
    people.shot(alice, "researcher-sees-the-application")

    # ---- each holding institution's approver: from what waits for them ----
    for key, site in (("approver", "site-a"), ("approver:bea", "site-b")):
        approver = people.open(key)
        follow_waiting(approver, "approvals")
        open_permit(approver, "list-queue", pid)
        approver.get_by_test_id("review-approve").check()
        approver.get_by_test_id("send-review").click()
        expect(approver.get_by_test_id("action-done")).to_contain_text(f"{site}'s review")
        expect(waiting(approver, "approvals")).to_have_attribute("data-count", "0")
        people.shot(approver, f"approver-{site}-approves")

    # ---- the access body issues the permit ----
    hilde = people.open("hdab")
    follow_waiting(hilde, "decisions")
    open_permit(hilde, "list-decide", pid)
    hilde.get_by_label("Reason").fill("Meets EHDS Art. 68")
    hilde.get_by_test_id("decide-issue").click()
    expect(hilde.get_by_test_id("permit-status")).to_have_text("active")
    expect(waiting(hilde, "decisions")).to_have_attribute("data-count", "0")
    people.shot(hilde, "access-body-issues")

    # ---- the researcher finds the permit active and sends a job under it ----
    glue.nav_click(alice, "permits")
    open_permit(alice, "list-mine", pid)
    expect(alice.get_by_test_id("permit-status")).to_have_text("active")
    people.shot(alice, "researcher-sees-the-permit")
    alice.get_by_test_id("job-under-permit").click()
    signed_in(alice, "alice")
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

    # ---- two output checkers: the job's one airlock request, from what waits ----
    for key, name in (("output_checker", "olga"), ("output_checker:oscar", "oscar")):
        checker = people.open(key)
        follow_waiting(checker, "reviews")
        rows = checker.locator(f'[data-testid="request-row"][data-job="{job_id}"]')
        expect(rows).to_have_count(1)
        expect(rows).to_have_attribute("data-sites", "site-a site-b")
        rows.get_by_test_id("request-link").click()
        for site in ("site-a", "site-b"):
            expect(checker.locator(f'[data-testid="site-section"][data-node="{site}"]')
                   ).to_be_visible()
        people.shot(checker, f"checker-{name}-reads")
        checker.get_by_label("Reason").fill("Aggregate counts, all at least 10")
        checker.get_by_test_id("approve").click()
        expect(checker.get_by_test_id("review-done")).to_be_visible()
        people.shot(checker, f"checker-{name}-approves")

    # ---- the researcher: the released output, from what waits, downloaded ----
    glue.nav_click(alice, "home")  # any page drawn now counts the release
    follow_waiting(alice, "outputs")
    row = alice.locator(f'[data-testid="job-row"][data-job="{job_id}"]')
    row.locator("a").first.click()
    download_link = alice.locator('[data-testid="download"][data-path="table.csv"]').first
    expect(download_link).to_be_visible()
    people.shot(alice, "researcher-sees-the-outputs")
    with alice.expect_download() as download:
        download_link.click()
    data = Path(download.value.path()).read_bytes()
    assert data.startswith(b"modality,n\n"), data
    people.shot(alice, "researcher-downloaded")
    assert people.shots == STEPS
