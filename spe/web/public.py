"""The routes that pass no door, in one place: everything else of the central app and of a
node must pass one (spe.web.access at the centre, gateway/node/trust at a node), which
tests/test_doors.py checks by walking both apps' routes.

Public here means readable without a token: health, the catalogue (EHDS Art. 77), the
Beacon's own description, the web pages (static shells; their data comes from the API with
the user's token), the demo identity provider's keys (development only) and FastAPI's API
documentation (off in production). A node's only public routes are /health, /ready and
/metrics (its own bearer token, spe/observability), and even those are reached only with
the hub's or the operator's certificate (spe.pki pins them).
"""

from __future__ import annotations

DOCS = frozenset({"GET /openapi.json", "GET /docs", "GET /redoc",
                  # Swagger UI's and ReDoc's assets, and the script that starts them.
                  "MOUNT /static/docs", "MOUNT /static/docs-page"})

PUBLIC: dict[str, frozenset[str]] = {
    "central": DOCS | {
        "GET /health", "GET /ready",
        # Prometheus's scrape: its own bearer token (SPE_METRICS_TOKEN), not a user's.
        "GET /metrics",
        # The catalogue's reads (its curation passes the door).
        "GET /api/v1/catalogue",
        "GET /api/v1/catalogue/search",
        "GET /api/v1/catalogue/datasets/{identifier:path}",
        # The Beacon v2 API's self-description (its queries pass the door).
        "GET /api/v1/beacon/", "GET /api/v1/beacon/info",
        "GET /api/v1/beacon/service-info", "GET /api/v1/beacon/map",
        "GET /api/v1/beacon/configuration", "GET /api/v1/beacon/entry_types",
        "GET /api/v1/beacon/filtering_terms",
        # The GA4GH TES API's service-info (its task routes pass the door).
        "GET /ga4gh/tes/v1/service-info",
        # Web pages and their static files.
        "GET /", "GET /catalogue", "GET /catalogue/datasets/{identifier:path}",
        "GET /query", "GET /jobs", "GET /fed", "GET /code-reviews",
        "GET /permits", "GET /permits/new", "GET /permits/edit/{pid}",
        "GET /permits/view/{pid}",
        "GET /airlock",
        "MOUNT /static/common", "MOUNT /catalogue/static", "MOUNT /query/static",
        "MOUNT /permits/static", "MOUNT /airlock/static",
        # The demo identity provider (development only: absent with SPE_OIDC_JWKS_URL).
        "GET /.well-known/openid-configuration", "GET /.well-known/jwks.json",
    },
    "node": DOCS | {"GET /health", "GET /ready", "GET /metrics"},
}

__all__ = ["DOCS", "PUBLIC"]
