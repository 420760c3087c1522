"""The federated statistics from the outside: a hub and three nodes over mutual TLS, on
SQLite and on PostgreSQL node databases, asked through `POST /api/v1/query`.

In the permit tier every statistic equals the same statistic computed on the pooled rows
(numpy, statsmodels, lifelines on the union of the sites' per-patient values, read here
straight from the node databases with SQL of the test's own) to 1e-9 relative; in the
statistics tier the result is perturbed but close, the same when asked again, and the
nodes' disclosure rules refuse with reasons; nonsense is a 422 with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from scipy import stats
from sqlalchemy import text

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from gateway.node.service import run_sync
from spe.app import create_central_app
from spe.db import make_engine
from spe.identity import DemoIssuer
from spe.pki import server_ssl_options
from spe.settings import Settings
from tests.central import catalogued_central
from tests.conftest import _fresh_postgres
from tests.gateway.conftest import ISSUER, SITES
from tests.servers import bind, serve

pytestmark = pytest.mark.slow

RTOL = 1e-9
FEMALE = {"type": "patient", "sex": "female"}
EVERYONE = {"type": "patient", "age": {"min": 0, "at": "2100-01-01"}}  # with a birth date
AGE = {"type": "age"}
SEX = {"type": "sex"}
WEIGHT = {"type": "observation", "code": "29463-7", "unit": "kg"}
WEIGHT_MEAN = {**WEIGHT, "summary": "mean"}
SYSTOLIC = {"type": "observation", "code": "8480-6", "unit": "mm[Hg]"}
HYPERTENSION = {"type": "condition", "system": "icd-10", "code": "I10", "prefix": True}
MR = {"type": "imaging", "modality": "MR"}


@dataclass
class StatFederation:
    hub: TestClient
    issuer: DemoIssuer
    urls: dict[str, str]  # site -> its database URL
    permit: str

    def headers(self, user: str = "alice", role: str = "researcher", inst=None) -> dict:
        return {"Authorization": "Bearer " + self.issuer.mint(user, [role],
                                                               institution=inst)}

    def ask(self, where: dict, answer: dict, *, permit: bool = True, user: str = "alice"):
        url = f"/api/v1/query?permit={self.permit}" if permit else "/api/v1/query"
        return self.hub.post(url, json={"where": where, "answer": answer},
                             headers=self.headers(user))

    def result(self, where: dict, answer: dict, **kw) -> dict:
        resp = self.ask(where, answer, **kw)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["result"] is not None, body
        return body


def _issue_permit(fed: StatFederation) -> str:
    alice = fed.headers()
    body = {"organisation": "Uni", "title": "Statistics", "summary": "s",
            "purpose": "scientific_research", "declaration": True,
            "start_date": str(date.today()),
            "end_date": str(date.today() + timedelta(days=90)),
            "members": [f"alice@{ISSUER}"],
            "datasets": [f"{s}/imaging-and-clinical-records" for s in SITES]}
    pid = fed.hub.post("/api/v1/permits", json=body, headers=alice).json()["id"]
    fed.hub.post(f"/api/v1/permits/{pid}/submit", headers=alice)
    for site in SITES:
        fed.hub.post(f"/api/v1/permits/{pid}/reviews", json={"decision": "approve"},
                     headers=fed.headers(f"approver-{site}", "approver", site))
    issued = fed.hub.post(f"/api/v1/permits/{pid}/issue", json={"reason": "ok"},
                          headers=fed.headers("hilde", "hdab"))
    assert issued.status_code == 200, issued.text
    return pid


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fed(request, node_dbs, pki, tmp_path_factory) -> Iterator[StatFederation]:
    """Three nodes synced from the synthetic sites into databases of the parameter's
    kind, served with mutual TLS, and the central app whose hub asks them."""
    tmp = tmp_path_factory.mktemp(f"stats-{request.param}")
    synth = Path(node_dbs["site-a"]).parent / "synth"
    with ExitStack() as stack:
        urls = {}
        for site in SITES:
            urls[site] = (f"sqlite:///{tmp / f'{site}.db'}" if request.param == "sqlite"
                          else stack.enter_context(_fresh_postgres()))
            run_sync(urls[site], dicom=f"folder:{synth / site / 'dicom'}",
                     fhir=f"ndjson:{synth / site / 'fhir'}")
        # A fixed record-key secret: the noise, and so which small cells show, is the
        # same every run (a random one could push a 40-patient site's n under 15).
        settings = Settings(data_dir=tmp, oidc_issuer=ISSUER, pki_dir=pki,
                            environment="development",
                            node_cellkey_secret=SecretStr("statistics-tests-record-keys"))
        socks = {site: bind() for site in SITES}
        node_urls = {site: f"https://127.0.0.1:{s.getsockname()[1]}"
                     for site, s in socks.items()}
        for site in SITES:
            app = create_node_app(NodeConfig(site, site, urls[site]), settings)
            stack.enter_context(serve(app, socks[site], lifespan="off",
                                      **server_ssl_options(pki, site)))
        central_db = f"sqlite:///{tmp / 'central.db'}"
        catalogued_central(central_db, SITES, patients=40)
        central = create_central_app(settings.model_copy(update={
            "database_url": central_db, "federation_nodes": node_urls,
            "query_timeout_seconds": 20.0}))
        hub = stack.enter_context(TestClient(central))
        fed = StatFederation(hub, DemoIssuer(settings.issuer_key_path, ISSUER, "spe"),
                             urls, "")
        fed.permit = _issue_permit(fed)
        yield fed


# ---------------------------------------------------------------------------- the pooled rows
# Per-patient values read straight from each node's database with the test's own SQL.


def _rows(url: str, sql: str, **params) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())
    finally:
        engine.dispose()


def _as_date(d) -> date | None:
    return d if d is None or isinstance(d, date) else date.fromisoformat(str(d)[:10])


def site_values(url: str, where: str, variables: list[dict]) -> np.ndarray:
    """Rows (one per patient of the cohort with every value) of the variables."""
    patients = _rows(url, "SELECT id, sex, birth_date FROM patients")
    cohort = {pid for pid, sex, born in patients if (
        sex == "female" if where == "female" else born is not None)}
    columns = []
    for v in variables:
        col: dict[int, float] = {}
        if v["type"] == "age":
            latest = dict(_rows(url, "SELECT patient_id, max(study_date) FROM studies "
                                     "GROUP BY patient_id"))
            for pid, _, born in patients:
                born = _as_date(born)
                if born is None:
                    continue
                at = _as_date(latest.get(pid)) or date.today()
                years = at.year - born.year - ((at.month, at.day) < (born.month, born.day))
                if years >= 0:
                    col[pid] = float(years)
        elif v["type"] == "sex":
            col = {pid: {"female": 0.0, "male": 1.0}[sex] for pid, sex, _ in patients
                   if sex in ("female", "male")}
        elif v["type"] == "observation":
            obs = _rows(url, "SELECT patient_id, value, effective_date, id FROM observations "
                             "WHERE code = :c AND unit = :u AND value IS NOT NULL",
                        c=v["code"], u=v["unit"])
            if v.get("summary") == "mean":
                by: dict[int, list[float]] = {}
                for pid, value, _, _ in obs:
                    by.setdefault(pid, []).append(value)
                col = {pid: float(np.mean(vals)) for pid, vals in by.items()}
            else:
                best: dict[int, tuple] = {}
                for pid, value, day, oid in obs:
                    rank = (day is not None, _as_date(day) or date.min, oid)
                    if pid not in best or rank > best[pid][0]:
                        best[pid] = (rank, value)
                col = {pid: float(value) for pid, (_, value) in best.items()}
        elif v["type"] == "condition":
            having = {pid for (pid,) in _rows(
                url, "SELECT DISTINCT patient_id FROM conditions WHERE code LIKE :p",
                p=v["code"] + "%")}
            col = {pid: float(pid in having) for pid, _, _ in patients}
        elif v["type"] == "imaging":
            counts = dict(_rows(
                url, "SELECT st.patient_id, count(DISTINCT st.id) FROM studies st JOIN "
                     "series se ON se.study_id = st.id WHERE se.modality = :m "
                     "GROUP BY st.patient_id", m=v["modality"]))
            col = {pid: float(counts.get(pid, 0)) for pid, _, _ in patients}
        columns.append(col)
    rows = [[c[pid] for c in columns] for pid in sorted(cohort)
            if all(pid in c for c in columns)]
    return np.asarray(rows, dtype=float).reshape(-1, len(variables))


def pooled(fed: StatFederation, where: str, variables: list[dict]) -> np.ndarray:
    return np.vstack([site_values(fed.urls[s], where, variables) for s in SITES])


def close(a, b, rtol=RTOL) -> bool:
    return bool(np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float),
                            rtol=rtol, atol=0))


# ---------------------------------------------------------------------------- exact, permit


def test_mean_equals_the_pooled_rows(fed):
    for variable in (AGE, WEIGHT, WEIGHT_MEAN, MR):
        body = fed.result(FEMALE, {"kind": "mean", "variable": variable})
        r = body["result"]
        x = pooled(fed, "female", [variable])[:, 0]
        assert r["kind"] == "mean"
        assert r["perturbed"] is False
        assert r["n"] == len(x)
        assert close(r["mean"], x.mean()), variable
        assert close(r["sd"], x.std(ddof=1)), variable

        half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
        assert close(r["ci"], [x.mean() - half, x.mean() + half])
        assert {n["node_id"]: n["status"] for n in body["nodes"]} == dict.fromkeys(
            SITES, "answered")


def test_quantiles_equal_the_pooled_rows(fed):
    ps = [0.1, 0.25, 0.5, 0.75, 0.9]
    for variable in (AGE, SYSTOLIC):
        r = fed.result(EVERYONE, {"kind": "quantiles", "variable": variable,
                                  "probabilities": ps})["result"]
        x = pooled(fed, "everyone", [variable])[:, 0]
        assert r["n"] == len(x)
        assert [q["p"] for q in r["quantiles"]] == ps
        expected = np.quantile(x, ps, method="inverted_cdf")
        assert close([q["value"] for q in r["quantiles"]], expected), (r, expected)
        assert r["rounds"] > 1  # searched in rounds


def test_histogram_equals_the_pooled_rows(fed):
    edges = [0, 20, 40, 60, 80, 120]
    r = fed.result(EVERYONE, {"kind": "histogram", "variable": AGE,
                              "edges": edges})["result"]
    x = pooled(fed, "everyone", [AGE])[:, 0]
    counts, _ = np.histogram(x, bins=edges)
    assert r["edges"] == edges
    assert [c["value"] for c in r["counts"]] == counts.tolist()
    assert all(c["perturbed"] is False for c in r["counts"])
    bins = fed.result(EVERYONE, {"kind": "histogram", "variable": WEIGHT,
                                 "bins": {"start": 40, "stop": 120, "count": 8}})["result"]
    w = pooled(fed, "everyone", [WEIGHT])[:, 0]
    assert [c["value"] for c in bins["counts"]] == np.histogram(
        w, bins=np.linspace(40, 120, 9))[0].tolist()


def test_table_equals_the_pooled_rows(fed):
    r = fed.result(EVERYONE, {"kind": "table", "variables": [SEX, HYPERTENSION]})["result"]
    x = pooled(fed, "everyone", [SEX, HYPERTENSION])
    assert r["row_levels"] == ["female", "male"]
    assert r["col_levels"] == ["no", "yes"]
    got = {(c["key"]["row"], c["key"]["col"]): c["value"] for c in r["cells"]}
    for i, sex in enumerate(["female", "male"]):
        for j, has in enumerate(["no", "yes"]):
            assert got[(sex, has)] == int(np.sum((x[:, 0] == i) & (x[:, 1] == j)))
    ages = fed.result(EVERYONE, {"kind": "table", "variables": [AGE, SEX]})["result"]
    assert ages["row_levels"] == ["0-17", "18-39", "40-64", "65+"]
    assert sum(c["value"] for c in ages["cells"]) == len(pooled(fed, "everyone", [AGE, SEX]))


def test_correlation_equals_the_pooled_rows(fed):
    vs = [AGE, WEIGHT, SYSTOLIC, SEX, HYPERTENSION]
    r = fed.result(EVERYONE, {"kind": "correlation", "variables": vs})["result"]
    x = pooled(fed, "everyone", vs)
    assert r["n"] == len(x)
    assert close(r["matrix"], np.corrcoef(x, rowvar=False))
    assert r["variables"][0] == "age"


def test_linear_regression_equals_statsmodels_on_the_pooled_rows(fed):
    import statsmodels.api as sm

    r = fed.result(EVERYONE, {"kind": "linear", "outcome": SYSTOLIC,
                              "predictors": [AGE, SEX, WEIGHT, HYPERTENSION]})["result"]
    x = pooled(fed, "everyone", [AGE, SEX, WEIGHT, HYPERTENSION, SYSTOLIC])
    fit = sm.OLS(x[:, -1], sm.add_constant(x[:, :-1])).fit()
    assert r["n"] == len(x)
    assert [c["name"] for c in r["coefficients"]] == [
        "(intercept)", "age", "sex (male)", "observation 29463-7 [kg] (latest)",
        "condition icd-10 I10*"]
    assert close([c["estimate"] for c in r["coefficients"]], fit.params)
    assert close([c["se"] for c in r["coefficients"]], fit.bse)
    assert close([c["p"] for c in r["coefficients"]], fit.pvalues)
    assert close([[c["ci_low"], c["ci_high"]] for c in r["coefficients"]], fit.conf_int())


def test_logistic_regression_equals_statsmodels_on_the_pooled_rows(fed):
    import statsmodels.api as sm

    body = fed.result(EVERYONE, {"kind": "logistic", "outcome": HYPERTENSION,
                                 "predictors": [AGE, SEX, WEIGHT]})
    r = body["result"]
    x = pooled(fed, "everyone", [AGE, SEX, WEIGHT, HYPERTENSION])
    fit = sm.Logit(x[:, -1], sm.add_constant(x[:, :-1])).fit(disp=0, tol=1e-12)
    assert r["converged"] is True
    assert r["n"] == len(x)
    assert close([c["estimate"] for c in r["coefficients"]], fit.params, rtol=1e-7)
    assert close([c["se"] for c in r["coefficients"]], fit.bse, rtol=1e-7)
    # The first fan-out brings the nodes' own fits, the start of the Newton steps.
    assert r["rounds"] == r["iterations"] + 1
    # The nodes show their n, not a round's sums.
    assert all(set(n["answer"]["statistic"]) == {"n", "perturbed"} for n in body["nodes"])


def _survival_rows(url: str) -> tuple[list[float], list[bool]]:
    """Days from the first study to the first I10* onset (or to the last dated record)."""
    first = {pid: _as_date(d) for pid, d in _rows(
        url, "SELECT patient_id, min(study_date) FROM studies WHERE study_date IS NOT NULL "
             "GROUP BY patient_id")}
    end = {pid: _as_date(d) for pid, d in _rows(
        url, "SELECT patient_id, min(onset_date) FROM conditions WHERE code LIKE 'I10%' "
             "AND onset_date IS NOT NULL GROUP BY patient_id")}
    last: dict[int, date] = {}
    for sql in ("SELECT patient_id, max(study_date) FROM studies GROUP BY patient_id",
                "SELECT patient_id, max(onset_date) FROM conditions GROUP BY patient_id",
                "SELECT patient_id, max(effective_date) FROM observations GROUP BY patient_id"):
        for pid, d in _rows(url, sql):
            if d is not None:
                last[pid] = max(last.get(pid, date.min), _as_date(d))
    born = {pid for pid, b in _rows(url, "SELECT id, birth_date FROM patients")
            if b is not None}
    times, events = [], []
    for pid, t0 in first.items():
        if pid not in born:
            continue
        if pid in end and end[pid] < t0:
            continue
        t1 = end.get(pid)
        times.append(float((t1 - t0).days if t1 else max((last[pid] - t0).days, 0)))
        events.append(t1 is not None)
    return times, events


def test_survival_equals_lifelines_on_the_pooled_rows(fed):
    from lifelines import KaplanMeierFitter

    for unit, days in (("day", 1.0), ("month", 365.2425 / 12)):
        r = fed.result(EVERYONE, {"kind": "survival", "start": {"type": "study"},
                                  "end": {"type": "condition", "system": "icd-10",
                                          "code": "I10", "prefix": True},
                                  "unit": unit})["result"]
        times, events = [], []
        for s in SITES:
            t, e = _survival_rows(fed.urls[s])
            times += t
            events += e
        t = np.floor(np.asarray(times) / days)
        km = KaplanMeierFitter().fit(t, np.asarray(events))
        assert r["n"] == len(t)
        assert r["unit"] == unit
        sf = km.survival_function_["KM_estimate"]
        assert [s["t"] for s in r["steps"]] == sf.index.tolist()
        assert close([s["survival"] for s in r["steps"]], sf.values)
        ci = km.confidence_interval_survival_function_
        assert close([s["ci_low"] for s in r["steps"]], ci.iloc[:, 0].values)
        assert close([s["ci_high"] for s in r["steps"]], ci.iloc[:, 1].values)


# ---------------------------------------------------------------------------- statistics tier


def exact_nodes(fed: StatFederation, where: dict, answer: dict) -> list[dict]:
    return fed.result(where, answer)["nodes"]


def test_the_statistics_tier_is_perturbed_close_and_consistent(fed):
    first = fed.result(FEMALE, {"kind": "mean", "variable": WEIGHT}, permit=False)
    again = fed.result(FEMALE, {"kind": "mean", "variable": WEIGHT}, permit=False,
                       user="bob")
    r = first["result"]
    assert r["perturbed"] is True
    assert r == again["result"]  # the same cohort and question: the same numbers
    # Each node moves its n by at most ±5 and its mean by at most relative_noise (3%) of
    # its sd (a node whose n, with its noise, is under 15 sends nothing); the hub pools the
    # shown summaries, weighted by the shown n, exactly as it pools exact ones.
    shown = {n["node_id"]: n["answer"]["statistic"] for n in first["nodes"]
             if n["answer"]["statistic"] is not None}
    assert len(shown) >= 2
    for n in exact_nodes(fed, FEMALE, {"kind": "mean", "variable": WEIGHT}):
        m, p = n["answer"]["statistic"], shown.get(n["node_id"])
        if p is None:
            assert m["n"] < 15 + 5
            continue
        assert abs(p["n"] - m["n"]) <= 5
        sd = math.sqrt(m["m2"] / (m["n"] - 1))
        assert abs(p["sum"] / p["n"] - m["sum"] / m["n"]) <= 0.03 * sd * 1.0001
        assert p["sum"] / p["n"] != m["sum"] / m["n"]
    assert r["n"] == sum(p["n"] for p in shown.values())
    pooled_mean = sum(p["sum"] for p in shown.values()) / r["n"]
    assert r["mean"] == pytest.approx(pooled_mean, rel=1e-9)
    assert any("perturbed" in note for n in first["nodes"] for note in n["answer"]["notes"])

    lin = fed.result(EVERYONE, {"kind": "linear", "outcome": SYSTOLIC,
                                "predictors": [AGE, SEX]}, permit=False)["result"]
    ref = fed.result(EVERYONE, {"kind": "linear", "outcome": SYSTOLIC,
                                "predictors": [AGE, SEX]})["result"]
    for a, b in zip(lin["coefficients"], ref["coefficients"], strict=True):
        assert abs(a["estimate"] - b["estimate"]) <= 0.5 * b["se"]

    q = fed.result(EVERYONE, {"kind": "quantiles", "variable": AGE}, permit=False)["result"]
    assert q["perturbed"] is True
    # Each value moved by up to 2% of its site's SD, each rank by up to 2 per site: the
    # quantile lies between the pooled values 6 ranks either side, give or take that.
    x = np.sort(pooled(fed, "everyone", [AGE])[:, 0])
    for a in q["quantiles"]:
        k = math.ceil(len(x) * a["p"]) - 1
        lo, hi = x[max(k - 6, 0)], x[min(k + 6, len(x) - 1)]
        slack = 0.02 * x.std(ddof=1) * 1.5
        assert lo - slack <= a["value"] <= hi + slack, (a, lo, hi)

    lg = fed.result(EVERYONE, {"kind": "logistic", "outcome": HYPERTENSION,
                               "predictors": [AGE]}, permit=False)["result"]
    lr = fed.result(EVERYONE, {"kind": "logistic", "outcome": HYPERTENSION,
                               "predictors": [AGE]})["result"]
    assert lg["converged"]
    assert lg["perturbed"]
    for a, b in zip(lg["coefficients"], lr["coefficients"], strict=True):
        assert abs(a["estimate"] - b["estimate"]) <= 0.5 * b["se"]


def test_statistics_tier_counts_in_histograms_go_the_counts_way(fed):
    body = fed.result(EVERYONE, {"kind": "histogram", "variable": AGE,
                                 "edges": [0, 18, 40, 65, 120]}, permit=False)
    r = body["result"]
    node_cells = [c for n in body["nodes"] for c in n["answer"]["statistic"]["counts"]]
    # No site has children: that bin is suppressed with its reason, never a 0.
    young = [c for c in node_cells if c["key"] == {"bin": "0"}]
    assert all(c["suppressed"] and c["value"] is None and "fewer than 10" in c["reason"]
               for c in young)
    assert r["counts"][0]["suppressed"] is True
    assert r["counts"][0]["reason"]
    shown = [c for c in node_cells if not c["suppressed"]]
    assert shown
    assert all(c["value"] >= 10 for c in shown)


def test_disclosure_rules_refuse_with_reasons(fed):
    # Too few patients at every site: no node sends a summary, each says why.
    rare = {"type": "condition", "system": "icd-10", "code": "C71", "prefix": True}
    body = fed.ask(rare, {"kind": "mean", "variable": AGE}, permit=False).json()
    assert body["result"] is None
    for n in body["nodes"]:
        assert n["status"] == "suppressed"
        assert "fewer than 10 patients" in n["answer"]["notes"][0]
    assert any("at least 2 are needed" in note for note in body["notes"])
    # A saturated model.
    body = fed.ask(FEMALE, {"kind": "linear", "outcome": SYSTOLIC, "predictors": [
        AGE, WEIGHT, MR, HYPERTENSION, {"type": "observation", "code": "8302-2",
                                        "unit": "cm"}]}, permit=False).json()
    assert body["result"] is None
    assert any("per parameter" in n["answer"]["notes"][0] for n in body["nodes"])
    # Extreme quantiles of a few patients.
    body = fed.ask(FEMALE, {"kind": "quantiles", "variable": AGE,
                            "probabilities": [0.01]}, permit=False).json()
    # (a site whose n is itself too few as shown says that first)
    notes = [n["answer"]["notes"][0] for n in body["nodes"]]
    assert all("nearer 0.5" in note or "fewer than 10 patients" in note for note in notes)
    assert any("nearer 0.5" in note for note in notes), notes
    # Days single out events in the statistics tier.
    body = fed.ask(EVERYONE, {"kind": "survival", "start": {"type": "study"},
                              "end": HYPERTENSION, "unit": "day"},
                   permit=False).json()
    assert all("week or month" in n["answer"]["notes"][0] for n in body["nodes"])


@pytest.mark.parametrize(("answer", "reason"), [
    ({"kind": "mean", "variable": SEX}, "must be numeric"),
    ({"kind": "mean"}, "needs `variable`"),
    ({"kind": "quantiles", "variable": AGE, "probabilities": [0, 0.5]}, "strictly between"),
    ({"kind": "histogram", "variable": AGE}, "either `bins`"),
    ({"kind": "histogram", "variable": AGE, "edges": [3, 2]}, "strictly increasing"),
    ({"kind": "table", "variables": [WEIGHT, SEX]}, "continuous"),
    ({"kind": "logistic", "outcome": AGE, "predictors": [SEX]}, "must be yes/no"),
    ({"kind": "linear", "outcome": AGE, "predictors": []}, "needs `predictors`"),
    ({"kind": "survival", "start": {"type": "study"}, "end": {"type": "study"},
      "unit": "week"}, "the same event"),
    ({"kind": "count", "variable": AGE}, "takes nothing more"),
    ({"kind": "mean", "variable": {"type": "observation", "code": "8480-6"}}, "unit"),
])
def test_nonsense_is_a_422_with_a_reason(fed, answer, reason):
    resp = fed.ask(FEMALE, answer, permit=False)
    assert resp.status_code == 422
    assert reason in resp.text


# ---------------------------------------------------------------------------- the CLI

EVERY_KIND = [
    {"kind": "mean", "variable": WEIGHT},
    {"kind": "quantiles", "variable": AGE},
    {"kind": "histogram", "variable": AGE, "edges": [0, 18, 40, 65, 120]},
    {"kind": "table", "variables": [SEX, HYPERTENSION]},
    {"kind": "correlation", "variables": [AGE, WEIGHT]},
    {"kind": "linear", "outcome": SYSTOLIC, "predictors": [AGE, SEX]},
    {"kind": "logistic", "outcome": HYPERTENSION, "predictors": [AGE]},
    {"kind": "survival", "start": {"type": "study"}, "end": HYPERTENSION, "unit": "month"},
]


def test_the_cli_prints_a_table_for_every_kind(fed):
    from spe.cli.progress import console
    from spe.cli.query import print_answer

    expected = {"mean": "mean of observation 29463-7", "quantiles": "quantiles of age",
                "histogram": "histogram of age", "table": "sex by condition icd-10 I10*",
                "correlation": "correlation (n =", "linear": "linear regression of",
                "logistic": "logistic regression (log odds)",
                "survival": "Kaplan-Meier survival, time in months"}
    for answer in EVERY_KIND:
        # Too few events at these 40-patient sites for a perturbed curve (each node needs
        # its shown count of events): the permit's exact one.
        exact = answer["kind"] == "survival"
        body = fed.result(EVERYONE, answer, permit=exact)
        with console.capture() as captured:
            print_answer(body)
        out = captured.get()
        assert expected[answer["kind"]] in out, out
        assert ("(perturbed)" in out) is not exact
        for site in SITES:
            assert site in out
        assert "Traceback" not in out


def test_the_cli_refuses_nonsense_before_sending_it(tmp_path):
    import json

    from typer.testing import CliRunner

    from spe.cli.main import app

    query = tmp_path / "q.json"
    query.write_text(json.dumps({"where": FEMALE, "answer": {"kind": "mean",
                                                             "variable": SEX}}))
    result = CliRunner().invoke(app, ["query", str(query), "--hub", "http://127.0.0.1:9",
                                      "--token", "t"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "must be numeric" in result.output


def test_a_statistic_in_rounds_counts_once_against_the_daily_budget(fed):
    body = fed.result(EVERYONE, {"kind": "logistic", "outcome": HYPERTENSION,
                                 "predictors": [AGE]}, permit=False, user="budgeted")
    assert body["result"]["rounds"] > 2
    for site in SITES:
        (used,) = _rows(fed.urls[site], "SELECT count(*) FROM query_answered_sets "
                                        "WHERE user_id = :u", u=f"budgeted@{ISSUER}")[0]
        assert used == 1
