"""API documentation (/docs, /redoc, /openapi.json) is served in development, not in
production, at the centre and at a node: asked over HTTP as anyone would.

Measured before: a production service served all three to anyone.
"""

from __future__ import annotations

import re
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


@pytest.mark.parametrize("service", ["central", "node"])
def test_the_docs_pages_load_their_assets_from_this_service(service: str,
                                                           tmp_path: Path) -> None:
    """FastAPI's own pages loaded Swagger UI and ReDoc from a CDN with an inline script:
    blank offline and under the pages' CSP. Ours name only this service's files."""
    client = TestClient(_app(service, _settings("development", tmp_path)))
    for path, bundle in (("/docs", "/static/docs/swagger-ui-bundle.js"),
                         ("/redoc", "/static/docs/redoc.standalone.js")):
        page = client.get(path)
        assert "script-src 'self'" in page.headers["content-security-policy"]
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert bundle in sources
        assert [s for s in sources if "://" in s] == [], "an asset from another host"
        assert "<script>" not in page.text
        for source in sources:
            if source.startswith("/static/"):
                assert client.get(source).status_code == 200, source
        # The shared navigation links the central pages; a node has none to link.
        assert ('data-nav="catalogue"' in page.text) == (service == "central")


def test_production_home_page_links_no_api_documentation(tmp_path: Path) -> None:
    client = TestClient(_app("central", _settings("production", tmp_path)))
    home = client.get("/")
    assert home.status_code == 200
    assert 'data-nav="catalogue"' in home.text
    assert "/docs" not in home.text
    assert "/redoc" not in home.text
