"""An institution's approver vets job code in a real browser: headless Chromium (Debian's)
via Playwright against the real central app under uvicorn, whose hub sends jobs to three
real nodes over mutual TLS; site-a wants each code approved by its approvers first.

A permit's first script was approved at site-a and ran; the researcher changes it and
sends it again. Her job page shows it awaiting site-a's approval, with the reason. Bob,
an approver of site-a, opens /code-reviews, finds the changed code, reads its diff against
the approved version and its files, and approves it with a reason; the job then runs and
succeeds at site-a. Screenshots go to $SPE_TEST_ARTIFACTS (default test-artifacts/)/
code-approval-browser/.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from spe.identity import DemoIssuer
from spe.settings import Settings
from tests import browser as shared
from tests.browser import TIMEOUT_MS, artifacts_dir, shot
from tests.gateway.conftest import ISSUER, serve_job_federation
from tests.gateway.test_jobs_browser import Central, sign_in
from tests.gateway.test_permit_tier import issue_permit
from tests.servers import bind, serve

browser = shared.browser  # the shared fixture: one headless Chromium for the module

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("needs_sandbox")]

LIMITS = {"wall_seconds": 60, "memory_mb": 1024, "cpu_seconds": 60}
V1 = 'import pathlib\npathlib.Path("/output/note.txt").write_text("first\\n")\n'
V2 = 'import pathlib\npathlib.Path("/output/note.txt").write_text("second\\n")\n'


@pytest.fixture
def central(pki, node_dbs, tmp_path: Path) -> Iterator[Central]:
    settings = Settings(data_dir=tmp_path, oidc_issuer=ISSUER, pki_dir=pki,
                        environment="development", node_workers=1)
    with ExitStack() as stack:
        central_db, urls = serve_job_federation(
            stack, settings, node_dbs, options={"site-a": {"code_review": "approval"}})
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


def _packed(source: str) -> tuple[str, str]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = source.encode()
        info = tarfile.TarInfo("main.py")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    code = buffer.getvalue()
    return base64.b64encode(code).decode(), hashlib.sha256(code).hexdigest()


def _site_a(central: Central, job_id: str, until, seconds: float = 90) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        body = central.api.get(f"/api/v1/jobs/{job_id}",
                               headers=central.api.as_("carol", "researcher")).json()
        part = next(n for n in body["nodes"] if n["node_id"] == "site-a")
        if until(part) or time.monotonic() > deadline:
            return part
        time.sleep(0.5)


def _submit(central: Central, pid: str, code: str) -> str:
    resp = central.api.post("/api/v1/jobs", headers=central.api.as_("carol", "researcher"),
                            json={"permit": pid, "code": code, "limits": LIMITS,
                                  "nodes": ["site-a"]})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def test_an_approver_reads_the_diff_and_approves_and_the_job_runs(browser, central):
    from playwright.sync_api import expect

    artifacts = artifacts_dir("code-approval-browser")
    api = central.api
    pid = issue_permit(api)
    bob_headers = api.as_("bob", "approver", "site-a")
    # The permit's first version, approved at site-a through the API, ran.
    code1, sha1 = _packed(V1)
    first = _submit(central, pid, code1)
    assert _site_a(central, first, lambda p: p["state"] == "awaiting_approval",
                   30)["state"] == "awaiting_approval"
    assert api.post(f"/api/v1/code-reviews/site-a/{pid}/{sha1}", headers=bob_headers,
                    json={"decision": "approve", "reason": "first version"}).status_code == 200
    assert _site_a(central, first, lambda p: p["state"] == "succeeded")["state"] == "succeeded"

    code2, sha2 = _packed(V2)
    job = _submit(central, pid, code2)
    assert _site_a(central, job, lambda p: p["state"] == "awaiting_approval",
                   30)["state"] == "awaiting_approval"

    errors: list[str] = []
    contexts = []
    try:
        # The researcher's job page: held at site-a, with the reason.
        carol = browser.new_context(base_url=central.url, viewport={"width": 1280,
                                                                    "height": 900})
        contexts.append(carol)
        carol.set_default_timeout(TIMEOUT_MS)
        page = carol.new_page()
        page.on("pageerror", lambda exc: errors.append(f"carol: {exc}"))
        page.goto(f"/jobs?job={job}")
        sign_in(page, central.issuer.mint("carol", ["researcher"], name="carol"),
                "carol (researcher)")
        expect(page.get_by_text("awaiting approval").first).to_be_visible()
        expect(page.get_by_text("awaits approval by site-a's approvers").first).to_be_visible()
        shot(page, artifacts, "01-researcher-sees-the-job-held")

        # Bob, an approver of site-a, reviews the changed code.
        bob = browser.new_context(base_url=central.url, viewport={"width": 1280,
                                                                  "height": 900})
        contexts.append(bob)
        bob.set_default_timeout(TIMEOUT_MS)
        review = bob.new_page()
        review.on("pageerror", lambda exc: errors.append(f"bob: {exc}"))
        review.goto("/code-reviews")
        sign_in(review, central.issuer.mint("bob", ["approver"], name="bob",
                                            institution="site-a"),
                "bob (approver of site-a)")
        row = review.get_by_test_id("review-row").filter(has_text=pid)
        expect(row).to_have_count(1)
        expect(row).to_contain_text(f"carol@{ISSUER}")
        shot(review, artifacts, "02-approver-queue")
        row.get_by_test_id("review-link").click()
        expect(review.get_by_test_id("code-sha")).to_have_text(sha2)
        expect(review.get_by_test_id("code-previous")).to_have_text(sha1)
        diff = review.get_by_test_id("diff")
        expect(diff).to_contain_text('-pathlib.Path("/output/note.txt").write_text("first\\n")')
        expect(diff).to_contain_text('+pathlib.Path("/output/note.txt").write_text("second\\n")')
        expect(review.get_by_test_id("code-file")).to_contain_text("second")
        shot(review, artifacts, "03-approver-reads-the-diff")
        review.get_by_label("Reason").fill("only the note changed")
        review.get_by_test_id("approve").click()
        expect(review.get_by_test_id("decided")).to_contain_text("Approved: 1 waiting job")
        expect(review.get_by_test_id("code-decided")).to_have_text("approve")
        shot(review, artifacts, "04-approved")
    finally:
        for context in contexts:
            context.close()
    assert errors == [], f"JavaScript errors on the pages: {errors}"
    # The job then runs at site-a.
    assert _site_a(central, job, lambda p: p["state"] in {"succeeded", "failed"}
                   )["state"] == "succeeded"
