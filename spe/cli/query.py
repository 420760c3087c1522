"""`spe query QUERY.json`: a federated query through the hub, printed per node and in
total (or as the hub's JSON): counts, and the federated statistics (a table per kind)."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from spe.cli.http import api, calling, read_json
from spe.cli.progress import console as _stderr
from spe.client.api import validated_query

Granularity = Literal["boolean", "count", "stratified", "mean", "quantiles", "histogram",
                      "table", "correlation", "linear", "logistic", "survival"]
STATISTICS = {"mean", "quantiles", "histogram", "table", "correlation", "linear",
              "logistic", "survival"}


def _read(path: str) -> dict:
    return read_json(path, "a query is a JSON object with `where` (and `answer`)")


def _validated(data: dict, granularity: str | None, by: list[str]) -> dict:
    with calling():
        return validated_query(data, granularity, by)


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


def _num(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}" if abs(x) < 1e-3 or abs(x) >= 1e6 else f"{x:.{digits}f}"


def _shown(cell: dict) -> str:
    """A count cell of a histogram or table: suppressed, perturbed (± its SD) or exact."""
    if cell.get("suppressed"):
        return "suppressed"
    value = str(cell.get("value"))
    if cell.get("perturbed"):
        return f"{value} ±{cell['sd']:g}" if cell.get("sd") else f"{value} (perturbed)"
    return value


def _result_tables(r: dict) -> list[Table]:
    kind = r["kind"]
    flag = " (perturbed)" if r.get("perturbed") else ""
    tables = []
    if kind == "mean":
        t = Table(title=f"mean of {r['variable']}{flag}")
        for c in ("n", "mean", "sd", "95% CI"):
            t.add_column(c, justify="right")
        ci = r.get("ci") or [None, None]
        t.add_row(_num(r["n"]), _num(r["mean"]), _num(r["sd"]),
                  f"{_num(ci[0])} to {_num(ci[1])}")
        tables.append(t)
    elif kind == "quantiles":
        t = Table(title=f"quantiles of {r['variable']} (n = {r['n']}){flag}")
        t.add_column("p", justify="right")
        t.add_column("value", justify="right")
        for q in r["quantiles"]:
            t.add_row(f"{q['p']:g}", _num(q["value"]))
        tables.append(t)
    elif kind == "histogram":
        t = Table(title=f"histogram of {r['variable']}{flag}")
        for c in ("from", "to", "count", "why"):
            t.add_column(c, justify="left" if c == "why" else "right")
        edges = r["edges"]
        for i, c in enumerate(r["counts"]):
            t.add_row(_num(edges[i]), _num(edges[i + 1]), _shown(c), c.get("reason") or "")
        tables.append(t)
    elif kind == "table":
        t = Table(title=f"{r['rows']} by {r['cols']}{flag}")
        t.add_column(r["rows"])
        for level in r["col_levels"]:
            t.add_column(str(level), justify="right")
        cells = {(c["key"]["row"], c["key"]["col"]): c for c in r["cells"]}
        for row in r["row_levels"]:
            t.add_row(str(row), *(_shown(cells[(row, col)]) if (row, col) in cells else "-"
                                  for col in r["col_levels"]))
        tables.append(t)
        why = sorted({c["reason"] for c in r["cells"] if c.get("reason")})
        if why:
            t.caption = "; ".join(why)
    elif kind == "correlation":
        t = Table(title=f"correlation (n = {r['n']}){flag}")
        t.add_column("")
        for name in r["variables"]:
            t.add_column(name, justify="right")
        for name, row in zip(r["variables"], r["matrix"], strict=False):
            t.add_row(name, *(_num(v, 3) for v in row))
        tables.append(t)
    elif kind in ("linear", "logistic"):
        what = "linear regression" if kind == "linear" else "logistic regression (log odds)"
        t = Table(title=f"{what} of {r['outcome']} (n = {r['n']}){flag}")
        for c in ("term", "estimate", "se", "95% CI", "p"):
            t.add_column(c, justify="left" if c == "term" else "right")
        for c in r.get("coefficients", []):
            t.add_row(c["name"], _num(c["estimate"]), _num(c["se"]),
                      f"{_num(c['ci_low'])} to {_num(c['ci_high'])}", _num(c["p"], 3))
        extra = {k: r[k] for k in ("r2", "sigma", "deviance", "iterations", "converged")
                 if k in r}
        t.caption = ", ".join(f"{k} {_num(v) if not isinstance(v, bool) else v}"
                              for k, v in extra.items())
        tables.append(t)
    elif kind == "survival":
        t = Table(title=f"Kaplan-Meier survival, time in {r['unit']}s (n = {r['n']}){flag}")
        for c in ("t", "at risk", "events", "survival", "95% CI"):
            t.add_column(c, justify="right")
        for s in r["steps"]:
            t.add_row(_num(s["t"]), str(s["at_risk"]), str(s["events"]),
                      _num(s["survival"]), f"{_num(s['ci_low'])} to {_num(s['ci_high'])}")
        tables.append(t)
    return tables


def print_statistic(body: dict, out: Console | None = None) -> None:
    console = out or _stderr
    nodes = Table(title=f"{body['kind']} ({body['tier']} tier)")
    for column in ("node", "status", "ms", "n", "notes"):
        nodes.add_column(column, justify="right" if column == "ms" else "left")
    for n in body["nodes"]:
        a = n.get("answer") or {}
        nodes.add_row(n["node_id"], n["status"], f"{n['ms']:.0f}",
                      _count(a.get("total"), a.get("threshold")) if a else "-",
                      "; ".join(a.get("notes", [])) if a else n.get("reason") or "")
    nodes.add_row("[bold]pooled[/bold]",
                  f"{body['sites_answering']} contributing (min {body['min_sites']})", "",
                  _num((body.get("result") or {}).get("n")), "")
    console.print(nodes)
    result = body.get("result")
    if result is None:
        console.print("[bold]no pooled result[/bold]")
    else:
        for t in _result_tables(result):
            console.print(t)
    for note in body.get("notes", []):
        console.print(f"note: {note}")


def print_answer(body: dict, out: Console | None = None) -> None:
    """The answer as tables on `out` (`spe query`: standard output)."""
    console = out or _stderr
    if body["kind"] in STATISTICS:
        print_statistic(body, console)
        return
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
    permit: Annotated[str | None, typer.Option(
        help="Ask in the permit tier under this permit (exact answers)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hub's JSON")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the hub")] = 60.0,
) -> None:
    """Ask every institution through the hub; print each node's answer and the total, or
    the pooled statistic (mean, quantiles, histogram, table, correlation, linear,
    logistic, survival: the file's `answer`)."""
    body = _validated(_read(query_file), granularity, by)
    with calling():
        answer = api(hub, token).query(body, permit=permit, timeout=timeout)
    # The results on standard output (`spe query q.json > answer.txt`); errors on stderr.
    if as_json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        print_answer(answer, Console(highlight=False))
