"""API documentation (/docs, /redoc, /openapi.json): served in development and test, not
in production, where it would map every route and schema for anyone who asks."""

from __future__ import annotations

from typing import Any

from spe.settings import Settings


def api_docs_options(settings: Settings) -> dict[str, Any]:
    """FastAPI's arguments for the documentation routes of an app run with `settings`."""
    if settings.environment == "production":
        return {"docs_url": None, "redoc_url": None, "openapi_url": None}
    return {}
