"""Where the hub is, the bearer token, and one HTTP call with its failures translated into
`spe.client.errors` (no httpx exception leaves this module)."""

from __future__ import annotations

import os
import ssl
from typing import Any

import httpx

from spe.client.errors import ClientError, NotConfigured, Refused, Unreachable, detail_of


def resolve_hub(hub: str | None) -> str:
    """`hub`, else SPE_HUB_URL, else SPE_OIDC_ISSUER (the central service's own URL), as the
    CLI resolves --hub."""
    if hub or os.environ.get("SPE_HUB_URL"):
        return (hub or os.environ["SPE_HUB_URL"]).rstrip("/")
    from spe.settings import Settings

    try:
        return Settings().oidc_issuer.rstrip("/")
    except ValueError as exc:  # pydantic's ValidationError, InsecureConfiguration
        raise NotConfigured("hub", f"the SPE_* configuration is not usable: {exc}") from None


NO_TOKEN = "no bearer token: give token=... or set SPE_TOKEN"


def resolve_token(token: str | None, required: bool = True) -> str | None:
    """`token`, else SPE_TOKEN (else None, when not `required`: the catalogue is public)."""
    token = token or os.environ.get("SPE_TOKEN")
    if not token and required:
        raise NotConfigured("token", NO_TOKEN)
    return token or None


def tls_verify(ca_bundle: str | os.PathLike | None) -> ssl.SSLContext | bool:
    """The CA bundle to check the hub's certificate against: `ca_bundle`, else
    SSL_CERT_FILE (which httpx would read too, but a missing file would then surface as a
    bare OSError on the first call), else the system's."""
    path = ca_bundle or os.environ.get("SSL_CERT_FILE")
    if not path:
        return True
    try:
        return ssl.create_default_context(cafile=os.fspath(path))
    except (OSError, ssl.SSLError) as exc:
        where = "ca_bundle" if ca_bundle else "SSL_CERT_FILE"
        raise NotConfigured("ca_bundle", f"{where} {path}: not a readable PEM CA bundle "
                                         f"({exc})") from None


class Hub:
    """Calls to one hub as one user. Every failure is a `ClientError`."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 60.0,
                 verify: ssl.SSLContext | bool = True) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.verify = verify

    def request(self, method: str, path: str, *, json: Any = None, params: Any = None,
                timeout: float | None = None, who: str = "the hub",
                auth: bool = True, content: bytes | None = None,
                content_type: str | None = None) -> httpx.Response:
        """One call; a refusal is `Refused` (status and the API's reason), no answer is
        `Unreachable`."""
        if auth and not self.token:
            raise NotConfigured("token", NO_TOKEN)
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        if content_type:
            headers["Content-Type"] = content_type
        # httpx.request, looked up at call time, so one stub stands in for the hub in tests.
        kwargs: dict[str, Any] = {"json": json, "params": params, "headers": headers,
                                  "timeout": self.timeout if timeout is None else timeout}
        if content is not None:  # a body that is not JSON (a Five Safes RO-Crate's ZIP)
            kwargs["content"] = content
        if self.verify is not True:
            kwargs["verify"] = self.verify
        try:
            resp = httpx.request(method, self.url + path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unreachable(self.url, exc) from None
        if not resp.is_success:
            raise Refused(resp.status_code, detail_of(resp), who)
        return resp

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call whose answer is JSON."""
        resp = self.request(method, path, **kwargs)
        try:
            return resp.json()
        except ValueError:
            raise ClientError(f"the hub answered HTTP {resp.status_code} with no JSON",
                              resp.status_code) from None
