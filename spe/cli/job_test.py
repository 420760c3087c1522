"""`spe job test CODE_DIR --permit PID`: try a job on dummy data before sending it.

Runs on the researcher's own machine and reaches no node: the permit (its institutions,
datasets and form) and the catalogue's descriptors of its datasets come from the hub
(`GET /api/v1/permits/{pid}`, `GET /api/v1/catalogue/datasets/{id}`, through spe.client),
or from a file saved earlier with `--save-shape` (`--shape FILE`: fully offline). One
synthetic site per institution, shaped like its descriptor, then the node's own sync,
staging, sandbox and airlock checks (gateway/node/dry_run.py). Each output's verdict is
printed with its reasons (dummy data: the reasons may be read), with the end of the
job's log.

Exit codes: 0 when every output would pass or go to review, 1 when one would be blocked
or the job failed at a site, 2 for bad input (nothing ran).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from spe.cli.http import api, calling, fail, read_json

#: What a saved shape file holds (`--save-shape`, read by `--shape`).
SHAPE_FORMAT = "spe-job-test-shape/1"
LOG_LINES = 20  # of the job's log, printed per site


def fetch_shape(pid: str, hub: str | None, token: str | None, timeout: float) -> dict:
    """The permit and its datasets' descriptors, from the hub (spe.client), as a shape
    file holds them."""
    with calling():
        hub_api = api(hub, token)
        permit = hub_api.permit(pid, timeout=timeout)
        datasets = []
        for item in permit.get("datasets") or []:
            identifier = item.get("dataset") if isinstance(item, dict) else None
            if identifier:
                found = hub_api.dataset(identifier)
                datasets.append({**found,
                                 "node_id": item.get("node_id") or found.get("node_id")})
    return {"format": SHAPE_FORMAT,
            "permit": {k: permit.get(k) for k in ("id", "status", "form", "institutions",
                                                  "datasets")},
            "datasets": datasets}


def _shapes(shape: dict, pid: str) -> tuple[dict, list]:
    """The permit and one SiteShape per institution (its first dataset's descriptor)."""
    from spe.synth.shaped import ShapeError, SiteShape

    permit = shape.get("permit")
    if shape.get("format") != SHAPE_FORMAT or not isinstance(permit, dict):
        raise fail(f"not a shape file of `spe job test --save-shape` ({SHAPE_FORMAT})")
    if permit.get("id") != pid:
        raise fail(f"the shape file is of permit {permit.get('id')!r}, not {pid!r}")
    institutions = [i for i in permit.get("institutions") or [] if isinstance(i, str)]
    by_site: dict[str, Any] = {}
    for descriptor in shape.get("datasets") or []:
        if isinstance(descriptor, dict):
            by_site.setdefault(descriptor.get("node_id"), descriptor)
    try:
        shapes = [SiteShape.from_descriptor(by_site.get(site) or {"node_id": site}, site)
                  for site in institutions or sorted(k for k in by_site if k)]
    except ShapeError as exc:
        raise fail(f"the permit's datasets cannot shape dummy data: {exc}") from None
    if not shapes:
        raise fail(f"permit {pid} names no institution: nothing to try the job at")
    return permit, shapes


def _verdict_table(site) -> Table:
    table = Table(title=escape(f"{site.site}: {site.state}"
                               + (f" ({site.reason})" if site.reason else "")),
                  title_justify="left")
    for column in ("file", "kind", "verdict", "reasons"):
        table.add_column(column, overflow="fold")
    colour = {"pass": "green", "review": "yellow", "blocked": "red"}
    for f in site.files:
        table.add_row(escape(f["path"]), f["kind"],
                      f"[{colour.get(f['verdict'], 'white')}]{f['verdict']}[/]",
                      escape("\n".join(f["reasons"])))
    return table


def _as_json(permit: dict, runs: list, shapes: list, kept: bool) -> dict:
    """Everything shown, as JSON; `extract` only when --work keeps it (else it is gone)."""
    return {"permit": permit, "shapes": [s.to_dict() for s in shapes], "sites": [{
        "site": r.site, "state": r.state, "reason": r.reason, "staging": r.staging,
        "files": r.files, "reasons": r.reasons, "log": r.log,
        "extract": str(r.extract) if kept else None} for r in runs]}


def try_job(
    code_dir: Annotated[Path, typer.Argument(metavar="CODE_DIR",
                                             help="The folder of the job's code")],
    permit: Annotated[str, typer.Option(help="The data permit the job will run under")],
    entry: Annotated[str, typer.Option(help="The script to run, relative to CODE_DIR")]
    = "main.py",
    environment: Annotated[str | None, typer.Option(
        help="The analysis environment (default: statistics), as at the nodes")] = None,
    wall_seconds: Annotated[float | None, typer.Option(help="Wall-clock limit")] = None,
    cpu_seconds: Annotated[int | None, typer.Option(help="CPU time limit")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="Memory limit")] = None,
    processes: Annotated[int | None, typer.Option(help="Process limit")] = None,
    output_mb: Annotated[int | None, typer.Option(help="Size limit of /output")] = None,
    scratch_mb: Annotated[int | None, typer.Option(help="Size of /scratch")] = None,
    patients: Annotated[int, typer.Option(
        min=10, max=5000, help="Dummy patients per institution (fewer than the real "
                               "ones, to be quick; small sites lose detail in layer 3)")]
    = 100,
    seed: Annotated[int, typer.Option(help="Seed of the dummy data")] = 1,
    shape: Annotated[Path | None, typer.Option(
        help="Read the permit and its descriptors from this file (saved by --save-shape) "
             "instead of asking the hub: fully offline")] = None,
    save_shape: Annotated[Path | None, typer.Option(
        help="Write what the hub said of the permit and its datasets to this file")] = None,
    work: Annotated[Path | None, typer.Option(
        help="Keep the dummy data, extracts and outputs in this folder (default: a "
             "temporary one, removed)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON")]
    = False,
    hub: Annotated[str | None, typer.Option(
        help="The central service's URL (default: SPE_HUB_URL, else SPE_OIDC_ISSUER)")]
    = None,
    token: Annotated[str | None, typer.Option(help="A bearer token (default: SPE_TOKEN)")]
    = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the hub")] = 60.0,
) -> None:
    """Try CODE_DIR on dummy data shaped like the permit's datasets, on this machine, as
    the nodes would run it (staging, sandbox, airlock checks): each output's verdict and
    why. Reaches no node. Exit 0: all would pass or go to review; 1: one would be blocked,
    or the job failed; 2: bad input."""
    from gateway.node.dry_run import DryRunRefused, DryRunUnavailable, dry_run
    from spe.cli.progress import task_bars
    from spe.wire.code_archive import CodeArchiveError, pack_code

    if not code_dir.is_dir():
        raise fail(f"{code_dir}: no such folder (CODE_DIR is the folder of the job's code)")
    if not (code_dir / entry).is_file():
        raise fail(f"{code_dir / entry}: no such file: the script the job runs, relative to "
                   f"{code_dir} (--entry, default main.py)")
    if shape is not None and save_shape is not None:
        raise fail("give --shape (read a saved shape) or --save-shape (save the hub's), "
                   "not both")
    try:
        code = pack_code(code_dir)
    except (CodeArchiveError, OSError) as exc:
        raise fail(str(exc)) from None
    given = {"wall_seconds": wall_seconds, "cpu_seconds": cpu_seconds,
             "memory_mb": memory_mb, "processes": processes, "output_mb": output_mb,
             "scratch_mb": scratch_mb}
    limits = {k: v for k, v in given.items() if v is not None}

    found = read_json(str(shape), "a shape file of `spe job test --save-shape`") \
        if shape is not None else fetch_shape(permit, hub, token, timeout)
    if save_shape is not None:
        try:
            save_shape.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise fail(f"{save_shape}: {exc.strerror or exc}") from None
    the_permit, shapes = _shapes(found, permit)
    err = Console(stderr=True, highlight=False)
    if the_permit.get("status") not in (None, "active", "issued"):
        err.print(f"note: permit {permit} is {the_permit.get('status')}: the nodes would "
                  "refuse the job now; trying it anyway")

    folder = work or Path(tempfile.mkdtemp(prefix="spe-job-test-"))
    try:
        with task_bars() as tick:
            runs = dry_run(folder, shapes, pid=permit, form=str(the_permit.get("form") or
                                                                "anonymised"),
                           code=code, entry=entry, limits=limits, environment=environment,
                           patients=patients, seed=seed, progress=tick)
        if as_json:
            typer.echo(json.dumps(_as_json(the_permit, runs, shapes, work is not None),
                                  indent=2, default=str))
        else:
            _print(runs, work is not None)
    except DryRunRefused as exc:
        hint = ("; here, build it (make analysis-env) or point SPE_ANALYSIS_ENVIRONMENTS at "
                "the built ones" if "not installed" in str(exc) else "")
        raise fail(f"refused as at a node: {exc}{hint}") from None
    except DryRunUnavailable as exc:
        raise fail(f"cannot try the job on this machine: {exc}") from None
    finally:
        if work is None:
            shutil.rmtree(folder, ignore_errors=True)
    blocked = [f"{r.site}/{f['path']}" for r in runs for f in r.files
               if f["verdict"] == "blocked"]
    failed = [f"{r.site} ({r.reason or r.state})" for r in runs if r.state != "succeeded"]
    if failed or blocked or any(r.reasons for r in runs):
        raise fail("on the nodes, " + "; ".join(
            ([f"the job would fail at {', '.join(failed)}"] if failed else [])
            + ([f"would be blocked: {', '.join(blocked)}"] if blocked else [])
            + ([f"{r.site}: {'; '.join(r.reasons)}" for r in runs if r.reasons])), 1)


def _print(runs: list, kept: bool) -> None:
    out = Console(highlight=False)
    for run in runs:
        staging = run.staging
        out.print(f"[bold]{run.site}[/bold]: extract {staging.get('form', '?')}, layers "
                  f"{', '.join(staging.get('layers') or []) or '-'}, risk "
                  f"{'within the threshold' if staging.get('risk_ok') else 'above it'}"
                  + (", generalised " + ", ".join(
                      f"{qi} to level {level}" for qi, level in staging["generalised"].items())
                     if staging.get("generalised") else "")
                  + (f"; at {escape(str(run.extract))}" if kept else ""))
        out.print(_verdict_table(run))
        for reason in run.reasons:
            out.print(f"  [red]![/red] {escape(reason)}")
        tail = run.log.rstrip("\n").splitlines()[-LOG_LINES:]
        out.print(f"  log ({len(tail)} last lines):" if tail else "  log: empty")
        for line in tail:
            out.print(f"    {line}", markup=False)
