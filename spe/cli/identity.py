"""`spe identity ...`: the central service's standing at its OpenID Connect provider: the
public key to register for its client (private_key_jwt), and a check of the whole path (the
provider's keys, a client credentials token, that token verified as the nodes verify it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from spe.cli.progress import console


def fail(message: str, code: int = 2) -> typer.Exit:
    """One line however long: a reason names a URL or a client, which must stay whole."""
    console.print("[red]error:[/red]", escape(message), soft_wrap=True)
    return typer.Exit(code)


identity_app = typer.Typer(help="The identity provider: the centre's client, a check",
                           no_args_is_help=True)


@identity_app.command("client-jwks")
def client_jwks(
    key: Annotated[Path, typer.Option(help="The client's private key (PEM; e.g. hub.key)")],
    kid: Annotated[str, typer.Option(help="Key id (default: the RFC 7638 thumbprint)")] = "",
) -> None:
    """Print the JWKS (public key only) to register for the centre's client at the provider,
    for SPE_OIDC_CLIENT_KEY_FILE (private_key_jwt)."""
    from spe.identity.client_credentials import ClientKeyError, PrivateKeyJwt

    try:
        signer = PrivateKeyJwt(key, kid)
    except ClientKeyError as exc:
        raise fail(str(exc)) from None
    typer.echo(json.dumps({"keys": [signer.public_jwk()]}, indent=2))


@identity_app.command("check")
def check() -> None:
    """Fetch the provider's keys, get the centre's client a token by client credentials and
    verify it as every service does; exit 1 naming the step that failed."""
    from spe.errors import SPEError
    from spe.identity import machine_token, make_verifier
    from spe.settings import InsecureConfiguration, Settings

    try:
        settings = Settings()
    except (InsecureConfiguration, ValueError) as exc:  # ValueError: pydantic's
        raise fail(f"the SPE_* configuration is not usable: {exc}") from None
    if not settings.oidc_jwks_url:
        raise fail("no SPE_OIDC_JWKS_URL: the demo issuer is in use, nothing to check")
    verifier = make_verifier(settings)
    try:
        keys = verifier.jwks.keys()
    except SPEError as exc:
        raise fail(exc.detail, 1) from None
    console.print(f"keys: {len(keys.keys)} from {settings.oidc_jwks_url}")
    source = machine_token(settings, None)
    if source is None:
        raise fail("no SPE_OIDC_CLIENT_ID with SPE_OIDC_CLIENT_SECRET or "
                   "SPE_OIDC_CLIENT_KEY_FILE: the scheduled harvest has no client", 1)
    try:
        principal = verifier.verify(source.token())
    except SPEError as exc:
        raise fail(f"the client's token: {exc.detail}", 1) from None
    console.print(f"client {settings.oidc_client_id}: a token for {principal.id}, roles "
                  f"{', '.join(principal.roles) or 'none'}", soft_wrap=True)
    if "hdab" not in principal.roles:
        raise fail("the client's token has no role hdab: the nodes will refuse the harvest "
                   "(give its service account the role)", 1)
