"""The hub's JSON as pandas DataFrames, for a notebook. Each frame keeps the whole answer
in `df.attrs["answer"]` (the notes, the tier, what a frame cannot hold)."""

from __future__ import annotations

from typing import Any

import pandas as pd

#: The row of a query's frame that holds the sum over the sites.
ALL_SITES = "all sites"

_CELL = ("value", "suppressed", "perturbed", "max_noise", "sd", "reason")


def _with(df: pd.DataFrame, answer: Any, **attrs: Any) -> pd.DataFrame:
    df.attrs["answer"] = answer
    df.attrs.update(attrs)
    return df


def _cell(cell: dict | None) -> dict:
    cell = cell or {}
    row = {k: cell.get(k) for k in _CELL}
    row["count"] = row.pop("value")
    row["suppressed"] = bool(row["suppressed"])
    row["perturbed"] = bool(row["perturbed"])
    return row


def count_frame(body: dict) -> pd.DataFrame:
    """A count, boolean or stratified answer: one row per node and one for all sites
    (`node`), with each stratum's cells as rows of their own (a column per stratum;
    empty on the totals' rows). `count` is None where suppressed, never 0."""
    strata = sorted({k for c in body.get("cells") or [] for k in c["key"]}
                    | {k for n in body["nodes"] for c in (n.get("answer") or {}).get(
                        "cells") or [] for k in c["key"]})
    rows = []
    for n in body["nodes"]:
        a = n.get("answer") or {}
        base = {"node": n["node_id"], "status": n["status"], "ms": n["ms"],
                "exists": a.get("exists"), "threshold": a.get("threshold"),
                "notes": "; ".join(a.get("notes") or []) or n.get("reason") or ""}
        rows.append({**base, **dict.fromkeys(strata), **_cell(a.get("total"))})
        for c in a.get("cells") or []:
            rows.append({**base, **{k: c["key"].get(k) for k in strata}, **_cell(c)})
    pooled = {"node": ALL_SITES, "status": f"{body['sites_answering']} answering",
              "ms": None, "exists": body.get("exists"), "threshold": None,
              "notes": "; ".join(body.get("notes") or [])}
    rows.append({**pooled, **dict.fromkeys(strata), **_cell(body.get("total"))})
    for c in body.get("cells") or []:
        rows.append({**pooled, **{k: c["key"].get(k) for k in strata}, **_cell(c)})
    columns = ["node", *strata, "count", "suppressed", "perturbed", "max_noise", "sd",
               "reason", "status", "ms", "exists", "threshold", "notes"]
    df = pd.DataFrame(rows, columns=columns)
    df["count"] = df["count"].astype("Int64")  # None stays missing, never 0
    return _with(df, body, kind=body["kind"], tier=body["tier"])


def nodes_frame(body: dict) -> pd.DataFrame:
    """A statistic's nodes: status, time, the n each showed, and why not (notes)."""
    rows = []
    for n in body["nodes"]:
        a = n.get("answer") or {}
        rows.append({"node": n["node_id"], "status": n["status"], "ms": n["ms"],
                     "n": _cell(a.get("total"))["count"] if a else None,
                     "notes": "; ".join(a.get("notes") or []) if a else n.get("reason") or ""})
    df = pd.DataFrame(rows, columns=["node", "status", "ms", "n", "notes"])
    df["n"] = df["n"].astype("Int64")
    return df


def _count_cells(cells: list[dict]) -> list[dict]:
    return [_cell(c) for c in cells]


def statistic_frame(body: dict) -> pd.DataFrame:
    """The pooled statistic as a table of its kind (empty when there is none: too few
    sites; `attrs["notes"]` says why), the nodes in `attrs["nodes"]`."""
    r = body.get("result")
    kind = body["kind"]
    df = pd.DataFrame() if r is None else _result(kind, r)
    return _with(df, body, kind=kind, tier=body["tier"], nodes=nodes_frame(body),
                 notes=list(body.get("notes") or []) + list((r or {}).get("notes") or []),
                 n=(r or {}).get("n"), perturbed=(r or {}).get("perturbed"))


def _result(kind: str, r: dict) -> pd.DataFrame:
    if kind == "mean":
        ci = r.get("ci") or [None, None]
        return pd.DataFrame([{"variable": _name(r.get("variable")), "n": r["n"],
                              "mean": r["mean"], "sd": r["sd"], "ci_low": ci[0],
                              "ci_high": ci[1]}])
    if kind == "quantiles":
        return pd.DataFrame(r["quantiles"], columns=["p", "value"])
    if kind == "histogram":
        edges = r["edges"]
        rows = [{"from": edges[i], "to": edges[i + 1], **c}
                for i, c in enumerate(_count_cells(r["counts"]))]
        df = pd.DataFrame(rows)
        df["count"] = df["count"].astype("Int64")
        return df
    if kind == "table":
        rows = [{r["rows"]: c["key"]["row"], r["cols"]: c["key"]["col"], **_cell(c)}
                for c in r["cells"]]
        df = pd.DataFrame(rows)
        df["count"] = df["count"].astype("Int64")
        return df
    if kind == "correlation":
        return pd.DataFrame(r["matrix"], index=r["variables"], columns=r["variables"])
    if kind in ("linear", "logistic"):
        return pd.DataFrame(r.get("coefficients") or []).set_index("name")
    if kind == "survival":
        return pd.DataFrame(r["steps"])
    return pd.DataFrame([r])


def _name(variable: Any) -> str:
    return variable if isinstance(variable, str) else str(variable or "")


def datasets_frame(rows: list[dict]) -> pd.DataFrame:
    """Catalogue datasets (or search hits), one row each, indexed by identifier."""
    df = pd.DataFrame(rows)
    if "quality" in df.columns:  # a search hit's summary: its label is what one sorts by
        df["quality"] = [q.get("label") if isinstance(q, dict) else q for q in df["quality"]]
    if df.empty:
        return pd.DataFrame(columns=["identifier", "title", "node_id"]).set_index("identifier")
    return df.set_index("identifier")


def permits_frame(rows: list[dict]) -> pd.DataFrame:
    columns = ["id", "status", "title", "applicant", "institutions", "waiting_for",
               "datasets", "start_date", "end_date", "updated_at"]
    out = []
    for p in rows:
        row = {c: p.get(c) for c in columns}
        row["datasets"] = [d["dataset"] if isinstance(d, dict) else d
                           for d in p.get("datasets") or []]
        out.append(row)
    return _with(pd.DataFrame(out, columns=columns).set_index("id"), rows)


def jobs_frame(rows: list[dict]) -> pd.DataFrame:
    """Jobs, one row per job and institution: its state there and the runner's reason."""
    columns = ["job", "permit", "created_at", "node", "state", "attempts", "reason"]
    out = [{"job": j["id"], "permit": j["permit"], "created_at": j.get("created_at"),
            "node": n["node_id"], "state": n["state"], "attempts": n.get("attempts", 0),
            "reason": n.get("reason") or ""} for j in rows for n in j["nodes"]]
    return _with(pd.DataFrame(out, columns=columns), rows)


def outputs_frame(requests: list[dict]) -> pd.DataFrame:
    """A job's outputs in the airlock: one row per file (its request's state, site,
    verdict, whether it is kept and may be downloaded, the checks' reasons)."""
    columns = ["request", "state", "node", "file", "bytes", "verdict", "stored",
               "sha256", "reasons"]
    out = [{"request": req["id"], "state": req["state"], "node": f["node_id"],
            "file": f["name"], "bytes": f.get("size"), "verdict": f.get("verdict"),
            "stored": f.get("stored"), "sha256": f.get("sha256"),
            "reasons": "; ".join(f.get("reasons") or [])}
           for req in requests for f in req["files"]]
    return _with(pd.DataFrame(out, columns=columns), requests)
