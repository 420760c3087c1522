"""`spe fed ...`: federated computations in rounds under a data permit (a ComBat
harmonisation or a Flower app), driven by the hub; every update passes each node's gate
and goes to the hub's aggregator only; the result reaches you through the airlock.

Results go to standard output, progress to standard error; errors with exit code 2 for
bad input (nothing sent) and 1 when the hub refuses, cannot be reached or the run did not
succeed."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from spe.cli.http import api, calling, fail
from spe.cli.job import _STATE_NOTE, download_released
from spe.client.api import run_path

fed_app = typer.Typer(
    help="Federated computations in rounds (ComBat harmonisation, Flower apps) under a "
         "data permit, through the hub", no_args_is_help=True)

RunId = Annotated[str, typer.Argument(metavar="RUN_ID", help="The run's id (from run)")]
Hub = Annotated[str | None, typer.Option(
    help="The central service's URL (default: SPE_HUB_URL, else SPE_OIDC_ISSUER)")]
Token = Annotated[str | None, typer.Option(help="A bearer token (default: SPE_TOKEN)")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for the hub")]

POLL_SECONDS = 1.0
ENDED = {"succeeded", "failed", "cancelled"}


def _out() -> Console:
    return Console(highlight=False)


def _path(run_id: str) -> None:
    """A run id checked before anything is sent (exit 2)."""
    with calling():
        run_path(run_id)


def _covariates(text: str) -> dict[str, Any]:
    """"age,sex,diagnosis" -> the ComBat covariates with their kinds and levels."""
    known = {"age": "continuous", "sex": "categorical", "diagnosis": "categorical"}
    names = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in names if c not in known]
    if unknown:
        raise fail(f"--covariates: {', '.join(unknown)} unknown (age, sex, diagnosis)")
    return {c: known[c] for c in names}


def _setting(item: str) -> tuple[str, Any]:
    """"key=value" -> (key, the value as a number, a boolean or text)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise fail(f"--set {item!r}: write KEY=VALUE")
    value: Any = text
    if text in ("true", "false"):
        value = text == "true"
    else:
        for kind in (int, float):
            try:
                value = kind(text)
                break
            except ValueError:
                continue
    return key.strip(), value


@fed_app.command("run")
def run(
    app: Annotated[str, typer.Argument(
        metavar="APP", help="'combat' (harmonise image features across the sites), or the "
                            "folder of a Flower app (its pyproject.toml names the "
                            "ServerApp and ClientApp)")],
    permit: Annotated[str, typer.Option(help="The data permit the run works under")],
    node: Annotated[list[str], typer.Option(
        help="Run at this institution only; repeat for several (default: all of the "
             "permit's)")] = [],  # noqa: B006
    rounds: Annotated[int | None, typer.Option(
        help="Flower: the number of server rounds (default: the app's num-server-rounds)")]
    = None,
    setting: Annotated[list[str], typer.Option(
        "--set", metavar="KEY=VALUE",
        help="Flower: override a key of the app's [tool.flwr.app.config] (a number, true, "
             "false or text); repeat for several")] = [],  # noqa: B006
    on_failure: Annotated[str, typer.Option(
        help="A node that fails or is refused in a round: stop, retry, or skip it")]
    = "stop",
    retries: Annotated[int, typer.Option(
        help="With --on-failure retry: how many times a node's round is sent again")] = 1,
    min_nodes: Annotated[int, typer.Option(help="Stop when fewer nodes are left")] = 2,
    covariates: Annotated[str, typer.Option(
        help="ComBat: covariates whose effects are kept (age, sex, diagnosis)")]
    = "age,sex,diagnosis",
    diagnosis: Annotated[str, typer.Option(
        help="ComBat: ICD-10 codes (prefixes) that make diagnosis 1, comma-separated")]
    = "J44",
    modality: Annotated[str, typer.Option(help="ComBat: the series' modality")] = "DX",
    body_part: Annotated[str, typer.Option(help="ComBat: the series' body part")] = "CHEST",
    dp_clip: Annotated[float | None, typer.Option(
        help="Differential privacy: the L2 norm each node's update is clipped to")] = None,
    dp_noise: Annotated[float | None, typer.Option(
        help="Differential privacy: the noise multiplier (noise sd = it x the clip)")] = None,
    dp_delta: Annotated[float, typer.Option(help="Differential privacy: delta")] = 1e-5,
    round_timeout: Annotated[float, typer.Option(
        help="Seconds a node has for one round")] = 600.0,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Follow the run round by round until it ends; exit 1 unless it "
                       "succeeded")] = False,
    hub: Hub = None,
    token: Token = None,
    as_json: AsJson = False,
    timeout: Timeout = 120.0,
) -> None:
    """Start a federated run under PERMIT; print its id (with --wait, follow it)."""
    if on_failure not in ("stop", "retry", "skip"):
        raise fail(f"--on-failure must be stop, retry or skip, not {on_failure!r}")
    if (dp_clip is None) != (dp_noise is None):
        raise fail("differential privacy needs both --dp-clip and --dp-noise")
    if setting and app == "combat":
        raise fail("--set is for a Flower app's run config; ComBat takes its own options")
    overrides = dict(_setting(item) for item in setting)
    body: dict[str, Any] = {"permit": permit, "nodes": node or None,
                            "on_failure": on_failure, "retries": retries,
                            "min_nodes": min_nodes, "round_timeout": round_timeout}
    if dp_clip is not None:
        body["privacy"] = {"clip": dp_clip, "noise_multiplier": dp_noise, "delta": dp_delta}
    if app == "combat":
        body["app"] = "combat"
        body["config"] = {"covariates": _covariates(covariates),
                          "diagnosis_codes": [c.strip() for c in diagnosis.split(",")
                                              if c.strip()],
                          "modality": modality, "body_part": body_part}
    else:
        from spe.wire.code_archive import CodeArchiveError, pack_code

        folder = Path(app)
        if not folder.is_dir() or not (folder / "pyproject.toml").is_file():
            raise fail(f"{app}: not 'combat' nor a Flower app's folder (one with a "
                       "pyproject.toml naming its ServerApp and ClientApp)")
        try:
            code = pack_code(folder)
        except (CodeArchiveError, OSError) as exc:
            raise fail(str(exc)) from None
        body["app"] = "flower"
        body["code"] = base64.b64encode(code).decode()
        body["config"] = {**overrides, **({"num-server-rounds": rounds} if rounds else {})}
    with calling():
        started = api(hub, token).start_run(body, timeout=timeout)
    if not wait:
        if as_json:
            typer.echo(json.dumps(started, indent=2))
        else:
            typer.echo(started["id"])
        return
    typer.echo(started["id"], err=True)
    _follow(started["id"], hub, token, as_json, None)


def _node_words(state: dict) -> str:
    return state["state"] + (f": {state['reason']}" if state.get("reason") else "")


def print_run(out: Console, run: dict) -> None:
    out.print(f"{run['app']} run {run['id']} under {run['permit']} by {run['user']}: "
              f"{run['state']}" + (f" ({run['reason']})" if run.get("reason") else ""))
    table = Table()
    table.add_column("round")
    table.add_column("step")
    for n in run["nodes"]:
        table.add_column(n)
    table.add_column("metrics")
    for r in run["rounds"]:
        table.add_row(str(r["round"]), r["kind"],
                      *[_node_words(r["nodes"][n]) if n in r["nodes"] else "-"
                        for n in run["nodes"]],
                      ", ".join(f"{k} {v:.4g}" for k, v in sorted(r["metrics"].items())))
    out.print(table)
    if run.get("privacy"):
        out.print("privacy spent (epsilon per node): " + ", ".join(
            f"{n} {e:.3g}" for n, e in sorted(run["privacy"].items())))
    if run.get("airlock"):
        out.print(f"result in the airlock: request {run['airlock']} (`spe fed outputs "
                  f"{run['id']}`)")


def _follow(run_id: str, hub: str | None, token: str | None, as_json: bool,
            limit: float | None) -> None:
    from spe.cli.progress import tracker

    _path(run_id)
    hub_api = api(hub, token)
    started = time.monotonic()
    seen = 0
    with tracker() as track, calling():
        while True:
            run = hub_api.run(run_id)
            planned = run.get("rounds_planned")
            for r in run["rounds"][seen:]:
                note = "; ".join(f"{n} {_node_words(s)}" for n, s in sorted(r["nodes"].items())
                                 if s["state"] != "accepted")
                metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(r["metrics"].items()))
                track.update(f"fed {run_id[:12]} {run['app']}", r["round"], planned,
                             unit="rounds", note=", ".join(x for x in (r["kind"], metrics, note)
                                                           if x))
            seen = len(run["rounds"])
            if run["state"] in ENDED:
                break
            if limit is not None and time.monotonic() - started > limit:
                break
            time.sleep(POLL_SECONDS)
    if as_json:
        typer.echo(json.dumps(run, indent=2))
    else:
        print_run(_out(), run)
    if run["state"] not in ENDED:
        raise fail(f"gave up waiting after {limit:g} s: run {run_id} is {run['state']}", 1)
    if run["state"] != "succeeded":
        raise fail(f"run {run_id} {run['state']}: {run.get('reason') or 'no reason given'}", 1)


@fed_app.command("status")
def status(
    run_id: RunId, hub: Hub = None, token: Token = None, as_json: AsJson = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Follow it round by round (a progress bar) until it ends; exit 1 "
                       "unless it succeeded")] = False,
    timeout: Annotated[float | None, typer.Option(
        help="With --wait: give up after this many seconds")] = None,
) -> None:
    """The run's rounds: each node's state in each (the gate's words), the pooled
    metrics, the privacy spent per node, and its airlock request once it ended."""
    if wait:
        _follow(run_id, hub, token, as_json, timeout)
        return
    _path(run_id)
    with calling():
        run = api(hub, token).run(run_id)
    if as_json:
        typer.echo(json.dumps(run, indent=2))
    else:
        print_run(_out(), run)


@fed_app.command("list")
def list_runs(hub: Hub = None, token: Token = None, as_json: AsJson = False,
              timeout: Timeout = 60.0) -> None:
    """Your federated runs, newest first."""
    with calling():
        runs = api(hub, token).runs(timeout=timeout)
    if as_json:
        typer.echo(json.dumps(runs, indent=2))
        return
    if not runs:
        _out().print("no federated runs yet (`spe fed run --permit PID combat`)")
        return
    table = Table()
    for column in ("run", "app", "permit", "state", "rounds", "started"):
        table.add_column(column)
    for r in runs:
        table.add_row(r["id"], r["app"], r["permit"], r["state"], str(len(r["rounds"])),
                      str(r["created_at"])[:19].replace("T", " "))
    _out().print(table)


@fed_app.command("cancel")
def cancel(run_id: RunId, hub: Hub = None, token: Token = None, as_json: AsJson = False
           ) -> None:
    """Stop the run (the round under way is abandoned); nothing goes to the airlock."""
    _path(run_id)
    with calling():
        run = api(hub, token).cancel_run(run_id)
    if as_json:
        typer.echo(json.dumps(run, indent=2))
    else:
        print_run(_out(), run)


@fed_app.command("outputs")
def outputs(run_id: RunId, hub: Hub = None, token: Token = None, as_json: AsJson = False
            ) -> None:
    """The run's result in the airlock: its request's state and reviews, and once
    released, its files (the model or the estimates, the rounds, the disclosure report)."""
    _path(run_id)
    with calling():
        found = api(hub, token).run_outputs(run_id)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    out = _out()
    if not found:
        out.print("nothing in the airlock yet: the run has not finished")
    for req in found:
        approvals = len({r["reviewer"] for r in req["reviews"] if r["decision"] == "approve"})
        out.print(f"request {req['id']}: {req['state']} ({approvals} of 2 approvals)")
        out.print(f"  {_STATE_NOTE.get(req['state'], req['state'])}".replace(
            "spe job download", "spe fed download"))
        for f in req["files"]:
            out.print(f"  {f['name']}  {f['verdict']}" + (
                f"  ({'; '.join(f['reasons'])})" if f["reasons"] else ""))


@fed_app.command("download")
def download(
    run_id: RunId,
    to: Annotated[Path, typer.Option(help="Folder to write into")] = Path("."),
    hub: Hub = None, token: Token = None, timeout: Timeout = 60.0,
) -> None:
    """Download the run's released result, checking each file's checksum. Exits 1 when
    nothing is released yet."""
    _path(run_id)
    hub_api = api(hub, token)
    with calling():
        found = hub_api.run_outputs(run_id, timeout=timeout)
    download_released(hub_api, found, f"run {run_id}", to, [], timeout)
