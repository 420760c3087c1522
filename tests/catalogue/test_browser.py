"""The catalogue's web pages in a real browser: headless Chromium (Debian's) via Playwright,
against the real central app under uvicorn with two harvested datasets.

What a person does: search, narrow by a facet, page, go back; open a dataset, read its
counts and quality label, download its RDF; sign in as an approver and retitle it, and be
refused as an approver of another institution. Screenshots of each step are kept in
$SPE_TEST_ARTIFACTS (default test-artifacts/) for a person to look at.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn

from spe.settings import Settings
from tests import browser as shared
from tests.browser import TIMEOUT_MS, artifacts_dir, shot

pytestmark = pytest.mark.browser

browser = shared.browser  # one headless Chromium for the module (tests/browser.py)


# ---- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return artifacts_dir("catalogue-browser")


@dataclass
class Central:
    url: str
    issuer: object  # spe.identity.DemoIssuer
    nodes: list  # tests.catalogue.conftest.SyncedNode, in harvest order

    def api(self, path: str) -> dict:
        resp = httpx.get(f"{self.url}{path}", timeout=10)
        resp.raise_for_status()
        return resp.json()


def _harvest(settings: Settings, synced_nodes) -> None:
    """Fill the catalogue in-process, as `spe demo` does."""
    from spe.cli.demo import fill_catalogue

    fill_catalogue(settings, synced_nodes, actor="test")


@pytest.fixture
def central(synced_nodes, tmp_path: Path) -> Iterator[Central]:
    """The real central app on a free loopback port, in a thread, with two datasets."""
    from spe.app import create_central_app
    from spe.db.migrate import upgrade
    from spe.identity import demo_issuer

    # Bind first, so the port is ours (no race with another process) and the issuer URL,
    # which tokens must name, is known before the app is built.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'central.db'}",
                        oidc_issuer=url, environment="development")
    upgrade(settings.resolved_database_url, "central")
    _harvest(settings, synced_nodes)
    app = create_central_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("the central app did not start under uvicorn")
            time.sleep(0.05)
        yield Central(url, demo_issuer(settings), list(synced_nodes))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def page(browser, central):
    """A fresh browser context per test: its own session storage, so no token carries over.
    Any JS error on a page fails the test."""
    context = browser.new_context(base_url=central.url, accept_downloads=True,
                                  viewport={"width": 1280, "height": 900})
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



def wait_for_total(page, total: int, size: int = 20) -> None:
    """Wait until the page shows the results of a search that found `total` datasets."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("result-count")).to_have_attribute("data-total", str(total))
    expect(page.get_by_test_id("result")).to_have_count(min(total, size))


def shown_identifiers(page) -> list[str]:
    return page.get_by_test_id("result").evaluate_all(
        "items => items.map(li => li.dataset.identifier)")


def query_of(page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def facet_option(page, facet: str, value: str):
    return page.locator(f'input[data-facet="{facet}"][data-value="{value}"]')


def distinctive_word(name: str, other: str) -> str:
    """The longest word of one institution's name that the other's lacks."""
    mine = set(re.findall(r"[^\W_]+", name.lower())) - set(re.findall(r"[^\W_]+",
                                                                       other.lower()))
    assert mine, (name, other)
    return max(sorted(mine), key=len)


# ---- tests ----------------------------------------------------------------------------


def test_search_facets_paging_and_history(page, central, artifacts):
    from playwright.sync_api import expect

    a, b = central.nodes
    everything = central.api("/api/v1/catalogue/search")
    assert everything["total"] == 2

    page.goto("/catalogue")
    expect(page.get_by_role("heading", name="Dataset catalogue")).to_be_visible()
    wait_for_total(page, 2)
    expect(page.get_by_test_id("result-count")).to_have_text("2 datasets found")
    expect(page.get_by_test_id("result-count")).to_have_attribute("aria-live", "polite")
    first = page.get_by_test_id("result").first
    expect(first.get_by_test_id("quality-label")).to_have_text(
        re.compile("^(bronze|silver|gold|platinum)$"))
    shot(page, artifacts, "01-search-all")

    # Free text: a word of one institution's name finds its dataset only.
    word = distinctive_word(a.name, b.name)
    page.get_by_label("Search datasets").fill(word)
    page.get_by_label("Search datasets").press("Enter")
    wait_for_total(page, 1)
    assert shown_identifiers(page) == [f"{a.node_id}/imaging-and-clinical-records"]
    assert query_of(page)["q"] == [word]
    expect(page.get_by_test_id("result-institution")).to_have_text(a.name)
    shot(page, artifacts, "02-search-text")

    # A facet: the modality held by fewest datasets (else an institution) narrows the list
    # to exactly the count it showed, and the URL says so.
    page.goto("/catalogue")
    wait_for_total(page, 2)
    modalities = {f["value"]: f["count"] for f in everything["facets"]["modality"]}
    facet, value = ("modality", min(modalities, key=lambda v: (modalities[v], v)))
    if modalities[value] == 2:
        facet, value = "institution", b.node_id
    expected = central.api(f"/api/v1/catalogue/search?{facet}={value}")
    assert expected["total"] < 2, "the chosen facet value should narrow the search"
    option = facet_option(page, facet, value)
    label_count = page.locator(f'label[for="{option.get_attribute("id")}"] .count')
    expect(label_count).to_have_text(f"({expected['total']})")
    option.check()
    wait_for_total(page, expected["total"])
    expect(facet_option(page, facet, value)).to_be_checked()
    assert query_of(page)[facet] == [value]
    assert shown_identifiers(page) == [r["identifier"] for r in expected["results"]]
    if facet == "modality":
        for cell in page.get_by_test_id("result-modalities").all_inner_texts():
            assert value in cell.split(", ")
    shot(page, artifacts, "03-search-facet")

    # Back undoes the tick, Forward redoes it.
    page.go_back()
    wait_for_total(page, 2)
    expect(facet_option(page, facet, value)).not_to_be_checked()
    page.go_forward()
    wait_for_total(page, expected["total"])
    expect(facet_option(page, facet, value)).to_be_checked()

    # Two institutions in one facet are OR'ed: both datasets again.
    page.get_by_role("button", name="Clear all filters").click()
    wait_for_total(page, 2)
    facet_option(page, "institution", a.node_id).check()
    wait_for_total(page, 1)
    facet_option(page, "institution", b.node_id).check()
    wait_for_total(page, 2)
    assert sorted(query_of(page)["institution"]) == sorted([a.node_id, b.node_id])

    # Pages of one: "page X of Y", Next, and Back to page 1.
    page.goto("/catalogue?size=1&sort=title")
    wait_for_total(page, 2, size=1)
    expect(page.get_by_test_id("page-status")).to_have_text("Page 1 of 2")
    expect(page.get_by_test_id("prev")).to_be_disabled()
    on_first = shown_identifiers(page)
    page.get_by_test_id("next").click()
    expect(page.get_by_test_id("page-status")).to_have_text("Page 2 of 2")
    expect(page.get_by_test_id("next")).to_be_disabled()
    assert query_of(page)["page"] == ["2"]
    assert shown_identifiers(page) != on_first
    shot(page, artifacts, "04-search-page-2")
    page.go_back()
    expect(page.get_by_test_id("page-status")).to_have_text("Page 1 of 2")
    assert shown_identifiers(page) == on_first

    # Nothing found: said plainly, no pager.
    page.goto("/catalogue?q=zzyzxnothingmatches")
    expect(page.get_by_test_id("no-results")).to_be_visible()
    expect(page.get_by_test_id("result-count")).to_have_text("0 datasets found")
    expect(page.get_by_test_id("pager")).to_be_hidden()
    shot(page, artifacts, "05-search-none")

    # A refused search shows the API's own reason.
    page.goto("/catalogue")
    wait_for_total(page, 2)
    page.get_by_label("From").fill("90")
    page.get_by_label("to", exact=True).fill("10")
    page.get_by_test_id("age-apply").click()
    expect(page.get_by_test_id("error")).to_be_visible()
    expect(page.get_by_test_id("error-detail")).to_contain_text("age_min (90) is above age_max")
    expect(page.get_by_test_id("result")).to_have_count(0)
    path = shot(page, artifacts, "06-search-error")
    assert path.stat().st_size > 1000


def test_dataset_page_shows_counts_quality_and_rdf(page, central, artifacts):
    from playwright.sync_api import expect

    a = central.nodes[0]
    identifier = f"{a.node_id}/imaging-and-clinical-records"
    ds = central.api(f"/api/v1/catalogue/datasets/{identifier}")

    # From the search page, by the result's title link.
    page.goto("/catalogue")
    wait_for_total(page, 2)
    page.locator(f'[data-identifier="{identifier}"]').get_by_test_id("result-title").click()
    expect(page).to_have_url(re.compile(rf"/catalogue/datasets/{re.escape(identifier)}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(ds["title"])
    expect(page.get_by_test_id("dataset-institution")).to_have_text(a.name)

    # Counts as published; a suppressed one says so instead of showing a number.
    expect(page.get_by_test_id("count-individuals")).to_have_text(
        f"{ds['number_of_unique_individuals']:,}")
    expect(page.get_by_test_id("count-records")).to_have_text(f"{ds['number_of_records']:,}")
    expect(page.get_by_test_id("age-range")).to_have_text(
        f"{ds['min_typical_age']}–{ds['max_typical_age']} years")
    expect(page.get_by_test_id("temporal")).to_contain_text(ds["temporal_start"])
    suppressed = [(field, c["value"]) for field in ("modalities", "body_parts",
                                                     "manufacturers")
                  for c in ds[field] if c["count"] is None]
    assert suppressed, "the synthetic data holds a breakdown with a suppressed count"
    field, value = suppressed[0]
    row = page.get_by_test_id(f"table-{field}").get_by_role("row", name=value)
    expect(row).to_contain_text("suppressed")
    expect(page.get_by_test_id(f"note-{field}")).to_contain_text(
        "none can be worked out from the total")
    expect(page.get_by_test_id("suppression-note")).to_contain_text(
        f"at least {ds['suppression_threshold']} patients lie at or beyond each end")
    expect(page.get_by_test_id("table-modalities")).to_contain_text(
        ds["modalities"][0]["value"])
    expect(page.get_by_test_id("coding-systems")).to_contain_text("SNOMED CT")

    # The quality label and its five dimensions, each with its notes.
    quality = ds["quality"]
    expect(page.get_by_test_id("quality").get_by_test_id("quality-label")).to_have_text(
        quality["label"])
    dimensions = page.get_by_test_id("quality-dimension")
    expect(dimensions).to_have_count(5)
    assert [d.get_attribute("data-name") for d in dimensions.all()] == [
        d["name"] for d in quality["dimensions"]]
    for d in quality["dimensions"]:
        for note in d["notes"]:
            expect(page.locator(f'[data-name="{d["name"]}"]')).to_contain_text(note)

    # Where the next steps are.
    expect(page.get_by_role("link", name="Apply for a data permit")).to_have_attribute(
        "href", f"/permits/new?dataset={identifier.replace('/', '%2F')}")
    expect(page.get_by_role("link", name="Ask a federated question")).to_have_attribute(
        "href", f"/query?dataset={identifier.replace('/', '%2F')}")
    shot(page, artifacts, "07-dataset")

    # The RDF download is the API's Turtle, saved as a file.
    with page.expect_download() as download:
        page.get_by_role("link", name="Download as RDF (Turtle)").click()
    turtle = Path(download.value.path()).read_text()
    assert "healthdcatap:numberOfUniqueIndividuals" in turtle
    assert download.value.suggested_filename.endswith(".ttl")

    # An unknown dataset: the API's 404 reason, in the page.
    page.goto("/catalogue/datasets/nowhere/nothing")
    expect(page.get_by_test_id("error-detail")).to_contain_text("nowhere/nothing")


def test_curation_by_the_holders_approver_and_refusal_for_another(page, central, artifacts):
    from playwright.sync_api import expect

    a, b = central.nodes
    identifier = f"{a.node_id}/imaging-and-clinical-records"
    own = central.issuer.mint("anna", ["approver"], institution=a.node_id, name="Anna A")
    other = central.issuer.mint("boris", ["approver"], institution=b.node_id, name="Boris B")
    new_title = "Neuro imaging cohort (curated in the browser)"

    page.goto(f"/catalogue/datasets/{identifier}")
    expect(page.get_by_test_id("edit-form")).to_be_hidden()

    # A wrong paste is told at once and nothing is kept.
    page.get_by_label("Bearer token").fill("not-a-token")
    page.get_by_test_id("signin").click()
    expect(page.get_by_test_id("curate-error")).to_contain_text("Sign-in refused")
    assert page.evaluate("sessionStorage.length") == 0

    page.get_by_label("Bearer token").fill(own)
    page.get_by_test_id("signin").click()
    expect(page.get_by_test_id("signed-in")).to_contain_text(f"Anna A (approver, {a.node_id})")
    page.get_by_label("Title").fill(new_title)
    page.get_by_label("Keywords").fill("neurology, MRI")
    page.get_by_test_id("save").click()
    expect(page.get_by_test_id("curate-ok")).to_have_text("Saved: title, keywords.")
    expect(page.get_by_role("heading", level=1)).to_have_text(new_title)
    shot(page, artifacts, "08-curated")

    # It is the catalogue's title now (a reload reads it back; the token stayed in the tab).
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text(new_title)
    expect(page.get_by_test_id("dataset-keywords")).to_have_text(re.compile("neurology.*MRI"))
    expect(page.get_by_test_id("signed-in")).to_be_visible()
    assert central.api(f"/api/v1/catalogue/datasets/{identifier}")["title"] == new_title

    # Another institution's approver is refused, with the API's reason, and nothing changes.
    page.get_by_test_id("signout").click()
    assert page.evaluate("sessionStorage.length") == 0
    page.get_by_label("Bearer token").fill(other)
    page.get_by_test_id("signin").click()
    expect(page.get_by_test_id("signed-in")).to_contain_text(f"(approver, {b.node_id})")
    page.get_by_label("Title").fill("Hijacked")
    page.get_by_test_id("save").click()
    refusal = page.get_by_test_id("curate-error")
    expect(refusal).to_contain_text("Not saved:")
    expect(refusal).to_contain_text(a.node_id)
    expect(page.get_by_role("heading", level=1)).to_have_text(new_title)
    path = shot(page, artifacts, "09-curation-refused")
    assert path.stat().st_size > 1000
    assert central.api(f"/api/v1/catalogue/datasets/{identifier}")["title"] == new_title


def test_search_by_what_people_type_and_conditions_by_name(page, central, artifacts):
    from playwright.sync_api import expect

    # "brain MRI": no dataset says these words; its modality (MR) and body part (BRAIN) do.
    expected = central.api("/api/v1/catalogue/search?q=brain+MRI")
    assert expected["total"] >= 1, "the synthetic data holds brain MR series"
    page.goto("/catalogue")
    wait_for_total(page, 2)
    page.get_by_label("Search datasets").fill("brain MRI")
    page.get_by_label("Search datasets").press("Enter")
    wait_for_total(page, expected["total"])
    assert shown_identifiers(page) == [r["identifier"] for r in expected["results"]]
    shot(page, artifacts, "10-search-brain-mri")

    # A condition facet names its category by its WHO ICD-10 title, not the bare code.
    conditions = expected["facets"]["condition"]
    assert conditions, "the synthetic data lists ICD-10 categories"
    value, label = conditions[0]["value"], conditions[0]["label"]
    assert label.startswith(f"{value} ")
    assert len(label) > len(value) + 3
    option = facet_option(page, "condition", value)
    expect(page.locator(f'label[for="{option.get_attribute("id")}"] .facet-label')
           ).to_have_text(label)

    # ... and so does the dataset page's table of conditions.
    identifier = expected["results"][0]["identifier"]
    ds = central.api(f"/api/v1/catalogue/datasets/{identifier}")
    page.goto(f"/catalogue/datasets/{identifier}")
    first = ds["conditions"][0]
    expect(page.get_by_test_id("table-conditions")).to_contain_text(
        f"{first['value']} · {first['title']}")
    assert ds["clinical_terms"], "the node published SNOMED CT / LOINC terms"
    expect(page.get_by_test_id("table-clinical_terms")).to_contain_text(
        ds["clinical_terms"][0]["display"])
    shot(page, artifacts, "11-dataset-named-conditions")


def test_pages_are_served_with_a_strict_content_security_policy(central):
    for path in ("/catalogue", "/catalogue/datasets/site-a/imaging-and-clinical-records"):
        resp = httpx.get(f"{central.url}{path}", timeout=10)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in resp.headers["content-security-policy"]
        assert "%ROOT%" not in resp.text
    css = httpx.get(f"{central.url}/catalogue/static/catalogue.css", timeout=10)
    assert css.status_code == 200


def test_harvest_status_panel_for_the_access_body(page, central, artifacts):
    from playwright.sync_api import expect

    page.goto("/catalogue")
    wait_for_total(page, 2)
    page.get_by_text("Harvest status (HDAB and administrators)").click()
    # A researcher's token is refused with the API's reason; the panel stays closed to them.
    page.get_by_test_id("harvest-token").fill(central.issuer.mint("r", ["researcher"]))
    page.get_by_test_id("harvest-show").click()
    expect(page.get_by_test_id("harvest-error")).to_contain_text("may not call")
    page.get_by_test_id("harvest-token").fill(central.issuer.mint("h", ["hdab"]))
    page.get_by_test_id("harvest-show").click()
    rows = page.get_by_test_id("harvest-nodes").locator("tbody tr")
    expect(rows).to_have_count(len(central.nodes))
    for node in central.nodes:
        row = rows.filter(has_text=f"({node.node_id})")
        expect(row).to_contain_text(node.name)
        expect(row.locator("td").nth(2)).to_have_text(
            re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC$"))
    # The demo-like central has no nodes of its own to harvest: no "Harvest now".
    expect(page.get_by_test_id("harvest-state")).to_have_text(
        "No harvest has run in this service since it started.")
    expect(page.get_by_test_id("harvest-start")).to_be_hidden()
    shot(page, artifacts, "09-harvest-status")
