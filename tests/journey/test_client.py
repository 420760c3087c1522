"""spe.client against a running demo federation (`spe demo`, tests/journey/conftest.py):
every public call of `Client`, each compared with what the API's JSON says, and its errors
as a notebook user meets them. The README's "Python client (notebooks)" examples run here
too, as written."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pandas as pd
import pytest

from spe.client import Client, ClientError, InvalidInput, Refused, Unreachable
from tests.journey import jobs
from tests.servers import bind

pytestmark = pytest.mark.slow

QUERY = {"where": {"type": "imaging", "modality": ["CT", "MR"]}}
README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Python client (notebooks)"


@pytest.fixture(scope="module")
def hub(demo) -> Client:
    return Client(demo.url, demo.tokens["researcher"])


def _api(demo, method: str, path: str, role: str = "researcher", **kwargs) -> object:
    resp = httpx.request(method, demo.url + path, headers=jobs.bearer(demo.tokens[role]),
                         timeout=120, **kwargs)
    assert resp.is_success, resp.text
    return resp.json()


@pytest.fixture(scope="module")
def permit(demo, hub: Client) -> str:
    """An issued permit of alice's over site-a's and site-b's datasets, applied for through
    the client; the approvers and the access body decide through it too."""
    created = hub.apply(jobs.application([jobs.DATASET_A, jobs.DATASET_B]), submit=True)
    pid = created["id"]
    assert created["status"] == "submitted", created
    for role in ("approver", "approver:bea"):
        Client(demo.url, demo.tokens[role]).api.review(pid, "approve")
    issued = Client(demo.url, demo.tokens["hdab"]).api.decide("issue", pid, "journey")
    assert issued["status"] == "active", issued
    return pid


# ---- catalogue ---------------------------------------------------------------------------


def test_search_returns_the_demos_datasets_as_a_dataframe(demo, hub: Client):
    catalogue = httpx.get(f"{demo.url}/api/v1/catalogue", timeout=30).json()
    identifiers = {d["identifier"] for d in catalogue}
    assert {jobs.DATASET_A, jobs.DATASET_B} <= identifiers

    found = hub.search()
    assert isinstance(found, pd.DataFrame)
    assert set(found.index) == identifiers
    assert found.attrs["total"] == len(identifiers)
    assert "modality" in found.attrs["facets"]
    for d in catalogue:
        assert found.loc[d["identifier"], "title"] == d["title"]
        assert found.loc[d["identifier"], "node_id"] == d["node_id"]

    whole = hub.datasets()
    assert set(whole.index) == identifiers
    assert hub.dataset(jobs.DATASET_A)["identifier"] == jobs.DATASET_A

    site_a = hub.search(institution=["site-a"])
    answer = httpx.get(f"{demo.url}/api/v1/catalogue/search",
                       params={"institution": "site-a"}, timeout=30).json()
    assert list(site_a.index) == [r["identifier"] for r in answer["results"]]
    assert list(site_a.index) == [jobs.DATASET_A]


def test_spe_catalogue_search_prints_what_the_client_finds(demo, tmp_path: Path):
    """The command is built on the client: the same hits, without a token (public)."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SPE_")}
    env.update(SPE_HUB_URL=demo.url, COLUMNS="250")
    found = Client(demo.url).search("imaging", modality=["MR"])  # no token: public
    assert len(found) > 0
    shown = subprocess.run([sys.executable, "-m", "spe.cli", "catalogue", "search",
                            "imaging", "--modality", "MR", "--json"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert [h["identifier"] for h in json.loads(shown.stdout)["results"]] == list(found.index)
    table = subprocess.run([sys.executable, "-m", "spe.cli", "catalogue", "search",
                            "--institution", "site-a"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert jobs.DATASET_A in table.stdout
    assert jobs.DATASET_B not in table.stdout
    bad = subprocess.run([sys.executable, "-m", "spe.cli", "catalogue", "search",
                          "--age-band", "old"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "the hub refused: HTTP 422: " in bad.stderr
    assert "age_band" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_client_without_a_token_searches_but_asks_for_one_to_query(demo, monkeypatch):
    from spe.client import NotConfigured

    monkeypatch.delenv("SPE_TOKEN", raising=False)
    anonymous = Client(demo.url)
    assert len(anonymous.datasets()) > 0
    with pytest.raises(NotConfigured, match="SPE_TOKEN"):
        anonymous.query(QUERY)


def test_a_bad_search_filter_is_refused_with_the_apis_reason(hub: Client):
    with pytest.raises(Refused) as refused:
        hub.search(colour=["blue"])
    assert refused.value.status == 422
    assert "colour" in refused.value.reason


# ---- federated queries and statistics ----------------------------------------------------


def test_a_querys_dataframe_is_what_the_apis_json_says(demo, hub: Client):
    df = hub.query(QUERY)
    answer = _api(demo, "POST", "/api/v1/query", json=QUERY)  # the same answer each time
    assert df.attrs["answer"]["query_hash"] == answer["query_hash"]
    assert len(answer["nodes"]) == 3
    for n in answer["nodes"]:
        row = df[df.node == n["node_id"]].iloc[0]
        assert row.status == n["status"]
        total = n["answer"]["total"]
        assert (None if pd.isna(row["count"]) else int(row["count"])) == total["value"]
        assert bool(row.perturbed) == total["perturbed"]
        assert bool(row.suppressed) == total["suppressed"]
    pooled = df[df.node == "all sites"].iloc[0]
    assert int(pooled["count"]) == answer["total"]["value"]
    assert pooled.max_noise == answer["total"]["max_noise"]


def test_a_stratified_querys_cells_are_the_apis(demo, hub: Client):
    df = hub.query(QUERY, by=["sex"])
    answer = _api(demo, "POST", "/api/v1/query",
                  json={**QUERY, "answer": {"kind": "stratified", "by": ["sex"]}})
    pooled = df[(df.node == "all sites") & df.sex.notna()]
    assert len(pooled) == len(answer["cells"]) > 0
    for cell in answer["cells"]:
        row = pooled[pooled.sex == cell["key"]["sex"]].iloc[0]
        assert (None if pd.isna(row["count"]) else int(row["count"])) == cell["value"]


def test_statistics_are_dataframes_of_their_kind(demo, hub: Client):
    mean = hub.statistic("mean", QUERY["where"], variable={"type": "age"})
    answer = _api(demo, "POST", "/api/v1/query", json={
        "where": QUERY["where"], "answer": {"kind": "mean", "variable": {"type": "age"}}})
    result = answer["result"]
    assert result is not None, answer["notes"]
    assert mean.loc[0, "mean"] == pytest.approx(result["mean"])
    assert mean.loc[0, "n"] == result["n"]
    assert list(mean.attrs["nodes"].node) == [n["node_id"] for n in answer["nodes"]]

    edges = [0, 40, 65, 120]
    histogram = hub.query({"where": QUERY["where"],
                           "answer": {"kind": "histogram", "variable": {"type": "age"},
                                      "edges": edges}})
    assert list(histogram["from"]) == edges[:-1]
    assert list(histogram["to"]) == edges[1:]
    counts = histogram.attrs["answer"]["result"]["counts"]
    assert [None if pd.isna(c) else int(c) for c in histogram["count"]] == [
        c["value"] for c in counts]


def test_a_malformed_query_is_refused_before_anything_is_sent(hub: Client):
    with pytest.raises(InvalidInput, match="the query is not valid"):
        hub.query({"where": {"type": "nonsense"}})
    with pytest.raises(InvalidInput, match="not a statistic"):
        hub.statistic("median")


# ---- permits -----------------------------------------------------------------------------


def test_permits_apply_list_and_show(demo, hub: Client, permit: str):
    draft = hub.apply(jobs.application([jobs.DATASET_A]))
    assert draft["status"] == "draft"
    mine = hub.permits(mine=True)
    assert {permit, draft["id"]} <= set(mine.index)
    assert mine.loc[permit, "status"] == "active"
    assert mine.loc[draft["id"], "status"] == "draft"
    listed = _api(demo, "GET", "/api/v1/permits", params={"mine": "true"})
    assert set(mine.index) == {p["id"] for p in listed}
    drafts = hub.permits(status=["draft"])
    assert set(drafts.status) == {"draft"}
    assert hub.permit(permit)["datasets"][0]["dataset"] == jobs.DATASET_A
    submitted = hub.submit_application(draft["id"])
    assert submitted["status"] == "submitted"


# ---- jobs --------------------------------------------------------------------------------


def test_a_job_submitted_waited_for_and_its_outputs(demo, hub: Client, permit: str,
                                                    needs_sandbox, tmp_path: Path, capsys):
    jobs.write_inputs(tmp_path)
    job_id = hub.submit(tmp_path / "code", permit=permit, nodes=["site-a", "site-b"],
                        limits={"wall_seconds": 300})
    done = hub.wait(job_id, progress=True)
    drawn = capsys.readouterr().err
    assert {n["state"] for n in done["nodes"]} == {"succeeded"}, done
    # Not a terminal: a plain line per change, ending with every part done.
    assert f"job {job_id[:12]} site-a:" in drawn, drawn
    assert "succeeded (2/2 ended)" in drawn, drawn
    assert "\x1b[" not in drawn

    assert hub.job(job_id) == _api(demo, "GET", f"/api/v1/jobs/{job_id}")
    listed = hub.jobs()
    assert set(listed[listed.job == job_id].node) == {"site-a", "site-b"}

    requests = jobs.airlock_requests(demo.url, demo.tokens["researcher"], job_id)
    with pytest.raises(ClientError, match=r"no released outputs for job .*pending"):
        hub.download(job_id, tmp_path / "early")
    jobs.release(demo.url, [demo.tokens["output_checker"],
                            demo.tokens["output_checker:oscar"]], requests)
    outputs = hub.outputs(job_id)
    assert set(outputs.state) == {"released"}
    assert {("site-a", "table.csv"), ("site-b", "table.csv")} <= set(
        zip(outputs.node, outputs.file.str.rsplit("/", n=1).str[-1], strict=True))
    written = hub.download(job_id, tmp_path / "out")
    assert sorted(p.name for p in written if p.name == "table.csv") == ["table.csv"] * 2
    assert all(p.is_file() and tmp_path / "out" in p.parents for p in written)


def test_a_script_is_sent_as_source_and_a_job_cancelled(
        demo, hub: Client, permit: str, needs_sandbox, monkeypatch):
    sent: list[dict] = []
    real = httpx.request

    def spy(method, url, **kwargs):
        if method == "POST" and url.endswith("/api/v1/jobs"):
            sent.append(kwargs["json"])
        return real(method, url, **kwargs)

    monkeypatch.setattr(httpx, "request", spy)
    job_id = hub.submit('print("hello")\n', permit=permit, nodes=["site-a"])
    assert sent[-1]["script"] == 'print("hello")\n'
    assert "environment" not in sent[-1]
    assert hub.wait(job_id, progress=False)["nodes"][0]["state"] == "succeeded"
    sleeper = hub.submit(jobs.SLEEPER, permit=permit, nodes=["site-a"], environment=None)
    assert hub.cancel(sleeper)["id"] == sleeper
    assert hub.wait(sleeper, progress=False, timeout=120)["nodes"][0]["state"] == "cancelled"


# ---- errors ------------------------------------------------------------------------------


def test_a_bad_token_is_a_client_error_with_status_401_and_the_reason(demo):
    bad = Client(demo.url, "not-a-token")
    with pytest.raises(ClientError) as refused:
        bad.jobs()
    assert isinstance(refused.value, Refused)
    assert refused.value.status == 401
    assert refused.value.reason
    assert str(refused.value) == f"the hub refused: HTTP 401: {refused.value.reason}"


def test_an_unreachable_hub_says_so_without_an_httpx_exception():
    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    with pytest.raises(Unreachable) as down:
        Client(url, "t").permits()
    assert f"cannot reach the hub at {url}" in down.value.reason
    assert "SPE_HUB_URL" in down.value.reason
    assert down.value.status is None
    assert not isinstance(down.value.__cause__, httpx.HTTPError)


def test_a_bad_job_id_and_a_missing_folder_are_invalid_input(hub: Client, tmp_path: Path):
    with pytest.raises(InvalidInput, match="is not a job id"):
        hub.job("a/b")
    with pytest.raises(InvalidInput, match="no such folder"):
        hub.submit(tmp_path / "nowhere", permit="P-1")


def test_no_hub_certificate_bundle_is_named(demo, tmp_path: Path):
    from spe.client import NotConfigured

    with pytest.raises(NotConfigured, match="not a readable PEM CA bundle"):
        Client(demo.url, "t", ca_bundle=tmp_path / "missing.pem")


# ---- the README's examples ---------------------------------------------------------------


def readme_examples() -> list[str]:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def test_the_readmes_client_examples_run_against_the_demo(demo, permit: str, needs_sandbox,
                                                          tmp_path: Path, monkeypatch):
    examples = readme_examples()
    assert len(examples) >= 3, "the README's client section has no python examples"
    jobs.write_inputs(tmp_path)  # code/main.py, as the README's job example sends
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPE_HUB_URL", demo.url)
    monkeypatch.setenv("SPE_TOKEN", demo.tokens["researcher"])
    namespace: dict = {}
    for example in examples:
        exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102
    assert isinstance(namespace["datasets"], pd.DataFrame)
    assert len(namespace["datasets"]) > 0
    assert isinstance(namespace["counts"], pd.DataFrame)
