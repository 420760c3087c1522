"""The CLI's first hour without the demo's settings: every refusal says what it looked for
and how to point it, writes nothing (no stray key, no empty database) and prints no
traceback; the API's validation errors are in words, and the CLI prints them so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey

from spe.db.migrate import upgrade
from spe.identity import DemoIssuer
from spe.settings import Settings
from tests.servers import bind

REPO = Path(__file__).resolve().parents[2]


def spe(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`spe ARGS` as a user runs it in `cwd`, with none of the SPE_* of the test's shell."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPE_")}
    clean.update({"COLUMNS": "250", "PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run([sys.executable, "-m", "spe.cli", *args], cwd=cwd, env=clean,
                          capture_output=True, text=True, timeout=120)


def said(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_spe_token_without_an_issuer_key_refuses_and_writes_no_key(tmp_path: Path):
    result = spe("token", "--user", "alice", "--role", "researcher", cwd=tmp_path)
    assert result.returncode == 2, said(result)
    text = said(result)
    assert "no demo issuer key at var/keys/issuer.jwk.json" in text
    assert "SPE_DATA_DIR" in text
    assert "spe.env" in text
    assert "Traceback" not in text
    assert files_under(tmp_path) == []  # no stray key in var/keys


def test_spe_token_signs_for_the_demo_issuer_its_data_dir_names(tmp_path: Path):
    """A data folder of the demo: its key, and its issuer URL from its spe.env (the demo
    serves at another port than the default), so the demo accepts the token."""
    demo = tmp_path / "demo"
    issuer_url = "http://127.0.0.1:8765"
    DemoIssuer(demo / "keys" / "issuer.jwk.json", issuer_url, "spe")  # as the demo made it
    (demo / "spe.env").write_text(f"export SPE_OIDC_ISSUER={issuer_url}\n")
    result = spe("token", "--user", "alice", "--role", "researcher", cwd=tmp_path,
                 env={"SPE_DATA_DIR": str(demo)})
    assert result.returncode == 0, said(result)
    key = ECKey.import_key(json.loads((demo / "keys" / "issuer.jwk.json").read_text()))
    claims = jwt.decode(result.stdout.strip(), key).claims
    assert claims["iss"] == issuer_url
    assert claims["sub"] == "alice"
    assert claims["roles"] == ["researcher"]
    assert files_under(demo / "keys") == ["issuer.jwk.json"]


def test_audit_verify_without_a_database_names_it_and_creates_nothing(tmp_path: Path):
    result = spe("audit", "verify", cwd=tmp_path)
    text = said(result)
    assert result.returncode == 2, text
    assert f"no database at {tmp_path / 'var' / 'central.db'}" in text
    assert "SPE_DATA_DIR" in text
    assert "--database-url" in text
    assert "Traceback" not in text
    assert "sqlalchemy" not in text.lower()
    assert files_under(tmp_path) == []  # no empty var/central.db left behind
    for args in (["audit", "witness", "--node", "site-a"], ["audit", "prune"]):
        other = spe(*args, cwd=tmp_path)
        assert other.returncode == 2, said(other)
        assert "no database at" in said(other)
    assert files_under(tmp_path) == []


def test_audit_verify_of_a_database_that_is_not_migrated_gives_a_reason(tmp_path: Path):
    (tmp_path / "empty.db").write_bytes(b"")
    result = spe("audit", "verify", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}",
                 cwd=tmp_path)
    text = said(result)
    assert result.returncode == 1, text
    assert "cannot read the database" in text
    assert "spe db upgrade" in text
    assert "Traceback" not in text


def test_the_cli_without_a_hub_says_where_it_looked_and_what_to_set(tmp_path: Path):
    sock = bind()  # a port nobody listens on once closed
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    result = spe("permit", "list", "--token", "t", cwd=tmp_path, env={"SPE_OIDC_ISSUER": url})
    text = said(result)
    assert result.returncode == 1, text
    assert f"cannot reach the hub at {url}" in text
    assert "no hub is running there" in text
    assert "--hub" in text
    assert "SPE_HUB_URL" in text
    assert "spe.env" in text
    assert "Traceback" not in text


def test_catalogue_harvest_without_the_demo_settings_refuses_and_writes_nothing(
        tmp_path: Path):
    nodes = spe("catalogue", "harvest", cwd=tmp_path)
    assert nodes.returncode == 2, said(nodes)
    assert "SPE_CATALOGUE_NODES" in said(nodes)
    keyless = spe("catalogue", "harvest", "--node", "https://127.0.0.1:9", cwd=tmp_path)
    assert keyless.returncode == 2, said(keyless)
    assert "no demo issuer key" in said(keyless)
    assert "Traceback" not in said(nodes) + said(keyless)
    assert files_under(tmp_path) == []


def test_harvest_of_a_mutual_tls_node_without_the_pki_says_what_to_set(tmp_path: Path):
    """A node speaks mutual TLS; harvesting it without SPE_PKI_DIR fails its handshake, and
    the CLI names the setting and the demo's env file (it printed the TLS error alone)."""
    from gateway.node.app import create_node_app
    from gateway.node.config import NodeConfig
    from spe.pki import init_pki, server_ssl_options
    from tests.servers import serve

    pki = tmp_path / "pki"
    init_pki(pki, nodes=["site-a"])
    node_db = f"sqlite:///{tmp_path / 'node.db'}"
    upgrade(node_db, "node")
    node = create_node_app(NodeConfig("site-a", "site-a", node_db), Settings(
        data_dir=tmp_path / "node", oidc_issuer="http://127.0.0.1:8000", pki_dir=pki))
    central = tmp_path / "central"
    DemoIssuer(central / "keys" / "issuer.jwk.json", "http://127.0.0.1:8000", "spe")
    sock = bind()
    url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    with serve(node, sock, lifespan="off", **server_ssl_options(pki, "site-a")):
        result = spe("catalogue", "harvest", "--node", url, cwd=tmp_path,
                     env={"SPE_DATA_DIR": str(central)})
    text = said(result)
    assert result.returncode == 1, text
    assert f"failed {url}" in text
    assert "set SPE_PKI_DIR to the PKI folder" in text
    assert "spe.env" in text
    assert "Traceback" not in text


def test_job_submit_names_a_missing_code_folder(tmp_path: Path):
    result = spe("job", "submit", str(tmp_path / "nowhere"), "--permit", "P-1", "--token",
                 "t", "--hub", "http://127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2, said(result)
    assert f"{tmp_path / 'nowhere'}: no such folder" in said(result)
    assert "--entry" not in said(result)
    (tmp_path / "code").mkdir()
    no_entry = spe("job", "submit", str(tmp_path / "code"), "--permit", "P-1", "--token",
                   "t", "--hub", "http://127.0.0.1:9", cwd=tmp_path)
    assert no_entry.returncode == 2
    assert "main.py: no such file: the script the job runs" in said(no_entry)


@pytest.fixture
def central(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'central.db'}"
    upgrade(url, "central")
    from spe.app import create_central_app

    settings = Settings(data_dir=tmp_path, database_url=url, oidc_issuer="http://central")
    issuer = DemoIssuer(settings.issuer_key_path, "http://central", "spe")
    with TestClient(create_central_app(settings)) as client:
        client.headers["Authorization"] = "Bearer " + issuer.mint("alice", ["researcher"])
        yield client


def test_the_api_says_what_is_wrong_with_each_field_in_words(central):
    resp = central.post("/api/v1/jobs", json={"permit": "", "script": "print(1)",
                                               "entry": "x" * 500})
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "invalid_request"
    problems = {".".join(map(str, p["loc"])): p["msg"] for p in body["detail"]}
    assert problems["body.permit"] == "must not be empty"
    assert problems["body.entry"].startswith("must have at most ")
    assert "pydantic" not in resp.text
    assert "should have" not in resp.text
    assert "x" * 20 not in resp.text  # the values given are not echoed


def test_the_cli_prints_the_apis_reason_in_words(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    import spe.cli.http
    from spe.cli.main import app

    class Answer:
        status_code, is_success = 422, False

        @staticmethod
        def json():
            return {"error": "invalid_request", "detail": [
                {"loc": ["body", "limits", "memory_mb"], "msg": "must be at least 64"},
                {"loc": ["query", "offset"], "msg": "must be at most 10"}]}

    monkeypatch.setattr(spe.cli.http.httpx, "request", lambda *a, **kw: Answer())
    result = CliRunner().invoke(app, ["permit", "list", "--hub", "http://hub", "--token",
                                      "t"], env={"COLUMNS": "250"})
    assert result.exit_code == 1
    assert ("the hub refused: HTTP 422: limits.memory_mb: must be at least 64; "
            "offset (query parameter): must be at most 10") in result.output


def test_an_unreadable_ssl_cert_file_is_named_before_anything_is_sent(tmp_path: Path):
    missing = tmp_path / "missing.pem"
    result = spe("job", "list", "--hub", "https://127.0.0.1:9", "--token", "t", cwd=tmp_path,
                 env={"SSL_CERT_FILE": str(missing)})
    assert result.returncode == 2, said(result)
    assert f"SSL_CERT_FILE {missing}: not a readable PEM CA bundle" in said(result)
    assert "Traceback" not in said(result)
