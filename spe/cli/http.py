"""What the CLI commands that talk to the central API share: where the hub is, the bearer
token, the calls of `spe.client` with its errors said as the CLI says them, and reading a
JSON file. Exit codes: 2 for bad input (nothing was sent), 1 for a refusal or an
unreachable hub."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The client calls `httpx.request` as it finds it on the module at call time: tests stub
# the hub by patching `spe.cli.http.httpx.request`.
import httpx
import typer
from pydantic import ValidationError
from rich.markup import escape

from spe.cli.progress import console
from spe.client.api import HubApi
from spe.client.api import invalid as client_invalid
from spe.client.errors import ClientError, InvalidInput, NotConfigured, Unreachable
from spe.client.transport import Hub, resolve_hub, resolve_token, tls_verify


def fail(message: str, code: int = 2) -> typer.Exit:
    # One line however long: a reason names a URL, which must stay whole.
    console.print("[red]error:[/red]", escape(message), soft_wrap=True)
    return typer.Exit(code)


def hub_url(hub: str | None) -> str:
    """--hub, else SPE_HUB_URL, else SPE_OIDC_ISSUER (the central service's own URL)."""
    try:
        url = resolve_hub(hub)
    except NotConfigured as exc:
        raise fail(f"give --hub (or SPE_HUB_URL): {exc.reason}") from None
    try:
        # httpx reads SSL_CERT_FILE itself, but a missing file would surface as a bare
        # OSError (a traceback) at the first call: name it before anything is sent.
        tls_verify(None)
    except NotConfigured as exc:
        raise fail(f"{exc.reason}: point SSL_CERT_FILE at the CA bundle that signed the "
                   f"hub's certificate, or unset it") from None
    return url


def bearer(token: str | None, role: str = "researcher") -> str:
    """--token, else SPE_TOKEN."""
    try:
        return resolve_token(token) or ""  # required: never None
    except NotConfigured:
        raise fail(f"give --token (or SPE_TOKEN): a {role}'s bearer token; in the demo, "
                   f"`jq -r .{role} var/demo/tokens.json`") from None


def api(hub: str | None, token: str | None, role: str = "researcher") -> HubApi:
    """The client's API for this command's --hub and --token (spe.client: the CLI only
    formats what it answers). Calls go through `calling()`."""
    return HubApi(Hub(hub_url(hub), bearer(token, role)))


def failure(exc: ClientError) -> typer.Exit:
    """A client error as the CLI says it: bad input exit 2 (nothing was sent), a refusal
    or an unreachable hub exit 1, naming the CLI's options."""
    if isinstance(exc, Unreachable):
        from spe.cli.demo_env import source_hint

        return fail(exc.explain(f"point the CLI at the hub with --hub URL or SPE_HUB_URL; "
                                f"{source_hint()}"), 1)
    return fail(str(exc), 2 if isinstance(exc, InvalidInput) else 1)


@contextmanager
def calling() -> Iterator[None]:
    """Around calls of spe.client: any ClientError ends the command with its words."""
    try:
        yield
    except ClientError as exc:
        raise failure(exc) from None


def request(method: str, url: str, path: str, token: str, *, json: Any = None,
            params: Any = None, timeout: float = 60.0, who: str = "the hub") -> httpx.Response:
    """One call to the central API (spe.client's); any failure ends the command with
    exit 1."""
    with calling():
        return Hub(url, token).request(method, path, json=json, params=params,
                                       timeout=timeout, who=who)


def read_json(path: str, shape: str) -> dict:
    """A JSON object from a file (`-` for standard input); `shape` says what is expected."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise fail(f"{path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise fail(f"{path}: {shape}")
    return data


def invalid(what: str, exc: ValidationError) -> typer.Exit:
    """A pydantic error, one line per field, in the API's words (spe.errors)."""
    return fail(str(client_invalid(what, exc)))
