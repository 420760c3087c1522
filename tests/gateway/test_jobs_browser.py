"""Sending code to the data, and its outputs through the airlock, in a real browser:
headless Chromium (Debian's) via Playwright, against the real central app under uvicorn
whose hub sends jobs to three real nodes over mutual TLS, where job workers run them in
the sandbox.

A researcher named on a permit over site-a and site-b loads a script on /jobs, which
counts the extract's DICOM files by modality into table.csv and also tries to copy a raw
DICOM file out; she sends it to both institutions and follows it until both have
succeeded, reading nothing the job printed or named (that waits for the airlock's
checkers); the checkers read that the raw file is blocked, with the reason. Two output checkers,
each in their own browser, read the table's content on /airlock and approve each
institution's request; a checker cannot review twice, the researcher cannot review at
all, and a third checker cannot review a released request: each refusal is shown with the
API's reason. The researcher then sees both requests released and downloads table.csv.

Every person has their own browser context (their own session storage). Screenshots of
each step go to $SPE_TEST_ARTIFACTS (default test-artifacts/)/jobs-browser/.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from spe.identity import DemoIssuer
from spe.settings import Settings
from tests import browser as shared
from tests.browser import TIMEOUT_MS, artifacts_dir, shot
from tests.gateway.conftest import ISSUER, serve_job_federation
from tests.gateway.test_permit_tier import issue_permit
from tests.servers import bind, serve

browser = shared.browser  # the shared fixture: one headless Chromium for the module

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("needs_sandbox")]

#: A job at a node takes a few seconds (staging, the sandbox, the checks); allow more.
JOB_TIMEOUT_MS = 60_000

# Counts of the extract's DICOM files by modality (as COUNT_MODALITIES in test_jobs.py),
# with counts below the airlock's threshold of 10 folded into "other" and left out if
# still too few, so the table passes; and a raw DICOM file copied out, which must not.
SCRIPT = textwrap.dedent("""\
    import collections
    import pathlib
    import shutil

    import pydicom

    counts = collections.Counter()
    first = None
    for path in sorted(pathlib.Path("/extract/dicom").rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            counts[str(getattr(ds, "Modality", "") or "unknown")] += 1
            first = first or path
    rows = {m: n for m, n in counts.items() if n >= 10}
    other = sum(n for n in counts.values() if n < 10)
    if other >= 10:
        rows["other"] = other
    with open("/output/table.csv", "w") as out:
        out.write("modality,n\\n")
        for modality, n in sorted(rows.items()):
            out.write(f"{modality},{n}\\n")
    shutil.copy(first, "/output/raw.dcm")  # a record-level file: the airlock blocks it
    print("done")  # the log is an output too: the checkers read it with the table
""")


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return artifacts_dir("jobs-browser")


@dataclass
class Central:
    url: str
    issuer: DemoIssuer
    api: httpx.Client  # with .as_(user, role, institution) -> headers, for issue_permit

    def token(self, user: str, role: str) -> str:
        return self.issuer.mint(user, [role], name=user)


@pytest.fixture
def central(pki, node_dbs, tmp_path: Path) -> Iterator[Central]:
    """Three nodes under uvicorn with mutual TLS, each with one job worker (its lifespan),
    and the central app under uvicorn as the hub and the airlock."""
    settings = Settings(data_dir=tmp_path, oidc_issuer=ISSUER, pki_dir=pki,
                        environment="development", node_workers=1)
    with ExitStack() as stack:
        central_db, urls = serve_job_federation(stack, settings, node_dbs)
        from spe.app import create_central_app

        sock = bind()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = create_central_app(settings.model_copy(update={
            "database_url": central_db, "federation_nodes": urls}))
        stack.enter_context(serve(app, sock, lifespan="on"))
        issuer = DemoIssuer(settings.issuer_key_path, ISSUER, "spe")
        client = stack.enter_context(httpx.Client(base_url=url, timeout=60))
        client.as_ = lambda user, role, inst=None: {  # type: ignore[attr-defined]
            "Authorization": "Bearer " + issuer.mint(user, [role], institution=inst)}
        yield Central(url, issuer, client)


@dataclass
class People:
    """One browser context per person; any JS error on any of their pages fails the test."""

    browser: object
    central: Central
    contexts: list = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(self, user: str, role: str, at: str):
        """A new browser for `user` at `at`, signed in by pasting their token."""
        context = self.browser.new_context(base_url=self.central.url, accept_downloads=True,
                                           viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{user}: {exc}"))
        page.goto(at)
        sign_in(page, self.central.token(user, role), f"{user} ({role})")
        return page


def sign_in(page, token: str, who: str) -> None:
    from playwright.sync_api import expect

    page.get_by_label("Bearer token").fill(token)
    page.get_by_test_id("signin").click()
    expect(page.get_by_test_id("who")).to_have_text(who)


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


def node_card(page, site: str):
    return page.locator(f'[data-testid="job-node"][data-node="{site}"]')


def request_card(page):
    """The job's one airlock request on its page."""
    return page.get_by_test_id("output-request")


def site_row(page, site: str, path: str):
    """A file's row in `site`'s section of the request on /airlock."""
    return page.locator(f'[data-testid="file-row"][data-node="{site}"][data-path="{path}"]')


def file_row(scope, testid: str, path: str):
    return scope.locator(f'[data-testid="{testid}"][data-path="{path}"]')


def open_request(page, job_id: str) -> str:
    """From the queue on /airlock, open the job's request."""
    from playwright.sync_api import expect

    row = page.locator(f'[data-testid="request-row"][data-job="{job_id}"]')
    expect(row).to_have_count(1)
    rid = row.get_attribute("data-rid")
    row.get_by_test_id("request-link").click()
    expect(page.get_by_test_id("request-id")).to_have_text(rid)
    return rid


def approve(page, reason: str) -> None:
    page.get_by_label("Reason").fill(reason)
    page.get_by_test_id("approve").click()


# ---- the test -------------------------------------------------------------------------


def test_a_job_runs_and_its_outputs_leave_through_the_airlock_in_the_browser(
        people, central, artifacts):
    from playwright.sync_api import expect

    pid = issue_permit(central.api)  # over site-a and site-b, for carol (and alice)

    # 1. Carol loads her script on /jobs and sends it to both institutions of the permit.
    carol = people.open("carol", "researcher", at="/jobs")
    expect(carol.get_by_test_id("jobs-empty")).to_be_visible()
    expect(carol.get_by_label("Permit", exact=True)).to_have_value(pid)
    nodes = carol.get_by_test_id("f-node")
    expect(nodes).to_have_count(2)
    assert nodes.evaluate_all("xs => xs.map(x => x.value)") == ["site-a", "site-b"]
    for box in nodes.all():
        box.check()
    carol.get_by_label("Or load a .py file").set_input_files(files=[{
        "name": "count_modalities.py", "mimeType": "text/x-python",
        "buffer": SCRIPT.encode()}])
    expect(carol.get_by_test_id("f-script")).to_have_value(SCRIPT)  # read by FileReader
    expect(carol.get_by_label("Wall clock (s)")).to_have_value("600")
    expect(carol.get_by_label("Memory (MB)")).to_have_value("2048")
    carol.get_by_label("Wall clock (s)").fill("120")
    # The analysis environments the hub lists, the default chosen, its pins shown.
    environment = carol.get_by_label("Environment", exact=True)
    expect(environment).to_have_value("statistics")
    assert {"statistics", "imaging"} <= set(environment.locator("option").evaluate_all(
        "xs => xs.map(x => x.value)"))
    expect(carol.get_by_test_id("f-environment-packages")).to_contain_text("pandas 2.3.3")
    environment.select_option("imaging")
    expect(carol.get_by_test_id("f-environment-packages")).to_contain_text("SimpleITK 2.5.7")
    environment.select_option("statistics")
    shot(carol, artifacts, "01-new-job")
    carol.get_by_test_id("submit-job").click()
    expect(carol).to_have_url(re.compile(r"/jobs\?job=[^&]+$"))
    job_id = carol.url.split("job=", 1)[1]
    expect(carol.get_by_test_id("job-id")).to_have_text(job_id)
    expect(carol.get_by_test_id("job-permit")).to_have_text(pid)
    expect(carol.get_by_test_id("job-limits")).to_contain_text("wall_seconds 120")
    expect(carol.get_by_test_id("job-environment")).to_have_text("statistics")

    # 2. The page follows the job by itself until both institutions have run it.
    for site in ("site-a", "site-b"):
        expect(node_card(carol, site)).to_have_attribute("data-state", "succeeded",
                                                         timeout=JOB_TIMEOUT_MS)
    for site in ("site-a", "site-b"):
        card = node_card(carol, site)
        expect(card.get_by_test_id("node-state")).to_have_text("succeeded")
        expect(card.get_by_test_id("node-staging")).not_to_have_text("—")
        # Nothing the job printed, named or returned: no log, no files, no exit code.
        for gone in ("node-exit", "log-tail", "job-file", "node-verdict"):
            expect(card.get_by_test_id(gone)).to_have_count(0)
        for text in ("done", "raw.dcm", "table.csv"):
            expect(card).not_to_contain_text(text)
    expect(carol.get_by_test_id("job-progress")).to_contain_text("Finished")
    expect(carol.get_by_test_id("cancel-job")).to_be_disabled()
    shot(carol, artifacts, "02-job-succeeded")

    # 3. The job's outputs are one airlock request, a section per institution, waiting
    #    for review: the tables stored, the raw files blocked and never stored.
    #    Carol reads that it waits, not what it holds: no names before release.
    card = request_card(carol)
    expect(card).to_have_attribute("data-sites", re.compile(r"^(site-a site-b|site-b site-a)$"),
                                   timeout=JOB_TIMEOUT_MS)
    expect(carol.get_by_test_id("output-request")).to_have_count(1)
    expect(card).to_have_attribute("data-state", "pending")
    rid = card.get_attribute("data-rid")
    expect(card.get_by_test_id("request-file")).to_have_count(0)
    expect(card.get_by_test_id("request-files-hidden")).to_be_visible()
    for text in ("raw.dcm", "table.csv", "DICOM"):
        expect(card).not_to_contain_text(text)
    expect(card.get_by_test_id("download")).to_have_count(0)
    shot(carol, artifacts, "03-outputs-pending")

    # 4. Olga, an output checker, reads each site's table and approves the request once:
    #    then her buttons go, and the API refuses her a second review.
    olga = people.open("olga", "output_checker", at="/airlock")
    expect(olga.get_by_test_id("queue-heading")).to_have_text("Pending requests")
    queued = olga.locator(f'[data-testid="request-row"][data-job="{job_id}"]')
    expect(queued).to_have_count(1)
    expect(queued).to_contain_text("4 stored, 2 blocked")  # each site's table and log
    shot(olga, artifacts, "04-olga-queue")
    assert open_request(olga, job_id) == rid
    expect(olga.get_by_test_id("site-section")).to_have_count(2)
    for site in ("site-a", "site-b"):
        raw = site_row(olga, site, "raw.dcm")
        expect(raw.get_by_test_id("not-stored")).to_be_visible()
        expect(raw).to_have_attribute("data-verdict", "blocked")
        expect(raw).to_contain_text("DICOM")
        table = site_row(olga, site, "table.csv")
        expect(table.get_by_test_id("file-sha256")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
        table.get_by_test_id("view-content").click()
        expect(olga.get_by_test_id("content-path")).to_have_text(f"{site}/table.csv")
        expect(olga.get_by_test_id("file-content")).to_contain_text("modality,n")
        expect(olga.get_by_test_id("file-content")).to_contain_text("MR,")
    shot(olga, artifacts, "05-olga-reads-the-tables")
    approve(olga, "Aggregate counts, all at least 10")
    expect(olga.get_by_test_id("review-done")).to_contain_text("pending review")
    expect(olga.get_by_test_id("approvals")).to_have_text("1 of 2 approvals")
    expect(olga.get_by_test_id("approve")).to_be_hidden()
    expect(olga.get_by_test_id("review-unavailable")).to_contain_text("You have approved")
    again = central.api.post(f"/api/v1/airlock/requests/{rid}/reviews",
                             json={"decision": "approve", "reason": "Once more"},
                             headers=central.api.as_("olga", "output_checker"))
    assert again.status_code == 409, again.text
    assert "already reviewed" in again.json()["detail"]
    olga.reload()
    expect(olga.get_by_test_id("review")).to_have_count(1)
    expect(olga.get_by_test_id("approve")).to_be_hidden()
    shot(olga, artifacts, "06-olga-cannot-review-twice")

    # 5. Carol may read her request but neither review it nor look inside it as a checker.
    carol.goto(f"/airlock?request={rid}")
    sign_in(carol, central.token("carol", "researcher"), "carol (researcher)")
    expect(carol.get_by_test_id("request-id")).to_have_text(rid)
    expect(carol.get_by_test_id("approve")).to_be_hidden()
    expect(carol.get_by_test_id("file-row")).to_have_count(0)  # named once released
    expect(carol.get_by_test_id("file-content")).to_be_hidden()
    refused = central.api.post(f"/api/v1/airlock/requests/{rid}/reviews",
                               json={"decision": "approve", "reason": "My own"},
                               headers=central.api.as_("carol", "researcher"))
    assert refused.status_code == 403, refused.text
    inspected = central.api.get(f"/api/v1/airlock/requests/{rid}/inspect/site-b/table.csv",
                                headers=central.api.as_("carol", "researcher"))
    assert inspected.status_code == 403, inspected.text
    expect(carol.get_by_test_id("request-state")).to_have_text("pending review")
    shot(carol, artifacts, "07-carol-cannot-review")

    # 6. Oscar, a second output checker, approves: the request is released.
    oscar = people.open("oscar", "output_checker", at="/airlock")
    open_request(oscar, job_id)
    site_row(oscar, "site-b", "table.csv").get_by_test_id("view-content").click()
    expect(oscar.get_by_test_id("file-content")).to_contain_text("modality,n")
    approve(oscar, "Agreed")
    expect(oscar.get_by_test_id("request-state")).to_have_text("released")
    expect(oscar.get_by_test_id("review-done")).to_contain_text("released")
    expect(oscar.get_by_test_id("review")).to_have_count(2)
    expect(oscar.get_by_test_id("approve")).to_be_hidden()
    shot(oscar, artifacts, "08-oscar-releases")
    oscar.goto("/airlock")
    expect(oscar.locator(f'[data-testid="request-row"][data-job="{job_id}"]')).to_have_count(0)

    # 7. A third checker comes too late: no buttons, and the API says why.
    otto = people.open("otto", "output_checker", at=f"/airlock?request={rid}")
    expect(otto.get_by_test_id("request-state")).to_have_text("released")
    expect(otto.get_by_test_id("approve")).to_be_hidden()
    expect(otto.get_by_test_id("review-unavailable")).to_contain_text("released")
    late = central.api.post(f"/api/v1/airlock/requests/{rid}/reviews",
                            json={"decision": "approve", "reason": "Me too"},
                            headers=central.api.as_("otto", "output_checker"))
    assert late.status_code == 409, late.text
    assert "not under review" in late.json()["detail"]
    shot(otto, artifacts, "09-third-checker-refused")

    # 8. Carol sees it released and downloads each site's table, named by its site.
    carol.goto(f"/jobs?job={job_id}")
    expect(carol.get_by_test_id("who")).to_have_text("carol (researcher)")
    card = request_card(carol)
    expect(card).to_have_attribute("data-state", "released")
    expect(card.get_by_test_id("request-review")).to_have_count(2)
    expect(file_row(card, "download", "raw.dcm")).to_have_count(0)
    expect(file_row(card, "request-file", "raw.dcm")).to_have_count(0)  # never released
    for site in ("site-a", "site-b"):
        with carol.expect_download() as download:
            card.locator(f'[data-testid="download"][data-name="{site}/table.csv"]').click()
        assert download.value.suggested_filename == f"{site}_table.csv"
        data = Path(download.value.path()).read_bytes()
        assert data.startswith(b"modality,n\n"), data
        assert b"MR," in data
    expect(carol.get_by_test_id("download-error")).to_be_hidden()
    shot(carol, artifacts, "10-released-and-downloaded")

    # 9. And the job is in her list.
    carol.goto("/jobs")
    row = carol.locator(f'[data-testid="job-row"][data-job="{job_id}"]')
    expect(row).to_have_count(1)
    expect(row).to_contain_text(pid)
    shot(carol, artifacts, "11-my-jobs")

    # 10. A second job, typed in and sent to site-a only, is cancelled from its page.
    carol.get_by_test_id("f-node").and_(carol.locator('[value="site-a"]')).check()
    carol.get_by_label("Python script (runs as main.py)").fill(
        'import time\nprint("sleeping", flush=True)\ntime.sleep(60)\n')
    carol.get_by_test_id("submit-job").click()
    expect(carol).to_have_url(re.compile(r"/jobs\?job=[^&]+$"))
    assert carol.url.split("job=", 1)[1] != job_id
    expect(carol.get_by_test_id("job-node")).to_have_count(1)
    expect(node_card(carol, "site-a")).to_be_visible()
    expect(carol.get_by_test_id("cancel-job")).to_be_enabled()
    carol.get_by_test_id("cancel-job").click()
    expect(node_card(carol, "site-a")).to_have_attribute("data-state", "cancelled")
    expect(node_card(carol, "site-a").get_by_test_id("node-reason")).to_contain_text("carol")
    expect(carol.get_by_test_id("cancel-job")).to_be_disabled()
    expect(carol.get_by_test_id("outputs-empty")).to_contain_text("no institution sent any")
    shot(carol, artifacts, "12-cancelled")


def test_the_pages_are_served_with_a_strict_content_security_policy(central):
    for path in ("/jobs", "/jobs?job=x", "/airlock", "/airlock?request=x"):
        resp = httpx.get(f"{central.url}{path}", timeout=10)
        assert resp.status_code == 200, path
        assert resp.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in resp.headers["content-security-policy"]
        assert "%ROOT%" not in resp.text
    for asset in ("query/static/jobs.js", "query/static/jobs.css",
                  "airlock/static/airlock.js", "airlock/static/airlock.css"):
        assert httpx.get(f"{central.url}/{asset}", timeout=10).status_code == 200, asset
    paths = httpx.get(f"{central.url}/openapi.json", timeout=10).json()["paths"]
    assert not any(p.startswith(("/jobs", "/airlock")) for p in paths)
