"""API documentation (/docs, /redoc, /openapi.json) is served in development, not in
production, at the centre and at a node: asked over HTTP as anyone would.

Measured before: a production service served all three to anyone.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from spe.app import create_central_app
from spe.pki import init_pki
from spe.settings import Settings

DOCS = ("/docs", "/redoc", "/openapi.json")
IDP = "https://idp.example/realms/spe"
# Production connects to nothing to answer these: the URL only has to be PostgreSQL's.
POSTGRES = "postgresql://spe@127.0.0.1:1/spe"


def _settings(environment: str, tmp_path: Path) -> Settings:
    pki = tmp_path / "pki"
    if not pki.exists():
        init_pki(pki, nodes=["site-a"])
    if environment == "production":
        return Settings(environment="production", data_dir=tmp_path,
                        secret_key=secrets.token_urlsafe(48), database_url=POSTGRES,
                        oidc_issuer=IDP, oidc_jwks_url=f"{IDP}/certs", pki_dir=pki)
    return Settings(environment="development", data_dir=tmp_path, pki_dir=pki,
                    database_url=f"sqlite:///{tmp_path / 'central.db'}")


def _app(service: str, settings: Settings):
    if service == "central":
        return create_central_app(settings)
    return create_node_app(NodeConfig("site-a", "Site A", settings.resolved_database_url),
                           settings.model_copy(update={"node_id": "site-a"}))


@pytest.mark.parametrize("service", ["central", "node"])
def test_production_serves_no_api_documentation(service: str, tmp_path: Path) -> None:
    client = TestClient(_app(service, _settings("production", tmp_path)))
    for path in DOCS:
        assert client.get(path).status_code == 404, path


@pytest.mark.parametrize("service", ["central", "node"])
def test_development_serves_the_api_documentation(service: str, tmp_path: Path) -> None:
    client = TestClient(_app(service, _settings("development", tmp_path)))
    for path in DOCS:
        assert client.get(path).status_code == 200, path
    assert client.get("/openapi.json").json()["paths"]
