"""`spe job ...`: jobs under a data permit, sent through the hub to the permit's
institutions, and followed there (over the central API).

Results go to standard output; errors to standard error with exit code 2 for bad input
(nothing sent) and 1 when the hub refuses or cannot be reached."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from spe.cli.http import api, calling, fail
from spe.client.api import ENDED as _ENDED
from spe.client.api import HubApi, job_path
from spe.client.api import part_line as _part_line

job_app = typer.Typer(
    help="Jobs under a data permit: submit, follow, cancel, and their released outputs "
         "(through the hub)", no_args_is_help=True)

JobId = Annotated[str, typer.Argument(metavar="JOB_ID", help="The job's id (from submit)")]
Hub = Annotated[str | None, typer.Option(
    help="The central service's URL (default: SPE_HUB_URL, else SPE_OIDC_ISSUER)")]
Token = Annotated[str | None, typer.Option(help="A bearer token (default: SPE_TOKEN)")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for the hub")]

def _out() -> Console:
    return Console(highlight=False)


def _path(job_id: str, tail: str = "") -> str:
    with calling():
        return job_path(job_id, tail)


def print_job(out: Console, job: dict) -> None:
    out.print(f"job {job['id']} under {job['permit']} by {job['user']} "
              f"({job['entry']}, code sha256 {job['code_sha256'][:12]}…)")
    table = Table()
    for column in ("node", "state", "attempts", "reason", "outputs", "airlock request"):
        table.add_column(column)
    for n in job["nodes"]:
        table.add_row(n["node_id"], n["state"], str(n.get("attempts", 0)),
                      n.get("reason") or "", n.get("outputs") or "", n.get("airlock") or "")
    out.print(table)


@job_app.command("submit")
def submit(
    code_dir: Annotated[Path, typer.Argument(metavar="CODE_DIR",
                                             help="The folder of the job's code")],
    permit: Annotated[str, typer.Option(help="The data permit the job runs under")],
    entry: Annotated[str, typer.Option(help="The script to run, relative to CODE_DIR")]
    = "main.py",
    node: Annotated[list[str], typer.Option(
        help="Run at this institution only; repeat for several (default: all of the "
             "permit's)")] = [],  # noqa: B006
    wall_seconds: Annotated[float | None, typer.Option(help="Wall-clock limit")] = None,
    cpu_seconds: Annotated[int | None, typer.Option(help="CPU time limit")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="Memory limit")] = None,
    processes: Annotated[int | None, typer.Option(help="Process limit")] = None,
    output_mb: Annotated[int | None, typer.Option(help="Size limit of /output")] = None,
    scratch_mb: Annotated[int | None, typer.Option(help="Size of /scratch")] = None,
    environment: Annotated[str | None, typer.Option(
        help="The analysis environment the code runs in (GET /api/v1/environments lists "
             "them; default: statistics)")] = None,
    hub: Hub = None,
    token: Token = None,
    as_json: AsJson = False,
    timeout: Timeout = 120.0,
) -> None:
    """Send CODE_DIR as a job to the permit's institutions; print the job's id."""
    if not code_dir.is_dir():  # a file would be sent as a script; the command takes folders
        raise fail(f"{code_dir}: no such folder (CODE_DIR is the folder of the job's code)")
    limits = {"wall_seconds": wall_seconds, "cpu_seconds": cpu_seconds,
              "memory_mb": memory_mb, "processes": processes, "output_mb": output_mb,
              "scratch_mb": scratch_mb}
    with calling():
        hub_api = api(hub, token)
        # environment: sent only when given, else the hub's default
        job = hub_api.submit_job(code_dir, permit, entry=entry, nodes=node or None,
                                 limits=limits, environment=environment, timeout=timeout)
    if as_json:
        typer.echo(json.dumps(job, indent=2))
        return
    typer.echo(job["id"])
    for n in job["nodes"]:
        _out().print(f"  {n['node_id']}: {n['submitted']}")


@job_app.command("crate")
def crate(
    code_dir: Annotated[Path, typer.Argument(metavar="CODE_DIR",
                                             help="The folder of the job's code")],
    permit: Annotated[str, typer.Option(help="The data permit the job is to run under")],
    out: Annotated[Path, typer.Option(help="The request crate to write (a ZIP)")],
    entry: Annotated[str, typer.Option(help="The script to run, relative to CODE_DIR")]
    = "main.py",
    node: Annotated[list[str], typer.Option(
        help="Run at this institution only; repeat for several")] = [],  # noqa: B006
    requester: Annotated[str, typer.Option(help="Your name, as the crate's agent")]
    = "researcher",
) -> None:
    """Write CODE_DIR as a Five Safes RO-Crate request (a zipped BagIt bag), to send with
    `spe job submit-crate` or through any TRE that takes one. Needs no hub."""
    from spe.crate.bag import CrateError
    from spe.crate.request import write

    if not code_dir.is_dir():
        raise fail(f"{code_dir}: no such folder (CODE_DIR is the folder of the job's code)")
    if out.exists():
        raise fail(f"{out}: already exists; give another --out")
    try:
        data = write(code_dir, permit=permit, entry=entry, nodes=node or None,
                     requester=requester)
    except (CrateError, OSError) as exc:
        raise fail(str(exc)) from None
    out.write_bytes(data)
    typer.echo(f"wrote {out} ({len(data)} bytes)")


@job_app.command("submit-crate")
def submit_crate(
    crate_file: Annotated[Path, typer.Argument(metavar="CRATE",
                                               help="A Five Safes request crate (ZIP)")],
    hub: Hub = None,
    token: Token = None,
    as_json: AsJson = False,
    timeout: Timeout = 120.0,
) -> None:
    """Send a Five Safes RO-Crate request as a job; print the job's id."""
    try:
        data = crate_file.read_bytes()
    except OSError as exc:
        raise fail(f"{crate_file}: {exc.strerror or exc}") from None
    with calling():
        job = api(hub, token).submit_crate(data, timeout=timeout)
    if as_json:
        typer.echo(json.dumps(job, indent=2))
        return
    typer.echo(job["id"])
    for n in job["nodes"]:
        _out().print(f"  {n['node_id']}: {n['submitted']}")


@job_app.command("result-crate")
def result_crate(
    job_id: JobId,
    out: Annotated[Path, typer.Option(help="The result crate to write (a ZIP)")],
    hub: Hub = None,
    token: Token = None,
    timeout: Timeout = 120.0,
) -> None:
    """Write the job's result as a Five Safes RO-Crate: its code, permit, every check and
    review, and its outputs once two output checkers released them."""
    with calling():
        data = api(hub, token).result_crate(job_id, timeout=timeout)
    out.write_bytes(data)
    typer.echo(f"wrote {out} ({len(data)} bytes)")


@job_app.command("status")
def status(
    job_id: JobId,
    hub: Hub = None,
    token: Token = None,
    as_json: AsJson = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Wait until every institution's part has ended (or waits for "
                       "that institution's code review), printing each change (state, "
                       "staging step and percent) on stderr; exit 1 unless all "
                       "succeeded")] = False,
    timeout: Annotated[float | None, typer.Option(
        help="With --wait: give up after this many seconds (default: no limit). "
             "Without: seconds to wait for the hub (default 60)")] = None,
) -> None:
    """The job's state at every node, in the runner's words (its log and outputs reach
    you through the airlock: `spe job outputs`, `spe job download`)."""
    _path(job_id)
    if timeout is not None and timeout <= 0:
        raise fail(f"--timeout must be more than 0 seconds, not {timeout:g}")
    gave_up = False
    with calling():
        hub_api = api(hub, token)
        if not wait:
            job = hub_api.job(job_id, timeout=timeout or 60.0)
        else:
            job, gave_up = _wait(hub_api, job_id, timeout)
    if as_json:
        typer.echo(json.dumps(job, indent=2))
    else:
        print_job(_out(), job)
    if wait:
        from spe.client.progress import held

        bad = [f"{n['node_id']} {_part_line(n)}" for n in job["nodes"]
               if n["state"] != "succeeded"]
        if gave_up:
            raise fail(f"gave up waiting after {timeout:g} s: " + "; ".join(bad), 1)
        if waiting := held(job):
            raise fail(f"job {job['id']} waits for code review: " + "; ".join(waiting)
                       + "; run this again once that institution's approver has approved",
                       1)
        if bad:
            raise fail(f"job {job['id']} did not succeed everywhere: " + "; ".join(bad), 1)


#: How often `spe job status --wait` asks the hub.
POLL_SECONDS = 2.0


def _wait(hub_api: HubApi, job_id: str, limit: float | None) -> tuple[dict, bool]:
    """The job once every part has ended, or as it is when `limit` seconds have passed
    (then True), each change of a part printed on stderr as it is seen."""
    from spe.client.progress import follow

    seen: dict[str, str] = {}

    def changes(job: dict, elapsed: float) -> None:
        for n in job["nodes"]:
            line = _part_line(n)
            if seen.get(n["node_id"]) != line:
                seen[n["node_id"]] = line
                typer.echo(f"[{elapsed:4.0f}s] {n['node_id']}: {line}", err=True)

    return follow(lambda t: hub_api.job(job_id, timeout=t), limit=limit, on_poll=changes,
                  interval=POLL_SECONDS)


@job_app.command("list")
def list_jobs(hub: Hub = None, token: Token = None, as_json: AsJson = False,
              timeout: Timeout = 60.0) -> None:
    """Your jobs, newest first: each one's permit, when it was sent, and every
    institution's state (a finished part's final state)."""
    with calling():
        jobs = api(hub, token).jobs(timeout=timeout)
    if as_json:
        typer.echo(json.dumps(jobs, indent=2))
        return
    out = _out()
    if not jobs:
        out.print("no jobs yet (`spe job submit --permit PID CODE_DIR` sends one)")
        return
    table = Table()
    for column in ("job", "permit", "submitted", "state", "institutions"):
        table.add_column(column)
    for j in jobs:
        table.add_row(j["id"], j["permit"], _when(j.get("created_at")),
                      _overall([n["state"] for n in j["nodes"]]),
                      "\n".join(f"{n['node_id']}: {_part_line(n)}" for n in j["nodes"]))
    out.print(table)


def _when(value: str | None) -> str:
    """An API timestamp as `2026-01-31 14:05 UTC`."""
    from datetime import UTC, datetime

    try:
        return datetime.fromisoformat(str(value)).astimezone(UTC).strftime(
            "%Y-%m-%d %H:%M UTC")
    except ValueError:
        return str(value or "")


def _overall(states: list[str]) -> str:
    """The job's state over its parts: one state when all agree; "running" while any part
    has not ended; else "ended: 1 succeeded, 1 failed"."""
    if len(set(states)) == 1:
        return states[0]
    if any(s not in _ENDED for s in states):
        return "running"
    counts: dict[str, int] = {}
    for s in states:
        counts[s] = counts.get(s, 0) + 1
    return "ended: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


@job_app.command("logs")
def logs(job_id: JobId, hub: Hub = None, token: Token = None,
         timeout: Timeout = 60.0) -> None:
    """The job's log at every node, once the airlock has released it: the end of what it
    printed is one of its outputs (job-log.txt), reviewed like the rest."""
    from spe.wire.jobs import LOG_NAME

    with calling():
        hub_api = api(hub, token)
        found = hub_api.outputs(job_id, timeout=timeout)
    if not found:
        typer.echo("no outputs in the airlock yet")
    for req in found:
        for site in _site_ids(req):
            typer.echo(f"==> {site} (request {req['state']}) <==")
            log = next((f for f in req["files"] if f["node_id"] == site
                        and f["path"] == LOG_NAME and f["stored"]), None)
            if log is None:
                typer.echo("(not released)" if req["state"] != "released" else "(no log)")
                continue
            with calling():
                content = hub_api.file(req["id"], log["name"], log["sha256"],
                                       timeout=timeout)
            typer.echo(content.decode("utf-8", errors="replace").rstrip("\n"))


def _site_ids(req: dict) -> list[str]:
    """The request's sites in order of arrival (and any site only its files name)."""
    sites = [s["node_id"] for s in req.get("sites") or []]
    return sites + sorted({f["node_id"] for f in req["files"]} - set(sites))


@job_app.command("cancel")
def cancel(job_id: JobId, hub: Hub = None, token: Token = None, as_json: AsJson = False,
           timeout: Timeout = 60.0) -> None:
    """Cancel the job at every node (a running job is killed within seconds)."""
    with calling():
        job = api(hub, token).cancel(job_id, timeout=timeout)
    if as_json:
        typer.echo(json.dumps(job, indent=2))
    else:
        print_job(_out(), job)


@job_app.command("outputs")
def outputs(job_id: JobId, hub: Hub = None, token: Token = None, as_json: AsJson = False,
            timeout: Timeout = 60.0) -> None:
    """The job's outputs in the airlock: its request's state and reviews, a section per
    site, and once released, its files (the job's log, job-log.txt, among them). A request
    whose every file was blocked is closed at once: each file with the rules that blocked
    it."""
    with calling():
        found = api(hub, token).outputs(job_id, timeout=timeout)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    out = _out()
    if not found:
        out.print("no outputs in the airlock yet (a part still running, or none succeeded)")
    for req in found:
        approvals = len({r["reviewer"] for r in req["reviews"] if r["decision"] == "approve"})
        out.print(f"request {req['id']}: {req['state']} ({approvals} of 2 approvals)")
        out.print(f"  {_STATE_NOTE.get(req['state'], req['state'])}")
        if req.get("review_note"):
            out.print(f"  ! {req['review_note']}")
        if req.get("awaiting"):
            out.print(f"  still to come: the outputs of {', '.join(req['awaiting'])}")
        for reason in req["reasons"]:  # an output checker's view, or a closed request's
            out.print(f"  ! {reason}")
        for review in req["reviews"]:
            out.print(f"  {review['decision']} by {review['reviewer']}"
                      + (f": {review['reason']}" if review["reason"] else ""))
        outcomes = {s["node_id"]: s.get("outcome") for s in req.get("sites") or []}
        for site in _site_ids(req):
            files = [f for f in req["files"] if f["node_id"] == site]
            outcome = outcomes.get(site)
            # A part that did not succeed has no outputs (its log is not one): say so,
            # rather than let its log's verdict read as the part's.
            out.print(f"  {site}:" + (f" {outcome}" if outcome and outcome != "collected"
                                      else ""))
            if not files:
                out.print("    its files are named once released"
                          if req["state"] not in ("released", "closed") else "    no files")
                continue
            table = Table()
            for column in ("file", "bytes", "verdict", "kept", "reasons"):
                table.add_column(column)
            for f in files:
                table.add_row(f["name"], str(f["size"]) if f["size"] else "",
                              f["verdict"], "yes" if f["stored"] else "no",
                              "; ".join(f["reasons"]))
            out.print(table)


_STATE_NOTE = {
    "pending": "under review: two different output checkers approve it",
    "released": "released: `spe job download` fetches the files",
    "rejected": "rejected by an output checker: nothing leaves",
    "withheld": "withheld: the permit was suspended or revoked; nothing leaves",
    "closed": "closed: every file was blocked by the automatic checks; nothing leaves "
              "(why, per file, below)",
}


@job_app.command("download")
def download(
    job_id: JobId,
    to: Annotated[Path, typer.Option(help="Folder to write into (<site>/<file>)")] = Path("."),
    node: Annotated[list[str], typer.Option(help="Only this institution's outputs; "
                                            "repeat for several")] = [],  # noqa: B006
    hub: Hub = None,
    token: Token = None,
    timeout: Timeout = 60.0,
) -> None:
    """Download the job's released outputs into TO/<site>/<file>, checking each file's
    checksum. Exits 1 when nothing is released yet."""
    with calling():
        hub_api = api(hub, token)
        found = hub_api.outputs(job_id, timeout=timeout)
    download_released(hub_api, found, f"job {job_id}", to, node, timeout)


def download_released(hub_api: HubApi, found: list[dict], what: str, to: Path,
                      node: list[str], timeout: float) -> None:
    """The released files of airlock requests `found` into `to`, checksums checked, each
    printed as it is written."""
    out, written = _out(), 0
    with calling():
        for target, f, size in hub_api.download_released(found, what, to, node, timeout):
            written += 1
            out.print(f"{target}  ({size} bytes, sha256 {f['sha256'][:12]}…)")
    out.print(f"{written} file(s) written")


# `spe job test`: the same code on dummy data, on this machine (its own module).
from spe.cli.job_test import try_job  # noqa: E402

job_app.command("test")(try_job)
