"""`spe permit ...`: data permits over the central API, for scripting and tests.

Results (an id, tables, JSON) go to standard output; errors to standard error with exit
code 2 for bad input (nothing sent) and 1 when the hub refuses or cannot be reached."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from spe.cli.http import api, calling, fail, read_json
from spe.cli.progress import console
from spe.client.api import HubApi, permit_path, validated_application, validated_review
from spe.client.transport import Hub as HubCalls

permit_app = typer.Typer(help="Data permits: apply, review, decide (over the central API)",
                         no_args_is_help=True)

Pid = Annotated[str, typer.Argument(metavar="PID", help="The permit's id")]
Hub = Annotated[str | None, typer.Option(
    help="The central service's URL (default: SPE_HUB_URL, else SPE_OIDC_ISSUER)")]
Token = Annotated[str | None, typer.Option(help="A bearer token (default: SPE_TOKEN)")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for the hub")]

def _out() -> Console:
    return Console(highlight=False)


def _path(pid: str) -> str:
    with calling():
        return permit_path(pid)


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def _state(permit: dict) -> str:
    line = f"{permit['id']}: {permit['status']}"
    if permit.get("waiting_for") and permit["status"] in ("submitted",):
        line += f" (waiting for {', '.join(permit['waiting_for'])})"
    return line


# ---- apply, submit --------------------------------------------------------------------


def _catalogue_ids(hub: str | None, timeout: float) -> list[str]:
    """The catalogue's dataset ids, when a hub is named (--hub or SPE_HUB_URL) and answers;
    else none (the template says where to find them)."""
    import os

    from spe.client import ClientError

    url = hub or os.environ.get("SPE_HUB_URL")
    if not url:
        return []
    try:  # public: no token
        rows = HubApi(HubCalls(url, "")).catalogue(timeout=timeout)
    except ClientError:
        return []
    return [str(r["identifier"]) for r in rows if isinstance(r, dict) and r.get("identifier")
            ][:50]


def application_template(datasets: list[str], members: list[str],
                         today: date | None = None) -> dict[str, Any]:
    """A commented application as POST /api/v1/permits takes it: each field with a
    `// field` key before it saying what it is (keys starting with `//` are comments,
    which the API and `spe permit apply` drop)."""
    from typing import get_args

    from spe.permits.schemas import COMMENT_PREFIX, Form, Purpose

    start = today or date.today()
    c = COMMENT_PREFIX
    return {
        c: "A data permit application (EHDS Arts. 45-46, 67), as POST /api/v1/permits takes "
           "it. Keys starting with // are comments, ignored by the API. Edit the values, "
           "then `spe permit apply app.json` (a draft; add --submit to send it to the "
           "holding institutions' approvers).",
        f"{c} organisation": "The legal person applying (1-255 characters).",
        "organisation": "University of Somewhere",
        f"{c} title": "A short title of the project (3-300 characters).",
        "title": "Glioma imaging outcomes",
        f"{c} summary": "What the project does with the data, for the reviewers (required).",
        "summary": "Survival after glioma resection, by MR features.",
        f"{c} purpose": "One of the EHDS Art. 53(1) purposes: "
                        + ", ".join(get_args(Purpose)) + ".",
        "purpose": "scientific_research",
        f"{c} declaration": "true declares that no use prohibited by EHDS Art. 54 is "
                            "intended; submitting needs true.",
        "declaration": False,
        f"{c} legal_basis": "The legal basis of the processing (GDPR Art. 6 and 9), free text.",
        "legal_basis": "GDPR Art. 9(2)(j)",
        f"{c} form": "The data's form: " + " or ".join(get_args(Form))
                     + "; pseudonymised needs a justification (EHDS Art. 66).",
        "form": "anonymised",
        f"{c} justification": "Why pseudonymised data is needed (required for pseudonymised).",
        "justification": "",
        f"{c} ethics_reference": "An ethics committee's reference, if any.",
        "ethics_reference": "",
        f"{c} start_date": "The permit's first day (YYYY-MM-DD).",
        "start_date": str(start),
        f"{c} end_date": "Its last day: not before start_date, at most five years later.",
        "end_date": str(start + timedelta(days=365)),
        f"{c} members": "Other users who work under the permit, as user@issuer (the "
                        "applicant is a member already); at most 50.",
        "members": members,
        f"{c} datasets": "Catalogue dataset ids (GET /api/v1/catalogue, or the /catalogue "
                         "page); each names its holding institution, whose approver "
                         "reviews the application. At least one to submit.",
        "datasets": datasets,
    }


@permit_app.command("template")
def template(
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", help="A catalogue dataset id to ask for; repeat for several (default: "
                          "every dataset of the hub's catalogue, when --hub or SPE_HUB_URL "
                          "names one)")] = None,
    member: Annotated[list[str] | None, typer.Option(
        "--member", help="A member besides you (user@issuer); repeat for several")] = None,
    hub: Hub = None,
    timeout: Timeout = 10.0,
) -> None:
    """Print a commented application to fill in: `spe permit template > app.json`, edit,
    `spe permit apply app.json`. Comments are `// field` keys, which apply ignores."""
    datasets = list(dataset or []) or _catalogue_ids(hub, timeout)
    _echo_json(application_template(datasets, list(member or [])))



@permit_app.command("apply")
def apply(
    application: Annotated[str, typer.Argument(
        metavar="APPLICATION.json",
        help="The application, as POST /api/v1/permits takes it (`-` for standard input)")],
    submit: Annotated[bool, typer.Option(
        "--submit", help="Submit it at once (otherwise it stays a draft)")] = False,
    hub: Hub = None,
    token: Token = None,
    as_json: AsJson = False,
    timeout: Timeout = 60.0,
) -> None:
    """Save an application as a draft and print its id (with --submit, submit it too)."""
    data = read_json(application, "an application is a JSON object (organisation, title, "
                                  "summary, start_date, end_date, datasets, ...)")
    with calling():
        validated_application(data)  # bad input before the hub or token is looked for
        created = api(hub, token).apply(data, submit=submit, timeout=timeout)
    pid = created["id"]
    if as_json:
        _echo_json(created)
        return
    typer.echo(pid)
    console.print(_state(created))


@permit_app.command("submit")
def submit(pid: Pid, hub: Hub = None, token: Token = None, as_json: AsJson = False,
           timeout: Timeout = 60.0) -> None:
    """Submit a draft (or a revised application) to the holding institutions."""
    _path(pid)
    with calling():
        permit = api(hub, token).submit_permit(pid, timeout=timeout)
    if as_json:
        _echo_json(permit)
    else:
        _out().print(_state(permit))


# ---- show, list -----------------------------------------------------------------------


def _when(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


def print_permit(out: Console, p: dict) -> None:
    fields = Table(title=f"permit {p['id']}", show_header=False)
    fields.add_column("field", style="bold")
    fields.add_column("value")
    rows = [
        ("status", p["status"]), ("title", p["title"]), ("applicant", p["applicant"]),
        ("members", ", ".join(p["members"]) or "-"), ("organisation", p["organisation"]),
        ("purpose", p["purpose"]), ("form", p["form"]),
        ("period", f"{p['start_date']} to {p['end_date']}"),
        ("datasets", ", ".join(d["dataset"] for d in p["datasets"]) or "-"),
        ("institutions", ", ".join(p["institutions"]) or "-"),
        ("waiting for", ", ".join(p["waiting_for"]) or "-"),
        ("revision", str(p["revision"])),
        ("declaration", "yes" if p["declaration"] else "no"),
        ("legal basis", p["legal_basis"] or "-"),
        ("ethics reference", p["ethics_reference"] or "-"),
        ("justification", p["justification"] or "-"),
        ("summary", p["summary"]),
    ]
    if p.get("conditions"):
        rows.append(("conditions", "; ".join(p["conditions"])))
    if p.get("decision_reason"):
        rows.append(("decision reason", p["decision_reason"]))
    if p.get("pushed"):
        rows.append(("pushed", ", ".join(f"{n}: {o}" for n, o in sorted(p["pushed"].items()))))
    for name, value in rows:
        fields.add_row(name, str(value))
    out.print(fields)
    if p["reviews"]:
        reviews = Table(title=f"reviews (revision {p['revision']})")
        for column in ("institution", "decision", "reviewer", "at", "reason", "conditions"):
            reviews.add_column(column)
        for r in p["reviews"]:
            reviews.add_row(r["node_id"], r["decision"], r["reviewer"], _when(r["at"]),
                            r["reason"], "; ".join(r["conditions"]))
        out.print(reviews)
    history = Table(title="history")
    for column in ("at", "actor", "action", "from", "to", "reason"):
        history.add_column(column)
    for e in p["events"]:
        history.add_row(_when(e["at"]), e["actor"], e["action"], e["from_status"],
                        e["to_status"], e["reason"])
    out.print(history)


@permit_app.command("show")
def show(pid: Pid, hub: Hub = None, token: Token = None, as_json: AsJson = False,
         timeout: Timeout = 60.0) -> None:
    """An application or permit: its fields, status, reviews and history."""
    _path(pid)
    with calling():
        permit = api(hub, token).permit(pid, timeout=timeout)
    if as_json:
        _echo_json(permit)
    else:
        print_permit(_out(), permit)


@permit_app.command("list")
def list_permits(
    mine: Annotated[bool, typer.Option(
        "--mine", help="Only those naming me (not my institution's queue)")] = False,
    status: Annotated[list[str] | None, typer.Option(
        help="Only this status (draft, submitted, changes_requested, approved, rejected, "
             "active, not_yet_active, expired, refused, suspended, revoked); repeat for "
             "several")] = None,
    hub: Hub = None,
    token: Token = None,
    as_json: AsJson = False,
    timeout: Timeout = 60.0,
) -> None:
    """What the caller may read: their own, their institution's queue, or all submitted."""
    with calling():
        rows = api(hub, token).permits(status, mine, timeout=timeout)
    if as_json:
        _echo_json(rows)
        return
    table = Table(title=f"permits ({len(rows)})")
    for column in ("id", "status", "title", "applicant", "institutions", "waiting for",
                   "updated"):
        table.add_column(column)
    for p in rows:
        table.add_row(p["id"], p["status"], p["title"], p["applicant"],
                      ", ".join(p["institutions"]), ", ".join(p["waiting_for"]),
                      _when(p["updated_at"]))
    _out().print(table)


# ---- reviews (an approver, for the institution in their token) ------------------------


def _review(pid: str, decision: str, reason: str, conditions: list[str], hub: str | None,
            token: str | None, as_json: bool, timeout: float) -> None:
    _path(pid)
    with calling():
        validated_review(decision, reason, conditions)  # before the token is looked for
        permit = api(hub, token, "approver").review(pid, decision, reason, conditions,
                                                    timeout=timeout)
    if as_json:
        _echo_json(permit)
    else:
        _out().print(_state(permit))


@permit_app.command("amend")
def amend(
    pid: Pid,
    member: Annotated[list[str] | None, typer.Option(
        "--member", help="A user id to add (user@issuer); repeat for several")] = None,
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", help="A catalogue dataset to add; repeat for several")] = None,
    reason: Annotated[str, typer.Option(help="Why the permit needs it")] = "",
    hub: Hub = None, token: Token = None, as_json: AsJson = False, timeout: Timeout = 60.0,
) -> None:
    """Ask to add members or datasets to an active permit (reviewed again by the
    institutions concerned, then issued by the access body)."""
    _path(pid)
    with calling():
        permit = api(hub, token).amend(pid, member or [], dataset or [], reason,
                                       timeout=timeout)
    if as_json:
        _echo_json(permit)
    else:
        needs = ", ".join((permit.get("amendment") or {}).get("institutions", []))
        _out().print(f"{_state(permit)}; amendment awaits {needs}")


@permit_app.command("approve")
def approve(
    pid: Pid,
    condition: Annotated[list[str] | None, typer.Option(
        "--condition", help="A condition of the approval; repeat for several")] = None,
    reason: Annotated[str, typer.Option(help="Why (optional for an approval)")] = "",
    hub: Hub = None, token: Token = None, as_json: AsJson = False, timeout: Timeout = 60.0,
) -> None:
    """Approve for your institution (the one in your token)."""
    _review(pid, "approve", reason, condition or [], hub, token, as_json, timeout)


@permit_app.command("reject")
def reject(
    pid: Pid,
    reason: Annotated[str, typer.Option(help="Why (required)")],
    hub: Hub = None, token: Token = None, as_json: AsJson = False, timeout: Timeout = 60.0,
) -> None:
    """Reject for your institution."""
    _review(pid, "reject", reason, [], hub, token, as_json, timeout)


@permit_app.command("changes")
def changes(
    pid: Pid,
    reason: Annotated[str, typer.Option(help="What should change (required)")],
    hub: Hub = None, token: Token = None, as_json: AsJson = False, timeout: Timeout = 60.0,
) -> None:
    """Ask the applicant for changes; the revised application goes to every institution."""
    _review(pid, "changes", reason, [], hub, token, as_json, timeout)


# ---- the access body's decisions ------------------------------------------------------


def _decide(action: str, pid: str, reason: str, hub: str | None, token: str | None,
            as_json: bool, timeout: float) -> None:
    _path(pid)
    if len(reason) > 5_000:
        raise fail("--reason is longer than 5000 characters")
    with calling():
        permit = api(hub, token, "hdab").decide(action, pid, reason, timeout=timeout)
    if as_json:
        _echo_json(permit)
        return
    out = _out()
    out.print(_state(permit))
    pushed = permit.get("pushed") or {}
    if not pushed:
        out.print("pushed: to no node (no document to push, or no federation configured)")
    for node, outcome in sorted(pushed.items()):
        out.print(f"pushed: {node}: {outcome}")


_DECISIONS = {
    "issue": "Issue the permit (every holding institution must have approved).",
    "refuse": "Refuse the application.",
    "suspend": "Suspend an issued permit.",
    "resume": "Resume a suspended permit.",
    "revoke": "Revoke a permit for good.",
}


def _decision_command(action: str, doc: str) -> None:
    def command(
        pid: Pid,
        reason: Annotated[str, typer.Option(help="Why (recorded in the history)")] = "",
        hub: Hub = None, token: Token = None, as_json: AsJson = False,
        timeout: Timeout = 60.0,
    ) -> None:
        _decide(action, pid, reason, hub, token, as_json, timeout)

    command.__doc__ = doc + " Prints the new status and each node's push outcome."
    command.__name__ = action
    permit_app.command(action)(command)


for _action, _doc in _DECISIONS.items():
    _decision_command(_action, _doc)
