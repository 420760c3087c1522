"""Identity and authorisation from the outside: what an attacker's requests get back."""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select

from spe.app import create_central_app
from spe.audit import CentralAuditEntry
from spe.db.migrate import upgrade
from spe.identity import DemoIssuer, demo_issuer
from spe.settings import REPO_ROOT, Settings

ISSUER = "http://127.0.0.1:8000"


@pytest.fixture
def central(tmp_path: Path, database_url: str):
    settings = Settings(data_dir=tmp_path, database_url=database_url, oidc_issuer=ISSUER)
    upgrade(database_url, "central")
    app = create_central_app(settings)
    with TestClient(app) as client:
        yield client, demo_issuer(settings), app.state.ctx


def last_entry(ctx) -> CentralAuditEntry:
    with ctx.sessions() as session:
        return session.execute(
            select(CentralAuditEntry).order_by(CentralAuditEntry.seq.desc()).limit(1)
        ).scalar_one()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_answers_without_a_token(central):
    client, _, _ = central
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.json()
    assert ready.json()["checks"]["database"] == {"status": "ok"}


def test_jwks_is_published(central):
    client, issuer, _ = central
    assert client.get("/.well-known/jwks.json").json() == issuer.jwks()


def test_no_token_is_401_and_audited(central):
    client, _, ctx = central
    resp = client.get("/api/v1/me")
    assert resp.status_code == 401
    assert resp.json() == {"error": "not_authenticated", "detail": "a bearer token is required"}
    entry = last_entry(ctx)
    assert (entry.actor, entry.decision, entry.object) == ("anonymous", "deny", "GET /api/v1/me")


def test_expired_token_is_401(central):
    client, issuer, ctx = central
    token = issuer.mint("alice", ["researcher"], ttl_seconds=-120)
    resp = client.get("/api/v1/me", headers=bearer(token))
    assert resp.status_code == 401
    assert "expired" in resp.json()["detail"]
    assert last_entry(ctx).reason == "token expired"


def test_token_from_another_issuer_is_401(central, tmp_path: Path):
    client, _, ctx = central
    other = DemoIssuer(tmp_path / "other.jwk", "https://evil.example", "spe")
    resp = client.get("/api/v1/me", headers=bearer(other.mint("alice", ["admin"])))
    assert resp.status_code == 401
    assert last_entry(ctx).decision == "deny"


def test_token_with_our_kid_but_another_key_is_401(central):
    client, issuer, _ = central
    forged_key = ECKey.generate_key("P-256", parameters={"kid": issuer.key.kid}, private=True)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "spe", "sub": "mallory", "exp": now + 600,
              "roles": ["admin"]}
    token = jwt.encode({"alg": "ES256", "kid": issuer.key.kid}, claims, forged_key)
    resp = client.get("/api/v1/me", headers=bearer(token))
    assert resp.status_code == 401
    assert "signature" in resp.json()["detail"]


def test_tampered_payload_is_401(central):
    client, issuer, _ = central
    header, payload, sig = issuer.mint("alice", ["researcher"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["admin"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    resp = client.get("/api/v1/audit/verify", headers=bearer(f"{header}.{forged}.{sig}"))
    assert resp.status_code == 401


def test_wrong_audience_is_401(central, tmp_path: Path):
    client, issuer, _ = central
    other_aud = DemoIssuer(tmp_path / "keys" / "issuer.jwk.json", ISSUER, "another-service")
    assert other_aud.key.kid == issuer.key.kid  # same key, same issuer, other audience
    resp = client.get("/api/v1/me", headers=bearer(other_aud.mint("alice", ["researcher"])))
    assert resp.status_code == 401
    assert "aud" in resp.json()["detail"]


def test_garbage_token_is_401(central):
    client, _, _ = central
    for token in ("not-a-jwt", "a.b.c", "Bearer"):
        assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": "Basic abc"}).status_code == 401


def test_wrong_role_is_403_decided_by_rego_and_audited(central):
    client, issuer, ctx = central
    resp = client.get("/api/v1/audit/verify",
                      headers=bearer(issuer.mint("alice", ["researcher"])))
    assert resp.status_code == 403
    assert resp.json()["detail"] == (
        'denied: roles [researcher] may not call GET /api/v1/audit/verify on central'
    )
    entry = last_entry(ctx)
    assert entry.actor == f"alice@{ISSUER}"
    assert (entry.action, entry.decision) == ("authorize", "deny")
    assert entry.reason == resp.json()["detail"]


def test_right_role_is_allowed_and_audited(central):
    client, issuer, ctx = central
    resp = client.get("/api/v1/audit/verify", headers=bearer(issuer.mint("root", ["admin"])))
    assert resp.status_code == 200
    assert resp.json()["ok"] is True
    entry = last_entry(ctx)
    assert (entry.actor, entry.decision) == (f"root@{ISSUER}", "allow")


def test_users_are_unique_identities(central, tmp_path: Path):
    client, issuer, _ = central
    for _ in range(2):
        assert client.get("/api/v1/me", headers=bearer(issuer.mint("alice", ["researcher"]))
                          ).status_code == 200
    users = client.get("/api/v1/users", headers=bearer(issuer.mint("root", ["admin"]))).json()
    assert sorted(u["subject"] for u in users) == ["alice", "root"]


def test_broken_policy_file_denies_and_logs(tmp_path: Path, database_url: str, caplog):
    policies = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies)
    rego = policies / "authz" / "authz.rego"
    rego.write_text(rego.read_text() + "\nallow if {\n")
    settings = Settings(data_dir=tmp_path, database_url=database_url, oidc_issuer=ISSUER,
                        policy_dir=policies)
    upgrade(database_url, "central")
    app = create_central_app(settings)
    token = demo_issuer(settings).mint("root", ["admin"])
    with TestClient(app) as client, caplog.at_level("ERROR", logger="spe.policy"):
        resp = client.get("/api/v1/audit/verify", headers=bearer(token))
    assert resp.status_code == 403
    assert resp.json()["detail"].startswith("policy error, denied")
    assert "could not be evaluated" in caplog.text
    entry = last_entry(app.state.ctx)
    assert entry.decision == "deny"
    assert "policy error" in entry.reason
