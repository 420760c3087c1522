"""`spe query` against a real hub (uvicorn) and the three mTLS nodes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spe.app import create_central_app
from spe.cli.main import app
from spe.db.migrate import upgrade
from spe.identity import demo_issuer
from tests.gateway.conftest import RARE
from tests.servers import bind, serve

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def hub(node_servers, tmp_path) -> Iterator[tuple[str, str]]:
    """(the hub's URL, a researcher token it accepts)."""
    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = node_servers.settings.model_copy(update={
        "oidc_issuer": url, "database_url": f"sqlite:///{tmp_path / 'central.db'}",
        "federation_nodes": node_servers.urls, "data_dir": tmp_path / "central"})
    upgrade(settings.resolved_database_url, "central")
    with serve(create_central_app(settings), sock):
        yield url, demo_issuer(settings).mint("cli-user", ["researcher"])


def run(*args: str):
    return CliRunner().invoke(app, ["query", *args], env={"COLUMNS": "200"})


def test_spe_query_prints_every_node_and_the_total(hub, tmp_path: Path):
    url, token = hub
    query = tmp_path / "q.json"
    # Every site's 40 patients (bar site-a's three with the rare code): always shown.
    query.write_text(json.dumps({"where": {"type": "not", "of": {
        "type": "condition", "system": "icd-10", "code": RARE}}}))
    result = run(str(query), "--hub", url, "--token", token)
    assert result.exit_code == 0, result.output
    for site in ("site-a", "site-b", "site-c"):
        assert site in result.output
    assert "all sites" in result.output
    assert "3 answering (min 2)" in result.output
    # Perturbed counts read as such, with their bound and why.
    assert result.output.count("(±5)") == 3
    assert "≈" in result.output
    assert "(±15)" in result.output
    assert "cell-key method" in result.output

    as_json = run(str(query), "--hub", url, "--token", token, "--json",
                  "--granularity", "stratified", "--by", "sex")
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.output)
    assert body["kind"] == "stratified"
    assert {tuple(c["key"]) for c in body["cells"]} == {("sex",)}


def test_spe_query_says_why_a_count_is_suppressed(hub, tmp_path: Path):
    url, token = hub
    query = tmp_path / "q.json"
    query.write_text(json.dumps({"where": {"type": "condition", "system": "icd-10",
                                           "code": RARE}}))
    result = run(str(query), "--hub", url, "--token", token)
    assert result.exit_code == 0, result.output
    assert "suppressed (< 10)" in result.output
    assert "widen the question" in result.output


def test_spe_query_refuses_a_bad_query_before_sending_it(tmp_path: Path):
    query = tmp_path / "q.json"
    query.write_text(json.dumps({"where": {"type": "patient"}}))
    result = run(str(query), "--hub", "http://127.0.0.1:9", "--token", "t")
    assert result.exit_code == 2
    assert "sex or age" in result.output
    query.write_text("{not json")
    assert "not JSON" in run(str(query), "--token", "t").output
    assert run(str(tmp_path / "missing.json"), "--token", "t").exit_code == 2


def test_spe_query_reports_an_unreachable_hub_and_a_refusal(hub, tmp_path: Path):
    url, _ = hub
    query = tmp_path / "q.json"
    query.write_text(json.dumps({"where": {"type": "patient", "sex": "male"}}))
    down = run(str(query), "--hub", "http://127.0.0.1:9", "--token", "t")
    assert down.exit_code == 1
    assert "cannot reach the hub at http://127.0.0.1:9" in down.output
    refused = run(str(query), "--hub", url, "--token", "not-a-token")
    assert refused.exit_code == 1
    assert "HTTP 401" in refused.output
    assert "Traceback" not in refused.output


def test_spe_query_asks_in_the_permit_tier_under_a_permit(node_servers, tmp_path: Path):
    """`spe query Q.json --permit PID`: a member gets the permit tier's exact counts, on
    standard output; a non-member is refused with the hub's reason and exit 1."""
    from datetime import date, timedelta

    import httpx

    from tests.central import catalogued_central

    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    central_db = f"sqlite:///{tmp_path / 'central.db'}"
    catalogued_central(central_db, ("site-a", "site-b", "site-c"), patients=40)
    settings = node_servers.settings.model_copy(update={
        "oidc_issuer": url, "database_url": central_db,
        "federation_nodes": node_servers.urls, "data_dir": tmp_path / "central"})
    issuer = demo_issuer(settings)

    def as_(user: str, role: str, inst: str | None = None) -> dict:
        return {"Authorization": "Bearer " + issuer.mint(user, [role], institution=inst)}

    with serve(create_central_app(settings), sock), httpx.Client(base_url=url) as api:
        alice = as_("alice", "researcher")
        pid = api.post("/api/v1/permits", headers=alice, json={
            "organisation": "Uni", "title": "Rare disease counts", "summary": "s",
            "declaration": True, "start_date": str(date.today()),
            "end_date": str(date.today() + timedelta(days=90)),
            "datasets": ["site-a/imaging-and-clinical-records",
                         "site-b/imaging-and-clinical-records"]}).json()["id"]
        assert api.post(f"/api/v1/permits/{pid}/submit", headers=alice).is_success
        for site, user in (("site-a", "bob"), ("site-b", "bea")):
            assert api.post(f"/api/v1/permits/{pid}/reviews", json={"decision": "approve"},
                            headers=as_(user, "approver", site)).is_success
        issued = api.post(f"/api/v1/permits/{pid}/issue", json={"reason": "ok"},
                          headers=as_("hilde", "hdab"))
        assert issued.json()["pushed"] == {"site-a": "delivered", "site-b": "delivered"}

        query = tmp_path / "q.json"
        query.write_text(json.dumps({"where": {"type": "condition", "system": "icd-10",
                                               "code": RARE}}))
        token = issuer.mint("alice", ["researcher"])
        result = run(str(query), "--hub", url, "--token", token, "--permit", pid)
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert "count (permit tier)" in out  # on standard output, not standard error
        site_a = next(line for line in out.splitlines() if "site-a" in line)
        assert " 3 " in site_a, site_a
        assert "≈" not in site_a, site_a
        assert "suppressed" not in site_a, site_a
        assert "unknown to this node" in next(
            line for line in out.splitlines() if "site-c" in line)

        as_json = run(str(query), "--hub", url, "--token", token, "--permit", pid, "--json")
        assert as_json.exit_code == 0, as_json.output
        assert json.loads(as_json.stdout)["tier"] == "permit"

        stranger = run(str(query), "--hub", url, "--permit", pid, "--token",
                       issuer.mint("mallory", ["researcher"]))
        assert stranger.exit_code == 1
        assert "refused" in stranger.output
        assert "Traceback" not in stranger.output


def test_the_readme_offers_the_permit_tier_the_cli_takes():
    """The README's row for `spe query` names `--permit PID`, and every option it names is
    one `spe query` takes; its query section says how to ask in the permit tier and no
    longer lists that tier under "Not yet" (it did, and the CLI had no --permit)."""
    readme = README.read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `spe query "))
    form = re.match(r"\| `([^`]*)`", row).group(1)
    named = set(re.findall(r"--[a-z][a-z-]*", form))
    assert "--permit" in named, form
    shown = CliRunner().invoke(app, ["query", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert [option for option in sorted(named) if option not in shown.output] == []
    assert "spe query QUERY.json --permit PID" in readme
    not_yet = [part for part in re.split(r"\n(?=- )", readme) if "**Not yet" in part]
    assert [part for part in not_yet if "permit tier" in part] == []
