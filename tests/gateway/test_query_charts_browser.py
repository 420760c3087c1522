"""The query page draws each kind of answer: headless Chromium (Debian's) via Playwright,
the real central app serving the page, and the hub's answer to `POST /api/v1/query` a fixed
FederatedAnswer per kind (fulfilled by page.route), so each drawing is checked against
known figures: bars with their whiskers for perturbed counts, hatched suppressed cells with
their reasons, a histogram, a heat-map table, a correlation matrix, forest plots, a survival
curve with its band, a mean and quantiles.

Reasons are checked as visible text; a value holding "<script>" is shown as text. A
screenshot of each answer is kept under the test's tmp dir, in $SPE_TEST_ARTIFACTS
(default test-artifacts/) and, when set, in $SPE_SCREENSHOT_DIR, for a person to look at.
The form's request bodies for the new kinds are checked too (what the page sends).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import browser as shared
from tests.browser import TIMEOUT_MS, artifacts_dir
from tests.servers import bind, serve

pytestmark = pytest.mark.browser

browser = shared.browser  # one headless Chromium for the module (tests/browser.py)
SITES = ("site-a", "site-b", "site-c")
EVIL = '<script>window.__pwned = 1</script><img src=x onerror=window.__pwned=2>'


# ---- the answers the hub "gives" --------------------------------------------------------


def cell(value, key=None, **extra) -> dict:
    return {"key": key or {}, "value": value, "suppressed": value is None, **extra}


def noisy(value, key=None, max_noise=3, reason=None) -> dict:
    return cell(value, key, perturbed=True, max_noise=max_noise, sd=None,
                reason=reason or "Perturbed by the cell-key method: at most ±3 from the true "
                                 "count, the same every time it is asked.")


def node(site, status="answered", *, kind="count", total=None, cells=(), statistic=None,
         notes=(), reason=None) -> dict:
    answer = None
    if status in ("answered", "suppressed"):
        answer = {"node_id": site, "tier": "statistics", "kind": kind, "exists": None,
                  "total": total, "cells": list(cells), "threshold": 10, "rounding": 1,
                  "notes": list(notes), "statistic": statistic}
    return {"node_id": site, "status": status, "ms": 12.5, "answer": answer, "reason": reason}


def federated(kind, nodes, *, total=None, cells=(), result=None, notes=()) -> dict:
    return {"query_hash": "ab" * 32, "tier": "statistics", "kind": kind, "nodes": nodes,
            "total": total, "cells": list(cells), "exists": None,
            "sites_answering": sum(n["answer"] is not None for n in nodes), "min_sites": 2,
            "notes": list(notes), "result": result}


SUPPRESSED_WHY = "Suppressed: fewer than 10 patients at site-b; ask a broader question."
UNREACHABLE_WHY = "ConnectError: site-c did not answer within 5 s"

COUNT = federated("count", [
    node("site-a", total=noisy(1234)),
    node("site-b", "suppressed", total=cell(None, reason=SUPPRESSED_WHY)),
    node("site-c", "unreachable", reason=UNREACHABLE_WHY),
], total=cell(1234, perturbed=True, max_noise=3))

_SEX = ("female", "male")
STRATIFIED = federated("stratified", [
    node("site-a", kind="stratified", total=noisy(420), cells=[
        noisy(230, {"sex": "female"}), noisy(190, {"sex": "male"}),
        cell(None, {"sex": EVIL}, reason=f"Suppressed: fewer than 10 ({EVIL})")]),
    node("site-b", kind="stratified", total=noisy(300, max_noise=2), cells=[
        noisy(160, {"sex": "female"}, max_noise=2),
        cell(None, {"sex": "male"}, reason=SUPPRESSED_WHY),
        cell(None, {"sex": EVIL}, reason=f"Suppressed: fewer than 10 ({EVIL})")]),
    node("site-c", kind="stratified", total=cell(210, sd=1.2, perturbed=True), cells=[
        cell(110, {"sex": "female"}, perturbed=True, sd=1.2),
        cell(100, {"sex": "male"}, perturbed=True, sd=1.2)]),  # the third: not listed
], total=cell(930, perturbed=True, max_noise=8), cells=[
    cell(500, {"sex": "female"}, perturbed=True, max_noise=8),
    cell(290, {"sex": "male"}, perturbed=True, max_noise=6),
    cell(None, {"sex": EVIL}, reason=f"Suppressed at every institution ({EVIL})"),
])


def stat_nodes(kind, n=(400, 350, 300)) -> list[dict]:
    return [node(site, kind=kind, statistic={"n": k, "perturbed": True},
                 notes=[f"{site}: {k} patients contributed"]) for site, k in zip(SITES, n,
                                                                               strict=True)]


HIST_EDGES = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
HISTOGRAM = federated("histogram", stat_nodes("histogram"), result={
    "kind": "histogram", "variable": "age", "edges": HIST_EDGES,
    "counts": [cell(None, reason="Suppressed: fewer than 10 patients aged 0 to 10."),
               noisy(40), noisy(95), noisy(150), noisy(210), noisy(260), noisy(180),
               noisy(70), noisy(25), cell(None, reason="Suppressed: fewer than 10 "
                                                        "patients aged 90 to 100.")],
    "perturbed": True, "notes": ["Bins with fewer than 10 patients at a site are suppressed "
                                 "there; the combined bins add the sites' shown bins."]})

TABLE = federated("table", stat_nodes("table"), result={
    "kind": "table", "rows": "sex", "cols": "condition E11 (diabetes)",
    "row_levels": ["female", "male"], "col_levels": ["no", "yes"],
    "cells": [noisy(520, {"row": "female", "col": "no"}),
              noisy(64, {"row": "female", "col": "yes"}),
              noisy(480, {"row": "male", "col": "no"}),
              cell(None, {"row": "male", "col": "yes"},
                   reason="Suppressed: fewer than 10 patients at every institution.")],
    "perturbed": True, "notes": ["At most 20 levels per variable."]})

CORRELATION = federated("correlation", stat_nodes("correlation"), result={
    "kind": "correlation", "variables": ["age", "observation 39156-5 (kg/m2)",
                                         "observation 8480-6 (mm[Hg])"],
    "n": 1050, "matrix": [[1.0, 0.31, 0.48], [0.31, 1.0, -0.22], [0.48, -0.22, 1.0]],
    "perturbed": True, "notes": ["Pairwise complete cases; sites with fewer than 10 "
                                 "complete patients left out."]})


def coef(name, est, se, p):
    return {"name": name, "estimate": est, "se": se, "ci_low": est - 1.96 * se,
            "ci_high": est + 1.96 * se, "p": p}


LINEAR = federated("linear", stat_nodes("linear"), result={
    "kind": "linear", "outcome": "observation 8480-6 (mm[Hg])", "n": 1050,
    "coefficients": [coef("intercept", 101.2, 2.1, 1e-9), coef("age", 0.52, 0.04, 1e-6),
                     coef("sex=male", 3.4, 1.1, 0.002), coef(EVIL, -0.8, 1.5, 0.6)],
    "perturbed": False, "notes": ["Fitted from each site's X'X and X'y (exact sufficient "
                                  "statistics)."]})

LOGISTIC = federated("logistic", stat_nodes("logistic"), result={
    "kind": "logistic", "outcome": "condition E11", "n": 1050,
    "coefficients": [coef("intercept", -3.1, 0.3, 1e-9), coef("age", 0.035, 0.006, 1e-5),
                     coef("sex=male", 0.41, 0.15, 0.006),
                     coef("observation 39156-5 (kg/m2)", 0.09, 0.02, 1e-4),
                     coef("imaging MR", -0.12, 0.2, 0.55)],
    "notes": ["Federated IRLS: 6 iterations."]})


def km_steps() -> list[dict]:
    steps, s, at_risk = [], 1.0, 600
    for i, t in enumerate([12, 30, 45, 60, 90, 120, 150, 200, 260, 330, 400, 480]):
        events = 20 + 5 * (i % 3)
        s *= 1 - events / at_risk
        half = 0.02 + 0.004 * i
        steps.append({"t": t, "at_risk": at_risk, "events": events, "survival": s,
                      "ci_low": max(0.0, s - half), "ci_high": min(1.0, s + half)})
        at_risk -= events + 20
    return steps


SURVIVAL = federated("survival", stat_nodes("survival"), result={
    "kind": "survival", "unit": "day", "n": 600, "steps": km_steps(), "perturbed": True,
    "notes": ["Event times are coarsened to the day; times with fewer than 10 at risk are "
              "not shown."]})

MEAN = federated("mean", stat_nodes("mean"), result={
    "kind": "mean", "variable": "observation 39156-5 (kg/m2)", "n": 1050, "mean": 27.4,
    "sd": 4.9, "ci": [27.1, 27.7], "perturbed": True,
    "notes": ["Each site's sum and sum of squares are perturbed before they are added."]})

QUANTILES = federated("quantiles", stat_nodes("quantiles"), result={
    "kind": "quantiles", "variable": "age", "n": 1050,
    "quantiles": [{"p": 0.05, "value": 21.0}, {"p": 0.25, "value": 38.5},
                  {"p": 0.5, "value": 52.0}, {"p": 0.75, "value": 66.0},
                  {"p": 0.95, "value": 83.5}],
    "perturbed": True, "notes": ["From merged per-site histograms of 1-year bins; bins "
                                 "under 10 at a site are left out there."]})


# ---- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return artifacts_dir("query-charts")


@pytest.fixture(scope="module")
def central(tmp_path_factory) -> Iterator[str]:
    """The real central app under uvicorn (its page, CSP and static files); no node is
    asked, as every query is answered by the test's page.route."""
    from spe.app import create_central_app
    from spe.db.migrate import upgrade
    from spe.settings import Settings

    tmp = tmp_path_factory.mktemp("central")
    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(data_dir=tmp, oidc_issuer=url, environment="development",
                        database_url=f"sqlite:///{tmp / 'central.db'}")
    upgrade(settings.resolved_database_url, "central")
    with serve(create_central_app(settings), sock, lifespan="on"):
        yield url


@pytest.fixture
def page(browser, central):
    context = browser.new_context(base_url=central, viewport={"width": 1100, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        yield page
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        context.close()


# ---- helpers ----------------------------------------------------------------------------


def answer_with(page, answer: dict) -> list[dict]:
    """Every POST /api/v1/query is answered with `answer`; returns the bodies sent."""
    sent: list[dict] = []

    def handle(route):
        sent.append(route.request.post_data_json)
        route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))

    page.route("**/api/v1/query", handle)
    return sent


def open_query(page) -> None:
    """The query page with its first criterion filled in (the page refuses a blank one
    before sending it): the answers here come from page.route, whatever was asked."""
    page.goto("/query")
    page.get_by_test_id("criterion").first.get_by_label("Age from").fill("18")


def run(page, kind: str) -> None:
    from playwright.sync_api import expect

    page.get_by_test_id(f"kind-{kind}").check()
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("answer")).to_be_visible()
    expect(page.get_by_test_id("results")).to_have_attribute("aria-busy", "false")
    expect(page.get_by_test_id("chart-error")).to_have_count(0)


def keep(page, tmp_path: Path, artifacts: Path, name: str, testid: str = "results") -> Path:
    """A screenshot of the answer (or another part) under the test's tmp dir, the artifacts
    and, when set, $SPE_SCREENSHOT_DIR."""
    path = tmp_path / f"{name}.png"
    page.get_by_test_id(testid).screenshot(path=str(path))
    assert path.stat().st_size > 2000, f"empty screenshot at {path}"
    shutil.copy(path, artifacts / path.name)
    extra = os.environ.get("SPE_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


def no_injection(page) -> None:
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#answer script, #answer img").count() == 0


def visible_text(page, testid: str, text: str) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_test_id(testid).filter(has_text=text).first).to_be_visible()


# ---- tests ------------------------------------------------------------------------------


def test_counts_per_institution_with_whiskers_and_a_suppressed_bar(page, tmp_path, artifacts):
    from playwright.sync_api import expect

    answer_with(page, COUNT)
    open_query(page)
    run(page, "count")
    chart = page.get_by_test_id("chart-counts")
    expect(chart.locator("svg[data-kind=counts]")).to_be_visible()
    rows = chart.get_by_test_id("bar-row")
    expect(rows).to_have_count(4)  # three institutions and the combined total
    expect(chart.get_by_test_id("bar")).to_have_count(2)  # site-a and the total
    expect(chart.get_by_test_id("whisker")).to_have_count(2)
    expect(chart.get_by_test_id("bar-suppressed")).to_have_count(1)
    expect(chart.get_by_test_id("bar-missing")).to_have_count(1)  # site-c: unreachable
    expect(rows.nth(0).get_by_test_id("bar-value")).to_contain_text("≈1,234 ±3")
    expect(rows.nth(1).get_by_test_id("bar-value")).to_contain_text("suppressed (< 10)")
    reasons = chart.get_by_test_id("reason")
    expect(reasons.filter(has_text=SUPPRESSED_WHY)).to_be_visible()
    expect(reasons.filter(has_text=UNREACHABLE_WHY)).to_be_visible()
    expect(reasons.filter(has_text="at most ±3 from the true count")).to_be_visible()
    # The institutions' table: the perturbed value marked ≈, its spread and its reason.
    a = page.locator('[data-testid="node-row"][data-node="site-a"]')
    expect(a.get_by_test_id("approx")).to_have_text("≈")
    expect(a.get_by_test_id("node-value")).to_have_text("1,234")
    expect(a.get_by_test_id("node-spread")).to_have_text(" ±3")
    b = page.locator('[data-testid="node-row"][data-node="site-b"]')
    expect(b.get_by_test_id("cell-reason")).to_contain_text(SUPPRESSED_WHY)
    expect(page.get_by_test_id("total-text")).to_contain_text("≈1,234")
    keep(page, tmp_path, artifacts, "charts-01-count")


def test_strata_as_grouped_bars_and_a_script_shown_as_text(page, tmp_path, artifacts):
    from playwright.sync_api import expect

    sent = answer_with(page, STRATIFIED)
    open_query(page)
    page.get_by_test_id("kind-stratified").check()
    page.get_by_label("By", exact=True).select_option("sex")
    run(page, "stratified")
    assert sent[-1]["answer"] == {"kind": "stratified", "by": ["sex"]}
    chart = page.get_by_test_id("chart-strata")
    expect(chart.get_by_test_id("bar-group")).to_have_count(3)
    expect(chart.get_by_test_id("bar-row")).to_have_count(12)  # 3 cells x (3 sites + all)
    expect(chart.get_by_test_id("bar")).to_have_count(7)
    expect(chart.get_by_test_id("whisker")).to_have_count(7)  # max_noise or 2 sd, each
    expect(chart.get_by_test_id("bar-suppressed")).to_have_count(4)
    expect(chart.get_by_test_id("bar-missing")).to_have_count(1)  # structural at site-c
    expect(chart.get_by_test_id("reason").filter(
        has_text="a level it does not have (structural)")).to_be_visible()
    # The stratum value holding a script is a label, as text; nothing ran.
    group = chart.get_by_test_id("bar-group").nth(2)
    expect(group).to_have_attribute("data-full", f"Sex: {EVIL}")
    expect(group.locator("title")).to_have_text(f"Sex: {EVIL}")
    expect(chart.get_by_test_id("reason").filter(
        has_text=f"Suppressed at every institution ({EVIL})")).to_be_visible()
    expect(chart.get_by_test_id("reason").filter(has_text=SUPPRESSED_WHY)).to_be_visible()
    table = page.get_by_test_id("cells-table")
    expect(table.locator(f'[data-key="sex={EVIL}"]').get_by_test_id("cell-total")).to_have_text(
        "suppressed")
    expect(table.locator('[data-key="sex=female"]').get_by_test_id("cell-total")).to_have_text(
        "500")
    no_injection(page)
    keep(page, tmp_path, artifacts, "charts-02-stratified")


def test_histogram_bars_whiskers_and_suppressed_bins(page, tmp_path, artifacts):
    from playwright.sync_api import expect

    sent = answer_with(page, HISTOGRAM)
    open_query(page)
    page.get_by_test_id("kind-histogram").check()
    page.get_by_test_id("bins-start").fill("0")
    page.get_by_test_id("bins-stop").fill("100")
    page.get_by_test_id("bins").fill("10")
    run(page, "histogram")
    assert sent[-1]["answer"] == {"kind": "histogram", "variable": {"type": "age"},
                                  "bins": {"start": 0, "stop": 100, "count": 10}}
    chart = page.get_by_test_id("chart-histogram")
    expect(chart.locator("svg[data-kind=histogram]")).to_be_visible()
    expect(chart.get_by_test_id("bar")).to_have_count(8)
    expect(chart.get_by_test_id("whisker")).to_have_count(8)
    expect(chart.get_by_test_id("bar-suppressed")).to_have_count(2)
    visible_text(page, "reason", "fewer than 10 patients aged 0 to 10")
    visible_text(page, "reason", "fewer than 10 patients aged 90 to 100")
    visible_text(page, "result-notes", "the combined bins add the sites' shown bins")
    expect(chart.get_by_test_id("histogram-table").locator("tbody tr")).to_have_count(10)
    expect(page.locator('[data-node="site-a"]').get_by_test_id("node-count")).to_have_text(
        "n = ≈400")
    keep(page, tmp_path, artifacts, "charts-03-histogram")


def test_contingency_table_as_a_heat_map(page, tmp_path, artifacts):
    from playwright.sync_api import expect

    sent = answer_with(page, TABLE)
    open_query(page)
    page.get_by_test_id("kind-table").check()
    cols = page.get_by_test_id("block-cols")
    cols.get_by_label("ICD-10 code").fill("E11")
    cols.get_by_label("Prefix (and every code under it)").check()
    run(page, "table")
    assert sent[-1]["answer"] == {"kind": "table", "variables": [
        {"type": "sex"}, {"type": "condition", "system": "icd-10", "code": "E11",
                          "prefix": True}]}
    table = page.get_by_test_id("heat-table")
    expect(table.get_by_test_id("heat-row")).to_have_count(2)
    expect(table.get_by_test_id("heat-cell")).to_have_count(3)
    expect(table.get_by_test_id("heat-cell").first).to_contain_text("≈520")
    expect(table.get_by_test_id("heat-suppressed")).to_have_count(1)
    visible_text(page, "reason", "fewer than 10 patients at every institution")
    keep(page, tmp_path, artifacts, "charts-04-table")


def test_correlation_matrix(page, tmp_path, artifacts):
    from playwright.sync_api import expect

    sent = answer_with(page, CORRELATION)
    open_query(page)
    page.get_by_test_id("kind-correlation").check()
    block = page.get_by_test_id("block-variables")
    second = block.get_by_test_id("variable").nth(1)
    second.get_by_label("LOINC code").fill("39156-5")
    second.get_by_label("Unit (UCUM)").fill("kg/m2")
    block.get_by_test_id("add-variables").click()
    third = block.get_by_test_id("variable").nth(2)
    third.get_by_label("Variable").select_option("imaging")
    third.get_by_label("Modality").fill("MR")
    run(page, "correlation")
    assert sent[-1]["answer"] == {"kind": "correlation", "variables": [
        {"type": "age"}, {"type": "observation", "system": "loinc", "code": "39156-5",
                          "unit": "kg/m2"}, {"type": "imaging", "modality": "MR"}]}
    chart = page.get_by_test_id("chart-correlation")
    expect(chart.get_by_test_id("corr-cell")).to_have_count(9)
    expect(chart.get_by_test_id("corr-cell").nth(5)).to_contain_text("-0.22")
    visible_text(page, "result-notes", "Pairwise complete cases")
    keep(page, tmp_path, artifacts, "charts-05-correlation")


@pytest.mark.parametrize("kind", ["linear", "logistic"])
def test_regression_as_a_forest_plot(page, tmp_path, artifacts, kind):
    from playwright.sync_api import expect

    fixture = LINEAR if kind == "linear" else LOGISTIC
    sent = answer_with(page, fixture)
    open_query(page)
    page.get_by_test_id("kind-" + kind).check()
    outcome = page.get_by_test_id("block-outcome")
    if kind == "linear":
        outcome.get_by_label("LOINC code").fill("8480-6")
        outcome.get_by_label("Unit (UCUM)").fill("mm[Hg]")
    else:
        outcome.get_by_label("Variable").select_option("condition")
        outcome.get_by_label("ICD-10 code").fill("E11")
    keep(page, tmp_path, artifacts, f"charts-00-form-{kind}", "answer-kind")
    run(page, kind)
    body = sent[-1]["answer"]
    assert body["kind"] == kind
    assert body["predictors"] == [{"type": "age"}, {"type": "sex"}]
    assert body["outcome"]["type"] == ("observation" if kind == "linear" else "condition")
    chart = page.get_by_test_id("chart-forest")
    coefficients = fixture["result"]["coefficients"]
    rows = chart.get_by_test_id("forest-row")
    expect(rows).to_have_count(len(coefficients) - 1)  # the intercept: in the table only
    expect(chart.get_by_test_id("forest-ci")).to_have_count(len(coefficients) - 1)
    expect(chart.get_by_test_id("forest-point")).to_have_count(len(coefficients) - 1)
    expect(chart.get_by_test_id("ref-line")).to_have_count(1)
    expect(chart.get_by_test_id("coefficients-table").locator("tbody tr")).to_have_count(
        len(coefficients))
    if kind == "linear":
        expect(rows.nth(2)).to_have_attribute("data-name", EVIL)
        # Cut to fit, the whole name in its <title>; as text, never as markup.
        label = rows.nth(2).get_by_test_id("forest-label")
        expect(label).to_have_attribute("data-full", EVIL)
        expect(label.locator("title")).to_have_text(EVIL)
        expect(chart.get_by_test_id("coefficients-table")).to_contain_text(EVIL)
        visible_text(page, "result-notes", "exact sufficient statistics")
    else:
        # Odds ratios: exp(0.41) = 1.51 for sex=male.
        expect(rows.nth(1)).to_contain_text("1.51")
        visible_text(page, "result-notes", "Federated IRLS")
    no_injection(page)
    keep(page, tmp_path, artifacts, f"charts-06-{kind}")


def test_survival_curve_with_its_band(page, tmp_path, artifacts):
    from playwright.sync_api import expect

    sent = answer_with(page, SURVIVAL)
    open_query(page)
    page.get_by_test_id("kind-survival").check()
    page.get_by_test_id("block-start").get_by_label("ICD-10 code").fill("C50")
    page.get_by_test_id("block-end").get_by_label("Modality (blank: any)").fill("CT")
    page.get_by_test_id("time-unit").select_option("day")
    run(page, "survival")
    assert sent[-1]["answer"] == {
        "kind": "survival", "start": {"type": "condition", "system": "icd-10", "code": "C50"},
        "end": {"type": "study", "modality": "CT"}, "unit": "day"}
    chart = page.get_by_test_id("chart-survival")
    curve = chart.get_by_test_id("survival-curve")
    expect(curve).to_have_count(1)
    d = curve.get_attribute("d")
    assert d.startswith("M")
    assert d.count("V") == len(SURVIVAL["result"]["steps"])  # one drop per step
    expect(chart.get_by_test_id("survival-band")).to_have_count(1)
    assert chart.get_by_test_id("survival-band").get_attribute("d").endswith("Z")
    expect(chart.get_by_test_id("at-risk").first).to_have_text("600")
    expect(chart.get_by_test_id("survival-summary")).to_contain_text("n = 600")
    visible_text(page, "result-notes", "coarsened to the day")
    keep(page, tmp_path, artifacts, "charts-07-survival")


def test_mean_and_quantiles(page, tmp_path, artifacts):
    from playwright.sync_api import expect

    sent = answer_with(page, MEAN)
    open_query(page)
    page.get_by_test_id("kind-mean").check()
    variable = page.get_by_test_id("block-variable")
    variable.get_by_label("Variable").select_option("observation")
    variable.get_by_label("LOINC code").fill("39156-5")
    variable.get_by_label("Unit (UCUM)").fill("kg/m2")
    variable.get_by_label("Per patient").select_option("mean")
    run(page, "mean")
    assert sent[-1]["answer"] == {"kind": "mean", "variable": {
        "type": "observation", "system": "loinc", "code": "39156-5", "unit": "kg/m2",
        "summary": "mean"}}
    chart = page.get_by_test_id("chart-mean")
    expect(chart.get_by_test_id("mean-point")).to_have_count(1)
    expect(chart.get_by_test_id("whisker")).to_have_count(1)
    expect(chart.get_by_test_id("sd-box")).to_have_count(1)
    expect(chart.get_by_test_id("mean-table")).to_contain_text("≈27.4")
    visible_text(page, "result-notes", "perturbed before they are added")
    keep(page, tmp_path, artifacts, "charts-08-mean")

    page.unroute("**/api/v1/query")
    sent = answer_with(page, QUANTILES)
    page.get_by_test_id("block-variable").get_by_label("Variable").select_option("age")
    page.get_by_test_id("kind-quantiles").check()
    page.get_by_test_id("probabilities").fill("0.05, 0.25, 0.5, 0.75, 0.95")
    run(page, "quantiles")
    assert sent[-1]["answer"] == {"kind": "quantiles", "variable": {"type": "age"},
                                  "probabilities": [0.05, 0.25, 0.5, 0.75, 0.95]}
    chart = page.get_by_test_id("chart-quantiles")
    expect(chart.get_by_test_id("quantile-mark")).to_have_count(5)
    expect(chart.get_by_test_id("quantile-box")).to_have_count(1)
    expect(chart.get_by_test_id("quantiles-table").locator("tbody tr")).to_have_count(5)
    visible_text(page, "result-notes", "merged per-site histograms")
    keep(page, tmp_path, artifacts, "charts-09-quantiles")


def test_the_form_says_what_is_missing_before_sending(page):
    from playwright.sync_api import expect

    sent = answer_with(page, MEAN)
    open_query(page)
    page.get_by_test_id("kind-mean").check()
    page.get_by_test_id("block-variable").get_by_label("Variable").select_option("condition")
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("error-message")).to_contain_text(
        "Variable: give the ICD-10 code")
    page.get_by_test_id("kind-quantiles").check()
    page.get_by_test_id("block-variable").get_by_label("Variable").select_option("age")
    page.get_by_test_id("probabilities").fill("0.5, 2")
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("error-message")).to_contain_text("between 0 and 1")
    assert sent == []


def test_a_result_the_page_does_not_draw_is_shown_as_text(page):
    from playwright.sync_api import expect

    answer = federated("something-new", stat_nodes("mean"), result={
        "kind": "something-new", "value": EVIL, "notes": [f"a note {EVIL}"]})
    answer_with(page, answer)
    open_query(page)
    run(page, "mean")
    expect(page.get_by_test_id("raw-result")).to_contain_text(EVIL)
    visible_text(page, "result-notes", f"a note {EVIL}")
    no_injection(page)
