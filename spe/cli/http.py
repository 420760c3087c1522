"""What the CLI commands that talk to the central API share: where the hub is, the bearer
token, one request with clear errors, and reading a JSON file. Exit codes: 2 for bad
input (nothing was sent), 1 for a refusal or an unreachable hub."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import typer
from pydantic import ValidationError
from rich.markup import escape

from spe.cli.progress import console


def fail(message: str, code: int = 2) -> typer.Exit:
    # One line however long: a reason names a URL, which must stay whole.
    console.print("[red]error:[/red]", escape(message), soft_wrap=True)
    return typer.Exit(code)


def hub_url(hub: str | None) -> str:
    """--hub, else SPE_HUB_URL, else SPE_OIDC_ISSUER (the central service's own URL)."""
    if hub or os.environ.get("SPE_HUB_URL"):
        return hub or os.environ["SPE_HUB_URL"]
    from spe.settings import Settings

    try:
        return Settings().oidc_issuer
    except ValueError as exc:  # pydantic's ValidationError, InsecureConfiguration
        raise fail(f"give --hub (or SPE_HUB_URL): the SPE_* configuration is not usable: "
                   f"{exc}") from None


def bearer(token: str | None, role: str = "researcher") -> str:
    """--token, else SPE_TOKEN."""
    token = token or os.environ.get("SPE_TOKEN")
    if not token:
        raise fail(f"give --token (or SPE_TOKEN): a {role}'s bearer token; in the demo, "
                   f"`jq -r .{role} var/demo/tokens.json`")
    return token


def detail_of(resp: httpx.Response) -> str:
    """The API's `detail`: a message, or FastAPI's list of field errors."""
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        return resp.text[:300]
    if isinstance(detail, list):
        from spe.errors import in_words

        return in_words([e if isinstance(e, dict) else {"msg": str(e)} for e in detail])
    return str(detail)


def request(method: str, url: str, path: str, token: str, *, json: Any = None,
            params: Any = None, timeout: float = 60.0, who: str = "the hub") -> httpx.Response:
    """One call to the central API; any failure ends the command with exit 1."""
    try:
        resp = httpx.request(method, url.rstrip("/") + path, json=json, params=params,
                             timeout=timeout, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise fail(unreachable(url, exc), 1) from None
    if not resp.is_success:
        raise fail(f"{who} refused: HTTP {resp.status_code}: {detail_of(resp)}", 1)
    return resp


def unreachable(url: str, exc: httpx.HTTPError) -> str:
    """Why the hub at `url` did not answer, and what to set."""
    from spe.cli.demo_env import source_hint

    point = f"point the CLI at the hub with --hub URL or SPE_HUB_URL; {source_hint()}"
    text = str(exc) or exc.__class__.__name__
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
        return (f"the hub at {url} has a TLS certificate this machine does not trust "
                f"({text}): set SSL_CERT_FILE to the CA bundle (PEM) that signed it")
    if isinstance(exc, httpx.ConnectError):
        return (f"cannot reach the hub at {url} ({text}): no hub is running there; {point}")
    if isinstance(exc, httpx.TimeoutException):
        return f"the hub at {url} did not answer in time ({exc.__class__.__name__})"
    return f"the hub at {url}: {exc.__class__.__name__}: {text}; {point}"


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
    from spe.errors import field_name, human_message

    lines = []
    for e in exc.errors():
        where = field_name(e["loc"])
        message = human_message(e)  # type: ignore[arg-type]
        lines.append(f"  {where}: {message}" if e["loc"] else f"  {message}")
    return fail(f"{what} is not valid:\n" + "\n".join(lines))
