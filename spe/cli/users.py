"""`spe users ...`: list, suspend and reinstate users over the central API (an admin's
token). A suspended user's tokens are refused at the centre, the hub signs no context for
them, and every node is sent the list and refuses their contexts too."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from spe.cli.http import api, calling, fail
from spe.cli.progress import console

users_app = typer.Typer(help="Users: list, suspend, reinstate (over the central API)",
                        no_args_is_help=True)

Uid = Annotated[int, typer.Argument(metavar="UID", help="The user's number (`spe users list`)",
                                    min=1)]
Hub = Annotated[str | None, typer.Option(
    help="The central service's URL (default: SPE_HUB_URL, else SPE_OIDC_ISSUER)")]
Token = Annotated[str | None, typer.Option(help="An admin's bearer token (default: SPE_TOKEN)")]
Reason = Annotated[str, typer.Option(help="Why (kept in the audit log)", max=500)]


@users_app.command("list")
def list_users(hub: Hub = None, token: Token = None) -> None:
    """The users the centre has seen, one per line: UID, id, roles."""
    with calling():
        users = api(hub, token, "admin").users(limit=500)
    for user in users:
        typer.echo(f"{user['id']}\t{user['subject']}@{user['issuer']}\t{user['roles']}")


def _set(uid: int, suspended: bool, reason: str, hub: str | None, token: str | None) -> None:
    with calling():
        answer = api(hub, token, "admin").set_suspension(uid, suspended, reason)
    typer.echo(json.dumps(answer, indent=2))
    missed = {n: o for n, o in (answer.get("nodes") or {}).items() if o != "delivered"}
    if missed:
        # Those nodes refuse every newer context until a later push reaches them.
        console.print("[yellow]not delivered to[/yellow] " + ", ".join(
            f"{n} ({o})" for n, o in sorted(missed.items())))
        raise typer.Exit(1)


@users_app.command("suspend")
def suspend(uid: Uid, reason: Reason = "", hub: Hub = None, token: Token = None) -> None:
    """Suspend a user at the centre and at every node. Exit 1 if a node was not told."""
    if not reason.strip():
        raise fail("give --reason: a suspension is audited with its reason")
    _set(uid, True, reason, hub, token)


@users_app.command("reinstate")
def reinstate(uid: Uid, reason: Reason = "", hub: Hub = None, token: Token = None) -> None:
    """Lift a user's suspension (also re-sends the list to nodes that missed it)."""
    _set(uid, False, reason, hub, token)
