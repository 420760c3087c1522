"""The identity tests' real parts: the local OpenID Connect provider (tests/oidc_provider.py),
the central service built on it, and nodes under uvicorn with mutual TLS whose tokens come
from it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from gateway.node.service import run_sync
from spe.app import create_central_app
from spe.db.migrate import upgrade
from spe.pki import init_pki, server_ssl_options
from spe.settings import Settings
from spe.synth import generate
from tests.oidc_provider import AUDIENCE, OidcProvider, oidc_provider
from tests.servers import bind, serve

SITES = ("site-a", "site-b")


@pytest.fixture(scope="module")
def provider(tmp_path_factory) -> Iterator[OidcProvider]:
    """The provider, its tokens living five minutes."""
    with oidc_provider(tmp_path_factory.mktemp("idp")) as running:
        yield running


def provider_settings(provider: OidcProvider, data_dir: Path, **kw) -> Settings:
    """A service trusting `provider` (its CA, its keys), with no clock skew allowed (tokens
    here live seconds) and the keys' refetch limited to twice a second."""
    return Settings(**{
        "environment": "test", "data_dir": data_dir,
        "database_url": f"sqlite:///{data_dir / 'central.db'}",
        "oidc_issuer": provider.issuer, "oidc_audience": AUDIENCE,
        "oidc_jwks_url": provider.jwks_url, "oidc_ca_file": provider.ca,
        "oidc_clock_skew_seconds": 0, "oidc_jwks_min_refresh_seconds": 0.5, **kw})


@contextmanager
def central_service(settings: Settings) -> Iterator[TestClient]:
    upgrade(settings.resolved_database_url, "central")
    with TestClient(create_central_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def federation_files(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """The federation's PKI and two small indexed institutions (their SQLite indexes)."""
    root = tmp_path_factory.mktemp("identity-federation")
    pki = root / "pki"
    init_pki(pki, nodes=list(SITES))
    generate(root / "synth", institutions=len(SITES), patients=15, seed=5)
    dbs = {}
    for site in SITES:
        dbs[site] = root / f"{site}.db"
        run_sync(f"sqlite:///{dbs[site]}", dicom=f"folder:{root / 'synth' / site / 'dicom'}",
                 fhir=f"ndjson:{root / 'synth' / site / 'fhir'}")
    return pki, dbs


@dataclass
class Nodes:
    pki: Path
    urls: dict[str, str]  # site -> https URL (mutual TLS, the hub's certificate)


@contextmanager
def serve_nodes(settings: Settings, pki: Path, dbs: dict[str, Path]) -> Iterator[Nodes]:
    """The institutions' nodes under uvicorn with mutual TLS, verifying tokens by
    `settings` (the provider's) and admitting the hub's certificate of `pki`."""
    settings = settings.model_copy(update={"pki_dir": pki})
    with ExitStack() as stack:
        urls = {}
        for site in SITES:
            sock = bind()
            urls[site] = f"https://127.0.0.1:{sock.getsockname()[1]}"
            app = create_node_app(NodeConfig(site, site, f"sqlite:///{dbs[site]}"), settings)
            stack.enter_context(serve(app, sock, lifespan="off",
                                      **server_ssl_options(pki, site)))
        yield Nodes(pki, urls)
