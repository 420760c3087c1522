"""`spe query QUERY.json`: a federated query through the hub, printed per node and in
total (or as the hub's JSON)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from pydantic import ValidationError
from rich.table import Table

from spe.cli.http import bearer, hub_url, invalid, read_json, request
from spe.cli.progress import console

Granularity = Literal["boolean", "count", "stratified"]


def _read(path: str) -> dict:
    return read_json(path, "a query is a JSON object with `where` (and `answer`)")


def _validated(data: dict, granularity: str | None, by: list[str]) -> dict:
    from spe.wire.query import Query

    if granularity or by:
        answer = dict(data.get("answer") or {})
        answer["kind"] = granularity or ("stratified" if by else answer.get("kind", "count"))
        if by:
            answer["by"] = by
        data = {**data, "answer": answer}
    try:
        return Query.model_validate(data).model_dump(mode="json")
    except ValidationError as exc:
        raise invalid("the query", exc) from None


def _count(cell: dict | None, threshold: int | None = None) -> str:
    """A count as a researcher reads it: "≈123 (±5)" when perturbed, "suppressed (< 10)"."""
    if cell is None:
        return "-"
    if cell.get("suppressed"):
        return f"suppressed (< {threshold})" if threshold else "suppressed"
    if cell.get("perturbed"):
        bound = cell.get("max_noise")
        return f"≈{cell.get('value')}" + (f" (±{bound})" if bound is not None else "")
    return str(cell.get("value"))


def print_answer(body: dict) -> None:
    table = Table(title=f"{body['kind']} ({body['tier']} tier)")
    for column in ("node", "status", "ms", "answer", "notes"):
        table.add_column(column, justify="right" if column == "ms" else "left")
    for n in body["nodes"]:
        a = n.get("answer") or {}
        if body["kind"] == "boolean" and a:
            value = "yes" if a.get("exists") else f"suppressed (< {a.get('threshold')})"
        else:
            value = _count(a.get("total"), a.get("threshold")) if a else n.get("reason") or ""
        table.add_row(n["node_id"], n["status"], f"{n['ms']:.0f}", value,
                      "; ".join(a.get("notes", [])) if a else "")
    if body["kind"] == "boolean":
        total = "yes" if body.get("exists") else "no site could say yes"
    else:
        total = _count(body.get("total")) if body.get("total") else "none"
    table.add_row("[bold]all sites[/bold]",
                  f"{body['sites_answering']} answering (min {body['min_sites']})", "", total,
                  "; ".join(body.get("notes", [])))
    console.print(table)
    if body.get("cells"):
        cells = Table(title="cells (all sites)")
        keys = sorted({k for c in body["cells"] for k in c["key"]})
        for k in [*keys, "count", "why"]:
            cells.add_column(k)
        for c in body["cells"]:
            # The reason only where it says more than the totals' notes: suppressed cells
            # and sums that leave a site out.
            why = c.get("reason") or "" if c.get("suppressed") or "leaves out" in (
                c.get("reason") or "") else ""
            cells.add_row(*(c["key"].get(k, "") for k in keys), _count(c), why)
        console.print(cells)


def query(
    query_file: Annotated[str, typer.Argument(metavar="QUERY.json",
                                              help="The query (`-` for standard input)")],
    granularity: Annotated[Granularity | None, typer.Option(
        help="The answer asked for (overrides the file's `answer.kind`)")] = None,
    by: Annotated[list[str], typer.Option(
        help="Stratify by sex, age_band, modality or site (at most two)")] = [],  # noqa: B006
    hub: Annotated[str | None, typer.Option(
        help="The central service's URL (default: SPE_HUB_URL, else SPE_OIDC_ISSUER)")] = None,
    token: Annotated[str | None, typer.Option(
        help="A researcher's bearer token (default: SPE_TOKEN)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hub's JSON")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the hub")] = 60.0,
) -> None:
    """Ask every institution through the hub; print each node's answer and the total."""
    body = _validated(_read(query_file), granularity, by)
    url = hub_url(hub)
    resp = request("POST", url, "/api/v1/query", bearer(token), json=body, timeout=timeout)
    if as_json:
        console.print_json(resp.text)
    else:
        print_answer(resp.json())
