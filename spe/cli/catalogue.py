"""`spe catalogue search`: the public catalogue searched through spe.client, as the
/catalogue page searches it (no token: the catalogue is public). Results on standard
output; errors on standard error, exit 2 for bad input, 1 for a refusal or no hub."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from spe.cli.http import calling, hub_url
from spe.client.api import HubApi
from spe.client.transport import Hub


def _facet(help_text: str):
    return Annotated[list[str] | None, typer.Option(help=help_text + "; repeat to OR")]


def search(
    q: Annotated[str, typer.Argument(metavar="Q", help="Words to look for (ANDed, the "
                                                      "last one a prefix)")] = "",
    modality: _facet("A DICOM modality (MR, CT, ...)") = None,
    body_part: _facet("A body part examined (HEAD, CHEST, ...)") = None,
    institution: _facet("A holding institution (site-a, ...)") = None,
    health_category: _facet("A health category") = None,
    condition: _facet("An ICD-10 category (C71, ...)") = None,
    access_rights: _facet("PUBLIC, RESTRICTED or NON_PUBLIC") = None,
    age_band: _facet("0-17, 18-39, 40-64 or 65+") = None,
    age_min: Annotated[int | None, typer.Option(help="Overlapping ages from")] = None,
    age_max: Annotated[int | None, typer.Option(help="Overlapping ages up to")] = None,
    sort: Annotated[str, typer.Option(help="relevance, title or individuals")] = "relevance",
    page: Annotated[int, typer.Option(help="The page (of --size hits)")] = 1,
    size: Annotated[int, typer.Option(help="Hits per page (at most 100)")] = 20,
    hub: Annotated[str | None, typer.Option(
        help="The central service's URL (default: SPE_HUB_URL, else SPE_OIDC_ISSUER)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the hub")] = 60.0,
) -> None:
    """Search the dataset catalogue: each hit's id, title, institution, individuals,
    modalities and quality label, and how many matched. The API refuses a bad filter
    naming it (exit 1)."""
    given = {"q": q, "modality": modality, "body_part": body_part,
             "institution": institution, "health_category": health_category,
             "condition": condition, "access_rights": access_rights, "age_band": age_band,
             "age_min": age_min, "age_max": age_max, "sort": sort, "page": page,
             "size": size}
    params = {k: v for k, v in given.items() if v not in (None, [], "")}
    with calling():
        found = HubApi(Hub(hub_url(hub), None, timeout=timeout)).catalogue_search(params)
    if as_json:
        typer.echo(json.dumps(found, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{found['total']} dataset(s), page {found['page']} of "
                        f"{max(found['pages'], 1)}")
    for column in ("dataset", "title", "institution", "individuals", "modalities",
                   "quality"):
        table.add_column(column, justify="right" if column == "individuals" else "left")
    for hit in found["results"]:
        individuals = hit.get("number_of_unique_individuals")
        table.add_row(hit["identifier"], hit["title"], hit["node_name"] or hit["node_id"],
                      "suppressed" if individuals is None else str(individuals),
                      ", ".join(hit.get("modalities") or []),
                      (hit.get("quality") or {}).get("label") or "")
    Console(highlight=False).print(table)
