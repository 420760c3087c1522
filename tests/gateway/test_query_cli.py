"""`spe query` against a real hub (uvicorn) and the three mTLS nodes."""

from __future__ import annotations

import json
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
