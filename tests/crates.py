"""roc-validator (https://github.com/crs4/rocrate-validator), the RO-Crate community's
validator, run on a crate folder as its users run it, with one difference: these machines
have no network, so the RO-Crate 1.3 JSON-LD context it fetches from w3id.org is served
from the copy the `rocrate` library ships (the same document)."""

from __future__ import annotations

from pathlib import Path

import requests
import rocrate
from rocrate_validator import models, services
from rocrate_validator.utils.http import HttpRequester

CONTEXT_URL = "https://w3id.org/ro/crate/1.3/context"
CONTEXT = Path(rocrate.__file__).parent / "data" / "ro-crate.jsonld"


class _LocalContext(requests.adapters.BaseAdapter):
    def send(self, request, **_):
        response = requests.Response()
        response.status_code, response.url, response.request = 200, request.url, request
        response._content = CONTEXT.read_bytes()
        response.headers["Content-Type"] = "application/ld+json"
        return response

    def close(self) -> None:
        pass


def validate(crate_dir: Path, profile: str = "ro-crate-1.3",
             severity: str = "REQUIRED") -> list[str]:
    """The issues roc-validator finds at `severity` or above; [] when the crate passes."""
    settings = models.ValidationSettings(rocrate_uri=str(crate_dir), no_cache=True,
                                         profile_identifier=profile,
                                         requirement_severity=severity)
    # The settings rebuild the requester's session; the context is mounted after.
    HttpRequester().session.mount(CONTEXT_URL, _LocalContext())
    result = services.validate(settings)
    return [] if result.passed() else [f"{i.severity.name}: {i.message}"
                                       for i in result.get_issues()]
