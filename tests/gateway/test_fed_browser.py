"""The federated runs page `/fed` in a real browser: headless Chromium (Debian's) via
Playwright, against the central app alone under uvicorn, its runs written straight into
its database (spe.federated.models.FedRun) so that the page is tested without the (slow)
data path: a ComBat harmonisation that succeeded and sent its result to the airlock, a
Flower app's 10 rounds where one node's gate refused an update in round 4, a run still
running (which the page follows by itself, and its user cancels), and another user's run.

A researcher reads her runs, newest first; each round at each institution in the gate's
words; the metrics' curves; the privacy spent; another's run is the API's 403 with its
reason, and starting a run under an unknown permit is the API's refusal with its reason.
Screenshots of each step go to $SPE_TEST_ARTIFACTS (default test-artifacts/)/fed-browser/.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from spe.federated.models import FedRun
from spe.identity import DemoIssuer
from spe.settings import Settings
from tests import browser as shared
from tests.browser import TIMEOUT_MS, artifacts_dir, shot
from tests.servers import bind, serve

browser = shared.browser  # the shared fixture: one headless Chromium for the module

pytestmark = pytest.mark.browser

REFUSED = "an array of the step's update has a shape its round's contract does not allow"
SITES = ["site-a", "site-b", "site-c"]


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return artifacts_dir("fed-browser")


@dataclass
class Central:
    url: str
    database_url: str
    issuer: DemoIssuer

    def token(self, user: str, role: str = "researcher") -> str:
        return self.issuer.mint(user, [role], name=user)

    def headers(self, user: str, role: str = "researcher") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user, role)}"}

    def user_id(self, user: str) -> str:
        me = httpx.get(f"{self.url}/api/v1/me", headers=self.headers(user), timeout=10)
        me.raise_for_status()
        return me.json()["id"]

    def add(self, run: FedRun) -> str:
        run_id = run.id
        engine = create_engine(self.database_url)
        try:
            with Session(engine) as session:
                session.add(run)
                session.commit()
        finally:
            engine.dispose()
        return run_id

    def update(self, run_id: str, **changes: Any) -> None:
        engine = create_engine(self.database_url)
        try:
            with Session(engine) as session:
                run = session.get(FedRun, run_id)
                for key, value in changes.items():
                    setattr(run, key, value)
                session.commit()
        finally:
            engine.dispose()


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Central]:
    """The central app alone under uvicorn: no nodes, a migrated SQLite database."""
    from spe.app import create_central_app
    from spe.db.migrate import upgrade
    from spe.identity import demo_issuer

    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    database_url = f"sqlite:///{tmp_path / 'central.db'}"
    settings = Settings(data_dir=tmp_path, database_url=database_url, oidc_issuer=url,
                        environment="development")
    upgrade(settings.resolved_database_url, "central")
    with serve(create_central_app(settings), sock, lifespan="on"):
        yield Central(url, settings.resolved_database_url, demo_issuer(settings))


@pytest.fixture
def page(browser, central):
    """A fresh browser context: its own session storage. Any JS error fails the test."""
    context = browser.new_context(base_url=central.url,
                                  viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}")
            if msg.type == "error" and "status of 40" not in msg.text else None)
    try:
        yield page
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        context.close()


def sign_in(page, token: str, who: str) -> None:
    from playwright.sync_api import expect

    page.get_by_label("Bearer token").fill(token)
    page.get_by_test_id("signin").click()
    expect(page.get_by_test_id("who")).to_have_text(who)


# ---- the runs, as the hub records them (gateway/hub/federated/runs.py) -------------------


def _at(start: datetime, minutes: float) -> str:
    return (start + timedelta(minutes=minutes)).isoformat()


def _node(state: str = "accepted", reason: str = "", seconds: float = 2.0,
          attempts: int = 1, epsilon: float | None = None) -> dict[str, Any]:
    return {"state": state, "reason": reason, "seconds": seconds, "attempts": attempts,
            "epsilon": epsilon}


def combat_run(user: str, start: datetime) -> FedRun:
    """Moments, variance, adjust over site-a and site-b; site-a failed once in the
    variance round and was retried; the harmonised features went to the airlock."""
    rounds = [
        {"round": 1, "kind": "moments", "at": _at(start, 1),
         "nodes": {"site-a": _node(seconds=4.1), "site-b": _node(seconds=3.7)},
         "metrics": {}},
        {"round": 2, "kind": "variance", "at": _at(start, 2),
         "nodes": {"site-a": _node(seconds=6.0, attempts=2), "site-b": _node(seconds=3.2)},
         "metrics": {"batch_effect": 0.395, "scale_effect": 0.121}},
        {"round": 3, "kind": "adjust", "at": _at(start, 3),
         "nodes": {"site-a": _node(seconds=5.5), "site-b": _node(seconds=4.8)},
         "metrics": {"batch_effect": 0.031, "scale_effect": 0.014}},
    ]
    return FedRun(
        id=uuid.uuid4().hex, pid="P-2026-0001", user_id=user, app="combat",
        state="succeeded", reason="",
        config={"nodes": ["site-a", "site-b"], "on_failure": "retry", "retries": 1,
                "min_nodes": 2, "privacy": None, "rounds_planned": 3,
                "config": {"covariates": {"age": "continuous", "sex": "categorical",
                                          "diagnosis": "categorical"},
                           "diagnosis_codes": ["C71"], "modality": "MR",
                           "body_part": "BRAIN"}},
        rounds=rounds, privacy={}, airlock=uuid.uuid4().hex,
        created_at=start, updated_at=start + timedelta(minutes=4))


def flower_run(user: str, start: datetime) -> FedRun:
    """10 rounds of training over three sites with differential privacy; site-b's gate
    refused its update in round 4 and the rule skipped it for the rest of the run."""
    rounds = []
    epsilon = dict.fromkeys(SITES, 0.0)
    for number in range(1, 11):
        nodes = {}
        for site in SITES:
            if site == "site-b" and number > 4:
                continue
            if site == "site-b" and number == 4:
                nodes[site] = _node("refused", REFUSED, seconds=0.4,
                                    epsilon=round(epsilon[site], 3))
                continue
            epsilon[site] += 0.21
            nodes[site] = _node(seconds=11.5 + number / 10, epsilon=round(epsilon[site], 3))
        rounds.append({"round": number, "kind": "train", "at": _at(start, number),
                       "nodes": nodes,
                       "metrics": {"train_loss": round(2.3 * 0.8 ** number, 4),
                                   "accuracy": round(0.1 + 0.08 * number, 4)}})
    return FedRun(
        id=uuid.uuid4().hex, pid="P-2026-0002", user_id=user, app="flower",
        state="succeeded", reason="",
        config={"nodes": SITES, "on_failure": "skip", "retries": 1, "min_nodes": 2,
                "privacy": {"clip": 1.0, "noise_multiplier": 1.1, "delta": 1e-5,
                            "relative": True},
                "rounds_planned": 10, "config": {"num-server-rounds": 10},
                "code_sha256": "ab" * 32},
        rounds=rounds, privacy={k: round(v, 3) for k, v in epsilon.items()}, airlock=None,
        created_at=start, updated_at=start + timedelta(minutes=11))


def running_run(user: str, rounds: int) -> FedRun:
    """A Flower run still running: `rounds` rounds done, updated just now (so that the
    hub does not take it for one a stopped process left behind)."""
    now = datetime.now(UTC)
    return FedRun(
        id=uuid.uuid4().hex, pid="P-2026-0002", user_id=user, app="flower",
        state="running", reason="",
        config={"nodes": ["site-a", "site-c"], "on_failure": "stop", "min_nodes": 2,
                "rounds_planned": 5},
        rounds=[running_round(n) for n in range(1, rounds + 1)], privacy={}, airlock=None,
        created_at=now, updated_at=now)


def running_round(number: int) -> dict[str, Any]:
    return {"round": number, "kind": "train", "at": datetime.now(UTC).isoformat(),
            "nodes": {"site-a": _node(), "site-c": _node()},
            "metrics": {"train_loss": round(1.0 / number, 4)}}


# ---- helpers ---------------------------------------------------------------------------


def cell(page, round_: int, node: str):
    return page.locator(f'[data-testid="round-cell"][data-round="{round_}"]'
                        f'[data-node="{node}"]')


def run_row(page, run_id: str):
    return page.locator(f'[data-testid="run-row"][data-run="{run_id}"]')


# ---- the tests ---------------------------------------------------------------------------


def test_a_researcher_reads_her_federated_runs_round_by_round(page, central, artifacts):
    from playwright.sync_api import expect

    carol = central.user_id("carol")
    start = datetime.now(UTC) - timedelta(days=1)
    combat = central.add(combat_run(carol, start))
    flower = central.add(flower_run(carol, start + timedelta(hours=2)))
    other = central.add(flower_run(central.user_id("dave"), start + timedelta(hours=3)))

    # 1. Her runs, newest first: the Flower run, then the ComBat one; not dave's.
    page.goto("/fed")
    sign_in(page, central.token("carol"), "carol (researcher)")
    expect(page.get_by_test_id("run-row")).to_have_count(2)
    rows = page.get_by_test_id("run-row").evaluate_all("rs => rs.map(r => r.dataset.run)")
    assert rows == [flower, combat]
    expect(run_row(page, other)).to_have_count(0)
    expect(run_row(page, flower).get_by_test_id("run-row-app")).to_have_text("Flower")
    expect(run_row(page, flower).get_by_test_id("run-row-rounds")).to_have_text("10 of 10")
    expect(run_row(page, flower)).to_contain_text("P-2026-0002")
    expect(run_row(page, combat).get_by_test_id("run-row-app")).to_have_text("ComBat")
    expect(run_row(page, combat).get_by_test_id("run-row-state")).to_have_text("succeeded")
    expect(run_row(page, combat).get_by_test_id("run-row-rounds")).to_have_text("3 of 3")
    # A Flower app is a folder of code: the CLI starts it, the page says how.
    expect(page.get_by_test_id("flower-cli")).to_contain_text("command line")
    expect(page.get_by_test_id("flower-command")).to_have_text(
        "spe fed run --permit PID path/to/app")
    shot(page, artifacts, "01-my-runs")

    # 2. The Flower run: 10 rounds × 3 institutions, site-b refused in round 4 (the gate's
    #    words in the cell and its title), absent afterwards; the privacy spent.
    run_row(page, flower).get_by_test_id("run-link").click()
    expect(page).to_have_url(re.compile(rf"/fed\?run={flower}$"))
    expect(page.get_by_test_id("run-id")).to_have_text(flower)
    expect(page.get_by_test_id("run-state")).to_have_text("succeeded")
    expect(page.get_by_test_id("round-row")).to_have_count(10)
    expect(page.get_by_test_id("node-column")).to_have_text(SITES)
    refused = cell(page, 4, "site-b")
    expect(refused).to_have_attribute("data-state", "refused")
    expect(refused.get_by_test_id("cell-state")).to_have_text("refused")
    expect(refused.get_by_test_id("cell-reason")).to_have_text(REFUSED)
    expect(refused).to_have_attribute("title", f"refused: {REFUSED}")
    expect(refused).to_have_class(re.compile(r"\bcell-refused\b"))
    for number in (1, 4, 10):
        for site in ("site-a", "site-c"):
            expect(cell(page, number, site).get_by_test_id("cell-state")).to_have_text(
                "accepted")
    expect(cell(page, 5, "site-b")).to_have_attribute("data-state", "absent")
    expect(cell(page, 10, "site-a").get_by_test_id("cell-epsilon")).to_have_text("ε 2.1")
    expect(page.locator('[data-testid="round-row"][data-round="10"]')
           .get_by_test_id("round-metrics")).to_contain_text("accuracy 0.9")
    privacy = page.get_by_test_id("privacy-row")
    expect(privacy).to_have_count(3)
    expect(page.locator('[data-testid="privacy-row"][data-node="site-b"]')
           .get_by_test_id("privacy-epsilon")).to_have_text("0.63")
    expect(page.get_by_test_id("result-none")).to_contain_text("No result")
    expect(page.get_by_test_id("cancel-run")).to_be_disabled()  # it has ended

    # 3. The metrics' curves: one polyline per metric, a point per round, a legend.
    plot = page.get_by_test_id("metrics-plot")
    expect(plot).to_have_count(1)
    assert plot.get_attribute("role") == "img"
    expect(plot.locator("title").first).to_contain_text("accuracy, train_loss")
    lines = page.get_by_test_id("metric-line")
    expect(lines).to_have_count(2)
    assert sorted(lines.evaluate_all("ls => ls.map(l => l.dataset.metric)")) == [
        "accuracy", "train_loss"]
    for points in lines.evaluate_all("ls => ls.map(l => l.getAttribute('points'))"):
        assert len(points.split()) == 10, points
    expect(page.get_by_test_id("plot-legend").locator("li")).to_have_count(2)
    expect(plot.locator("text.tick")).not_to_have_count(0)
    # The loss falls and the accuracy rises: SVG's y grows downwards.
    ys = {m: [float(p.split(",")[1]) for p in pts.split()] for m, pts in lines.evaluate_all(
        "ls => ls.map(l => [l.dataset.metric, l.getAttribute('points')])")}
    assert ys["train_loss"][0] < ys["train_loss"][-1]
    assert ys["accuracy"][0] > ys["accuracy"][-1]
    shot(page, artifacts, "02-flower-run")

    # 4. The ComBat run: its three steps, site-a's retry, the result in the airlock.
    page.goto(f"/fed?run={combat}")
    expect(page.get_by_test_id("run-id")).to_have_text(combat)
    expect(page.get_by_test_id("round-row")).to_have_count(3)
    kinds = page.get_by_test_id("round-row").evaluate_all("rs => rs.map(r => r.dataset.kind)")
    assert kinds == ["moments", "variance", "adjust"]
    expect(cell(page, 2, "site-a").get_by_test_id("cell-attempts")).to_contain_text(
        "2 attempts")
    expect(cell(page, 1, "site-a").get_by_test_id("cell-attempts")).to_have_count(0)
    # ComBat pools its effects after the variance and the adjust rounds: 2 points each.
    combat_lines = page.get_by_test_id("metric-line")
    expect(combat_lines).to_have_count(2)
    assert combat_lines.evaluate_all("ls => ls.map(l => [l.dataset.metric, l.dataset.points])"
                                     ) == [["batch_effect", "2"], ["scale_effect", "2"]]
    expect(page.get_by_test_id("privacy")).to_be_hidden()  # no differential privacy
    link = page.get_by_test_id("airlock-link")
    href = link.get_attribute("href")
    assert re.fullmatch(r"/airlock\?request=[0-9a-f]{32}", href), href
    shot(page, artifacts, "03-combat-run")

    # 5. Dave's run: the API's refusal, with its reason, in the page.
    refusal = httpx.get(f"{central.url}/api/v1/fed/runs/{other}",
                        headers=central.headers("carol"), timeout=10)
    assert refusal.status_code == 403, refusal.text
    page.goto(f"/fed?run={other}")
    expect(page.get_by_test_id("run-error")).to_be_visible()
    expect(page.get_by_test_id("run-error").get_by_test_id("error-heading")).to_contain_text(
        "403")
    expect(page.get_by_test_id("run-error").get_by_test_id("error-message")).to_have_text(
        refusal.json()["detail"])
    expect(page.get_by_test_id("rounds-table")).to_have_count(0)
    shot(page, artifacts, "04-another-users-run")


def test_the_page_follows_a_running_run_and_its_user_cancels_it(page, central, artifacts):
    from playwright.sync_api import expect

    carol = central.user_id("carol")
    run = central.add(running_run(carol, rounds=2))
    page.goto(f"/fed?run={run}")
    sign_in(page, central.token("carol"), "carol (researcher)")
    expect(page.get_by_test_id("run-state")).to_have_text("running")
    expect(page.get_by_test_id("run-progress")).to_contain_text("Round 3 of 5")
    expect(page.get_by_test_id("round-row")).to_have_count(2)
    expect(page.get_by_test_id("cancel-run")).to_be_enabled()

    # The hub records a third round: the page shows it by itself (every 2 s).
    central.update(run, rounds=[running_round(n) for n in (1, 2, 3)],
                   updated_at=datetime.now(UTC))
    expect(page.get_by_test_id("round-row")).to_have_count(3)
    expect(page.get_by_test_id("metric-line")).to_have_attribute("data-points", "3")
    shot(page, artifacts, "05-running")

    # Its user cancels it: no further round.
    page.get_by_test_id("cancel-run").click()
    expect(page.get_by_test_id("run-state")).to_have_text("cancelled")
    expect(page.get_by_test_id("run-reason")).to_have_text("cancelled by its user")
    expect(page.get_by_test_id("cancel-run")).to_be_disabled()
    shot(page, artifacts, "06-cancelled")

    # An output checker reads the run, without a Cancel button (it is not theirs).
    page.get_by_test_id("signout").click()
    sign_in(page, central.token("olga", "output_checker"), "olga (output_checker)")
    expect(page.get_by_test_id("run-id")).to_have_text(run)
    expect(page.get_by_test_id("round-row")).to_have_count(3)
    expect(page.get_by_test_id("cancel-run")).to_be_hidden()


def test_starting_a_run_under_an_unknown_permit_shows_the_apis_reason(page, central,
                                                                      artifacts):
    from playwright.sync_api import expect

    page.goto("/fed")
    sign_in(page, central.token("carol"), "carol (researcher)")
    expect(page.get_by_test_id("runs-empty")).to_be_visible()
    # No permit of hers: the permit is typed in.
    expect(page.get_by_test_id("f-permit")).to_have_value("__other__")
    page.get_by_label("Permit id").fill("P-2026-9999")
    expect(page.get_by_test_id("flower-command")).to_have_text(
        "spe fed run --permit P-2026-9999 path/to/app")
    for name in ("age", "sex", "diagnosis"):
        expect(page.get_by_test_id(f"f-cov-{name}")).to_be_checked()
    expect(page.get_by_label("Diagnosis codes")).to_have_value("J44")
    expect(page.get_by_label("Modality")).to_have_value("DX")
    expect(page.get_by_label("Body part")).to_have_value("CHEST")
    page.get_by_label("Failure rule").select_option("retry")
    expect(page.get_by_label("Retries")).to_have_value("1")
    page.get_by_test_id("f-dp").check()
    page.get_by_label("Noise multiplier").fill("1.2")
    shot(page, artifacts, "07-new-run")

    refusal = httpx.post(f"{central.url}/api/v1/fed/runs", headers=central.headers("carol"),
                         json={"permit": "P-2026-9999", "app": "combat"}, timeout=10)
    assert refusal.status_code == 404, refusal.text
    page.get_by_test_id("start-run").click()
    error = page.get_by_test_id("start-error")
    expect(error).to_be_visible()
    expect(error.get_by_test_id("error-message")).to_have_text(refusal.json()["detail"])
    expect(page).to_have_url(re.compile(r"/fed$"))
    shot(page, artifacts, "08-unknown-permit")

    # A form the page itself can tell is wrong is not sent.
    page.get_by_label("Noise multiplier").fill("0")
    page.get_by_test_id("start-run").click()
    expect(error).to_contain_text("nothing was sent")
    expect(error).to_contain_text("Noise multiplier")


def test_the_page_is_served_with_a_strict_content_security_policy(central):
    for path in ("/fed", "/fed?run=x"):
        resp = httpx.get(f"{central.url}{path}", timeout=10)
        assert resp.status_code == 200, path
        assert resp.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in resp.headers["content-security-policy"]
        assert "%ROOT%" not in resp.text
        assert 'data-nav="fed"' in resp.text
        assert "<script>" not in resp.text
        assert " style=" not in resp.text
    for asset in ("fed.js", "fed.css", "charts.js", "jobs.css"):
        assert httpx.get(f"{central.url}/query/static/{asset}", timeout=10).status_code == 200
    paths = httpx.get(f"{central.url}/openapi.json", timeout=10).json()["paths"]
    assert "/fed" not in paths
