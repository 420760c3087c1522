"""The central service's own calls (the scheduled harvest of the nodes' descriptors)
authenticate as its client of the identity provider by OAuth 2.0 client credentials: tokens
are renewed before they expire and when a node refuses one, so the schedule outlives every
token; a provider that refuses the client is reported, never a traceback."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import ssl
import time

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from catalogue.schedule import ACTOR, harvest_periodically, harvest_round
from spe.audit import CentralAuditEntry
from spe.cli.main import app as cli
from spe.db import make_engine, make_sessionmaker
from spe.identity import ClientCredentials, PrivateKeyJwt, TokenUnavailable, machine_token
from spe.pki import client_ssl_context
from spe.settings import InsecureConfiguration, Settings
from tests.identity.conftest import SITES, provider_settings, serve_nodes
from tests.oidc_provider import HARVESTER, HARVESTER_SECRET, oidc_provider

#: Tokens of the short-lived provider live this long; the schedule runs across several.
TOKEN_SECONDS = 3


def harvester_settings(provider, data_dir, pki, nodes=(), **kw):
    return provider_settings(provider, data_dir, **{
        "pki_dir": pki, "oidc_client_id": HARVESTER, "oidc_client_secret": HARVESTER_SECRET,
        "catalogue_nodes": list(nodes), **kw})


def audit_counts(database_url: str) -> dict[str, int]:
    """The harvester's audit entries by decision (info: a dataset harvested; error: a node
    not harvested)."""
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            return dict(session.execute(
                select(CentralAuditEntry.decision, func.count())
                .where(CentralAuditEntry.actor == ACTOR)
                .group_by(CentralAuditEntry.decision)).all())
    except Exception:  # the first round has not migrated the database yet
        return {}
    finally:
        engine.dispose()


def node_actors(db) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {a for (a,) in conn.execute(
            "SELECT actor FROM audit_log WHERE action = 'catalogue.descriptor'")}


@pytest.fixture(scope="module")
def short_provider(tmp_path_factory):
    with oidc_provider(tmp_path_factory.mktemp("idp-short"),
                       access_token_ttl=TOKEN_SECONDS) as running:
        yield running


def test_the_scheduled_harvest_keeps_working_past_every_tokens_lifetime(
        short_provider, federation_files, tmp_path, postgres_url):
    """The centre's catalogue on PostgreSQL, as in production."""
    pki, dbs = federation_files
    node_settings = provider_settings(short_provider, tmp_path / "node")
    with serve_nodes(node_settings, pki, dbs) as nodes:
        settings = harvester_settings(short_provider, tmp_path, pki, nodes.urls.values(),
                                      database_url=postgres_url)
        source = machine_token(settings, None)  # what the central service's lifespan uses
        assert isinstance(source, ClientCredentials)
        first = source.token()
        database_url = settings.resolved_database_url
        rounds_wanted = 8

        async def schedule() -> None:
            task = asyncio.create_task(harvest_periodically(
                database_url, settings.catalogue_nodes, source, interval=1.0,
                tls=client_ssl_context(pki, "hub")))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                counts = audit_counts(database_url)
                if counts.get("error") or counts.get("info", 0) >= rounds_wanted * len(SITES):
                    break
            task.cancel()

        asyncio.run(schedule())
        counts = audit_counts(database_url)
        assert counts.get("error", 0) == 0, counts
        assert counts.get("info", 0) >= rounds_wanted * len(SITES)
        # The rounds spanned several token lifetimes, each token asked for anew: the first
        # one, which a static configuration would still be sending, is refused now.
        assert source.obtained >= 3
        with httpx.Client(verify=client_ssl_context(pki, "hub"), timeout=10) as hub:
            resp = hub.get(nodes.urls[SITES[0]] + "/api/v1/descriptors",
                           headers={"Authorization": f"Bearer {first}"})
        assert resp.status_code == 401
        assert resp.json()["detail"] == "token expired"
    # The nodes saw the central service's client, never a user.
    for site in SITES:
        assert node_actors(dbs[site]) == {f"{HARVESTER}@{short_provider.issuer}"}


def test_a_token_a_node_refuses_is_renewed_within_the_round(
        provider, federation_files, tmp_path):
    """The provider withdraws the key the harvester's cached token was signed with: the
    node refuses that token, the harvester gets a new one and the round still succeeds."""
    pki, dbs = federation_files
    node_settings = provider_settings(provider, tmp_path / "node",
                                      oidc_jwks_cache_seconds=2)
    with serve_nodes(node_settings, pki, dbs) as nodes:
        settings = harvester_settings(provider, tmp_path, pki, nodes.urls.values())
        source = machine_token(settings, None)
        tls = client_ssl_context(pki, "hub")
        assert harvest_round(settings.resolved_database_url, settings.catalogue_nodes,
                             source, tls) == 0
        assert source.obtained == 1
        provider.rotate(keep_old=False)
        time.sleep(1.2)  # the nodes' keys are due for a refresh (half their cache time)
        assert harvest_round(settings.resolved_database_url, settings.catalogue_nodes,
                             source, tls) == 0
        assert source.obtained == 2
    assert audit_counts(settings.resolved_database_url) == {"info": 2 * len(SITES)}


def test_a_provider_refusing_the_client_is_reported_per_node_and_audited(
        provider, federation_files, tmp_path):
    pki, dbs = federation_files
    with serve_nodes(provider_settings(provider, tmp_path / "node"), pki, dbs) as nodes:
        settings = harvester_settings(provider, tmp_path, pki, nodes.urls.values(),
                                      oidc_client_secret="not-the-secret")
        failed = harvest_round(settings.resolved_database_url, settings.catalogue_nodes,
                               machine_token(settings, None), client_ssl_context(pki, "hub"))
    assert failed == len(SITES)
    engine = make_engine(settings.resolved_database_url)
    with make_sessionmaker(engine)() as session:
        reasons = session.execute(select(CentralAuditEntry.reason).where(
            CentralAuditEntry.actor == ACTOR, CentralAuditEntry.decision == "error")).scalars()
        reasons = list(reasons)
    engine.dispose()
    assert len(reasons) == len(SITES)
    for reason in reasons:
        assert f"the identity provider refused client {HARVESTER!r} a token" in reason
        assert "not-the-secret" not in reason


def test_an_unreachable_provider_is_a_clear_error(tmp_path):
    source = ClientCredentials(issuer="https://127.0.0.1:9", client_id=HARVESTER,
                               client_secret="x")
    with pytest.raises(TokenUnavailable, match="unreachable for client 'spe-central'"):
        source.token()


def _client_environment(monkeypatch, tmp_path, provider, pki, **changes) -> None:
    monkeypatch.chdir(tmp_path)
    for key in [k for k in __import__("os").environ if k.startswith("SPE_")]:
        monkeypatch.delenv(key)
    for key, value in {
            "SPE_ENVIRONMENT": "test", "SPE_DATA_DIR": str(tmp_path),
            "SPE_DATABASE_URL": f"sqlite:///{tmp_path / 'central.db'}",
            "SPE_OIDC_ISSUER": provider.issuer, "SPE_OIDC_JWKS_URL": provider.jwks_url,
            "SPE_OIDC_CA_FILE": str(provider.ca), "SPE_PKI_DIR": str(pki),
            "SPE_OIDC_CLIENT_ID": HARVESTER, "SPE_OIDC_CLIENT_SECRET": HARVESTER_SECRET,
            **changes}.items():
        monkeypatch.setenv(key, value)


def test_spe_identity_check_walks_the_path_and_names_the_step_that_fails(
        provider, federation_files, tmp_path, monkeypatch):
    pki, _ = federation_files
    _client_environment(monkeypatch, tmp_path, provider, pki)
    result = CliRunner().invoke(cli, ["identity", "check"])
    assert result.exit_code == 0, result.output
    assert f"a token for {HARVESTER}@{provider.issuer}, roles hdab" in result.output
    _client_environment(monkeypatch, tmp_path, provider, pki,
                        SPE_OIDC_CLIENT_SECRET="not-the-secret")
    result = CliRunner().invoke(cli, ["identity", "check"])
    assert result.exit_code == 1
    assert f"refused client '{HARVESTER}' a token" in result.output
    assert "Traceback" not in result.output
    _client_environment(monkeypatch, tmp_path, provider, pki,
                        SPE_OIDC_JWKS_URL=provider.issuer + "/no-such-keys")
    result = CliRunner().invoke(cli, ["identity", "check"])
    assert result.exit_code == 1
    assert "keys could not be fetched" in result.output


def test_spe_catalogue_harvest_uses_the_central_services_client(
        provider, federation_files, tmp_path, monkeypatch):
    """`spe catalogue harvest` by hand, configured as the central service is: no --token,
    the client's credentials from the environment."""
    pki, dbs = federation_files
    with serve_nodes(provider_settings(provider, tmp_path / "node"), pki, dbs) as nodes:
        settings = harvester_settings(provider, tmp_path, pki)
        monkeypatch.chdir(tmp_path)
        for key, value in {
                "SPE_ENVIRONMENT": "test", "SPE_DATA_DIR": str(tmp_path),
                "SPE_DATABASE_URL": settings.resolved_database_url,
                "SPE_OIDC_ISSUER": provider.issuer, "SPE_OIDC_JWKS_URL": provider.jwks_url,
                "SPE_OIDC_CA_FILE": str(provider.ca), "SPE_PKI_DIR": str(pki),
                "SPE_OIDC_CLIENT_ID": HARVESTER,
                "SPE_OIDC_CLIENT_SECRET": HARVESTER_SECRET}.items():
            monkeypatch.setenv(key, value)
        args = ["catalogue", "harvest"]
        for url in nodes.urls.values():
            args += ["--node", url]
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("created") == len(SITES)


def test_the_entitlement_map_knows_the_roles_and_refuses_others(monkeypatch, tmp_path):
    from typing import get_args

    from spe.identity import ROLES
    from spe.settings import Role, Settings

    assert set(get_args(Role)) == set(ROLES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPE_OIDC_ENTITLEMENT_ROLES", '{"urn:x:group:g#idp": "superuser"}')
    with pytest.raises(ValueError, match="oidc_entitlement_roles"):
        Settings()


def test_the_harvester_may_authenticate_with_the_hubs_key_instead_of_a_secret(
        federation_files, tmp_path_factory, tmp_path):
    """private_key_jwt: the provider holds only the public key of the hub's hub.key; an
    assertion signed by any other key gets no token."""
    pki, dbs = federation_files
    # What the operator registers for the client: `spe identity client-jwks`'s output.
    printed = CliRunner().invoke(cli, ["identity", "client-jwks", "--key", str(pki / "hub.key")])
    assert printed.exit_code == 0, printed.output
    jwks = json.loads(printed.output)
    assert set(jwks["keys"][0]) >= {"kty", "crv", "x", "y", "kid"}
    assert "d" not in jwks["keys"][0]  # the public key only
    client = {"client_id": "spe-central-key", "token_endpoint_auth_method": "private_key_jwt",
              "jwks": jwks,
              "grant_types": ["client_credentials"], "response_types": [],
              "redirect_uris": [], "roles": ["hdab"]}
    with oidc_provider(tmp_path_factory.mktemp("idp-keys"), extra_clients=[client]) as idp, \
            serve_nodes(provider_settings(idp, tmp_path / "node"), pki, dbs) as nodes:
        settings = provider_settings(idp, tmp_path, pki_dir=pki,
                                     oidc_client_id="spe-central-key",
                                     oidc_client_key_file=pki / "hub.key",
                                     catalogue_nodes=list(nodes.urls.values()))
        source = machine_token(settings, None)
        assert harvest_round(settings.resolved_database_url, settings.catalogue_nodes,
                             source, client_ssl_context(pki, "hub")) == 0
        assert node_actors(dbs[SITES[0]]) >= {f"spe-central-key@{idp.issuer}"}
        # A node's key (site-a.key, not registered for the client) is refused.
        wrong = ClientCredentials(issuer=idp.issuer, client_id="spe-central-key",
                                  client_key=PrivateKeyJwt(pki / "site-a.key"),
                                  verify=ssl.create_default_context(cafile=str(idp.ca)))
        with pytest.raises(TokenUnavailable, match="refused client 'spe-central-key'"):
            wrong.token()


def test_an_unusable_client_key_file_is_refused_when_the_settings_load(tmp_path):
    not_a_key = tmp_path / "client.key"
    not_a_key.write_text("-----BEGIN NOTHING-----\n")
    with pytest.raises(InsecureConfiguration, match="not an unencrypted PEM private key"):
        Settings(oidc_client_key_file=not_a_key)
    with pytest.raises(InsecureConfiguration, match="cannot read"):
        Settings(oidc_client_key_file=tmp_path / "missing.key")


def test_production_refuses_a_client_key_others_may_read(federation_files, tmp_path):
    import secrets
    import shutil

    pki, _ = federation_files
    key = tmp_path / "client.key"
    shutil.copy(pki / "hub.key", key)
    production = {"environment": "production", "secret_key": secrets.token_urlsafe(48),
                  "database_url": "postgresql://spe@db.example/spe",
                  "oidc_issuer": "https://idp.example/realms/spe",
                  "oidc_jwks_url": "https://idp.example/realms/spe/certs",
                  "oidc_client_id": "spe-central", "oidc_client_key_file": key}
    key.chmod(0o600)
    assert Settings(**production).oidc_client_key_file == key
    key.chmod(0o644)
    with pytest.raises(InsecureConfiguration, match="may be read by others than its owner"):
        Settings(**production)
