"""The central service and a node against a real OpenID Connect provider (panva's
oidc-provider over TLS on loopback, tests/oidc_provider.py): tokens obtained as real clients
obtain them, then what a holder of a good, an expired, a foreign or a rotated-away token
gets back, and what happens while the provider is down."""

from __future__ import annotations

import secrets
import time

import httpx
import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey
from sqlalchemy import select

from spe.audit import CentralAuditEntry
from spe.pki import client_ssl_context
from tests.identity.conftest import (
    SITES,
    central_service,
    provider_settings,
    serve_nodes,
)
from tests.oidc_provider import AUDIENCE, USERS, oidc_provider, wait_until_expired


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def key_fetches(provider) -> int:
    """How many times anyone fetched the provider's keys (its request log)."""
    return (provider.directory / "provider.log").read_text().count("GET /jwks\n")


def last_authentication(client) -> CentralAuditEntry:
    ctx = client.app.state.ctx
    with ctx.sessions() as session:
        return session.execute(
            select(CentralAuditEntry).where(CentralAuditEntry.action == "authenticate")
            .order_by(CentralAuditEntry.seq.desc()).limit(1)).scalar_one()


@pytest.fixture
def central(provider, tmp_path):
    with central_service(provider_settings(provider, tmp_path)) as client:
        yield client


# -- a good token -------------------------------------------------------------------------


def test_a_users_token_by_authorization_code_and_pkce_is_accepted_with_its_roles(
        provider, central):
    alice = provider.login("alice")["access_token"]
    me = central.get("/api/v1/me", headers=bearer(alice))
    assert me.status_code == 200, me.text
    assert me.json()["roles"] == ["researcher"]
    assert me.json()["id"] == f"alice@{provider.issuer}"
    assert me.json()["name"] is None or me.json()["name"]  # not required in access tokens
    olga = provider.login("olga")["access_token"]
    me = central.get("/api/v1/me", headers=bearer(olga)).json()
    assert (me["roles"], me["institution"]) == (["approver"], "site-a")
    # The roles are the provider's, and they are what the policy decides on: a researcher
    # does not read the user list (an admin does).
    assert central.get("/api/v1/users", headers=bearer(alice)).status_code == 403


def test_a_research_logins_entitlements_give_the_roles_the_operator_mapped(
        provider, tmp_path):
    """erik has group memberships only (`eduperson_entitlement`): the one the operator
    mapped gives its role, the other none; without the map he has no role at all."""
    researchers, other = USERS["erik"]["eduperson_entitlement"]
    token = provider.login("erik")["access_token"]
    mapped = provider_settings(provider, tmp_path / "mapped",
                               oidc_entitlement_roles={researchers: "researcher"})
    with central_service(mapped) as central:
        me = central.get("/api/v1/me", headers=bearer(token))
        assert me.status_code == 200, me.text
        assert me.json()["roles"] == ["researcher"]
    with central_service(provider_settings(provider, tmp_path / "unmapped")) as central:
        me = central.get("/api/v1/me", headers=bearer(token))
        assert me.status_code == 403, me.text
        assert "roles []" in me.json()["detail"]
    assert other not in mapped.oidc_entitlement_roles


def test_a_wrong_password_gets_no_code(provider):
    with pytest.raises(RuntimeError, match="no code for alice"):
        provider.login("alice", "not-her-password")


def test_a_service_accounts_token_reads_a_nodes_descriptors_and_a_users_does_not(
        provider, federation_files, tmp_path):
    pki, dbs = federation_files
    settings = provider_settings(provider, tmp_path, pki_dir=pki)
    harvester = provider.client_credentials()["access_token"]
    alice = provider.login("alice")["access_token"]
    with serve_nodes(settings, pki, dbs) as nodes, httpx.Client(
            verify=client_ssl_context(pki, "hub"), timeout=10) as hub:
        url = nodes.urls[SITES[0]] + "/api/v1/descriptors"
        resp = hub.get(url, headers=bearer(harvester))
        assert resp.status_code == 200, resp.text
        assert resp.json()[0]["node_id"] == SITES[0]
        assert hub.get(url, headers=bearer(alice)).status_code == 403


# -- tokens that must not pass ------------------------------------------------------------


def test_an_expired_token_is_refused_with_the_reason_and_audited(tmp_path_factory, tmp_path):
    with oidc_provider(tmp_path_factory.mktemp("idp-short"), access_token_ttl=2) as short, \
            central_service(provider_settings(short, tmp_path)) as central:
        token = short.login("alice")["access_token"]
        assert central.get("/api/v1/me", headers=bearer(token)).status_code == 200
        wait_until_expired(token)
        resp = central.get("/api/v1/me", headers=bearer(token))
        assert resp.status_code == 401
        assert resp.json()["detail"] == "token expired"
        assert "invalid_token" in resp.headers["www-authenticate"]
        entry = last_authentication(central)
        assert (entry.decision, entry.reason) == ("deny", "token expired")


def test_a_token_of_another_issuer_is_refused(provider, central, tmp_path_factory):
    """Another provider (its own keys, its own issuer): a token it issued for the same
    audience, with the same user's roles, gets nowhere."""
    with oidc_provider(tmp_path_factory.mktemp("idp-other")) as other:
        foreign = other.login("alice")["access_token"]
    resp = central.get("/api/v1/me", headers=bearer(foreign))
    assert resp.status_code == 401
    assert "key the issuer does not publish" in resp.json()["detail"]


def test_a_token_for_another_audience_is_refused(provider, tmp_path):
    token = provider.login("alice")["access_token"]
    settings = provider_settings(provider, tmp_path, oidc_audience="another-service")
    with central_service(settings) as other_audience:
        resp = other_audience.get("/api/v1/me", headers=bearer(token))
    assert resp.status_code == 401
    assert resp.json()["detail"].startswith("token rejected")
    assert "aud" in resp.json()["detail"]


def test_made_up_key_ids_do_not_make_the_service_hammer_the_provider(provider, central):
    """An attacker's tokens each naming a new kid: each is refused, and the keys are
    fetched again at most once per SPE_OIDC_JWKS_MIN_REFRESH_SECONDS (0.5 s here), not once
    per token."""
    good = provider.login("alice")["access_token"]
    assert central.get("/api/v1/me", headers=bearer(good)).status_code == 200
    before = key_fetches(provider)
    started = time.monotonic()
    attempts = 30
    for _ in range(attempts):
        key = ECKey.generate_key("P-256", parameters={"kid": secrets.token_hex(8)})
        forged = jwt.encode({"alg": "ES256", "kid": key.kid}, {
            "iss": provider.issuer, "aud": AUDIENCE, "sub": "mallory", "roles": ["admin"],
            "exp": int(time.time()) + 300}, key)
        resp = central.get("/api/v1/me", headers=bearer(forged))
        assert resp.status_code == 401
        assert resp.json()["detail"] == "token signed by a key the issuer does not publish"
    elapsed = time.monotonic() - started
    fetched = key_fetches(provider) - before
    # One fetch per started half second at most (plus the one the window opens with).
    assert fetched <= elapsed / 0.5 + 1
    assert fetched < attempts


# -- the provider rotates its keys, or goes down -----------------------------------------


def test_rotated_signing_keys_are_followed_without_a_restart(tmp_path_factory, tmp_path):
    with oidc_provider(tmp_path_factory.mktemp("idp-rotating")) as idp, \
            central_service(provider_settings(idp, tmp_path)) as central:
        old = idp.login("alice")["access_token"]
        old_kid = idp.kid
        assert central.get("/api/v1/me", headers=bearer(old)).status_code == 200
        idp.rotate(keep_old=False)  # the old key is withdrawn, a new one signs
        assert idp.kid != old_kid
        time.sleep(0.6)  # the refetch limit (0.5 s) since the last fetch
        new = idp.login("alice")["access_token"]
        assert jws.extract_compact(new.encode()).headers()["kid"] == idp.kid
        resp = central.get("/api/v1/me", headers=bearer(new))
        assert resp.status_code == 200, resp.text
        assert resp.json()["roles"] == ["researcher"]
        # The withdrawn key's token is no longer accepted once the keys were fetched anew.
        resp = central.get("/api/v1/me", headers=bearer(old))
        assert resp.status_code == 401
        assert resp.json()["detail"] == "token signed by a key the issuer does not publish"


def test_the_provider_down_is_ridden_out_for_the_cache_time_then_refused_with_a_reason(
        tmp_path_factory, tmp_path):
    """Keys fetched last more than SPE_OIDC_JWKS_CACHE_SECONDS ago are not used: a 503
    saying why (the provider unreachable), audited; the provider back, tokens pass again
    without a restart."""
    with oidc_provider(tmp_path_factory.mktemp("idp-down")) as idp, central_service(
            provider_settings(idp, tmp_path, oidc_jwks_cache_seconds=3)) as central:
        token = idp.login("alice")["access_token"]
        assert central.get("/api/v1/me", headers=bearer(token)).status_code == 200
        idp.stop()
        assert central.get("/api/v1/me", headers=bearer(token)).status_code == 200
        time.sleep(3.2)
        resp = central.get("/api/v1/me", headers=bearer(token))
        assert resp.status_code == 503, resp.text
        body = resp.json()
        assert body["error"] == "identity_provider_unavailable"
        assert "keys could not be fetched" in body["detail"]
        assert idp.jwks_url in body["detail"]
        assert "unreachable" in body["detail"]
        entry = last_authentication(central)
        assert entry.decision == "deny"
        assert "could not be fetched" in entry.reason
        idp.start()
        time.sleep(0.6)  # the refetch limit since the last failed attempt
        assert central.get("/api/v1/me", headers=bearer(token)).status_code == 200
