"""`spe federation list | add | remove`: the institutions the hub calls, changed at the
running centre over its API (an admin's token); every change is audited there."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from spe.cli.http import api, calling
from spe.cli.progress import console

federation_app = typer.Typer(
    help="Institutions of the federation: list, add, remove (over the central API)",
    no_args_is_help=True)

Hub = Annotated[str | None, typer.Option(
    help="The central service's URL (default: SPE_HUB_URL, else SPE_OIDC_ISSUER)")]
Token = Annotated[str | None, typer.Option(help="An admin's bearer token (default: SPE_TOKEN)")]
Reason = Annotated[str, typer.Option(help="Why (kept in the audit log)", max=500)]
NodeId = Annotated[str, typer.Argument(help="The node's federation name (its certificate's CN)")]


@federation_app.command("list")
def list_nodes(hub: Hub = None, token: Token = None) -> None:
    """The members the hub calls: name, URL, and whether SPE_FEDERATION_NODES or an admin
    put it there."""
    with calling():
        nodes = api(hub, token, "admin").federation_nodes()
    for node in nodes:
        typer.echo(f"{node['node_id']}\t{node['url']}\t{node['source']}")


@federation_app.command("add")
def add(node_id: NodeId,
        url: Annotated[str, typer.Argument(help="The node's base URL (https://host:port)")],
        reason: Reason = "", hub: Hub = None, token: Token = None) -> None:
    """Add an institution (or change its URL); the hub calls it from the next query on.
    Its certificate must come from the federation CA (`spe pki sign`)."""
    with calling():
        added = api(hub, token, "admin").add_node(node_id, url, reason)
    typer.echo(json.dumps(added, indent=2))


@federation_app.command("remove")
def remove(node_id: NodeId,
           revoke: Annotated[bool, typer.Option(
               help="Also revoke its certificates (the CA's folder must be the centre's "
                    "SPE_PKI_DIR) and send the new revocation list to every node")] = False,
           reason: Reason = "", hub: Hub = None, token: Token = None) -> None:
    """Remove an institution: the hub stops calling it at once. Exit 1 if the revocation
    list did not reach every node (the hub keeps sending it)."""
    with calling():
        answer = api(hub, token, "admin").remove_node(node_id, revoke, reason)
    typer.echo(json.dumps(answer, indent=2))
    missed = {n: o for n, o in (answer.get("crl_pushed") or {}).items() if o != "delivered"}
    if missed:
        console.print("[yellow]revocation list not yet delivered to[/yellow] " + ", ".join(
            f"{n} ({o})" for n, o in sorted(missed.items())))
        raise typer.Exit(1)
