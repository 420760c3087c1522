"""The central service's own bearer tokens for its machine-to-machine calls (the scheduled
harvest of the nodes' descriptors): an OAuth 2.0 client credentials grant (RFC 6749
section 4.4) at the identity provider, never a user's token.

A token is cached and asked for again before it expires (and at once when a callee
refuses it: `invalidate`), so the calls go on past any token's lifetime. The provider's
token endpoint comes from its discovery document (OpenID Connect Discovery 1.0) unless
it is named.
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import Protocol

import httpx

from spe.errors import SPEError

#: A token is renewed this long before it expires (at most half its lifetime before), so
#: one a callee receives is not expiring on the way.
RENEW_BEFORE_SECONDS = 60.0
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class TokenUnavailable(SPEError):
    """No token could be had from the identity provider (down, or refusing the client)."""

    status_code = 503
    error = "identity_provider_unavailable"


class BearerSource(Protocol):
    """Where a machine-to-machine caller gets its bearer token."""

    def token(self) -> str: ...

    def invalidate(self, token: str) -> None:
        """`token` was refused by a callee: the next `token()` is a new one."""


class ClientCredentials:
    """Tokens of the client `client_id` from the provider of `issuer`."""

    def __init__(self, *, issuer: str, client_id: str, client_secret: str,
                 token_url: str = "", scope: str = "",
                 verify: ssl.SSLContext | str | bool = True) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self._token_url = token_url
        self.scope = scope
        self.verify = verify
        self._token = ""
        self._renew_at = 0.0
        self._lock = threading.Lock()
        #: How many tokens were obtained (for tests and the logs).
        self.obtained = 0

    def token(self) -> str:
        with self._lock:
            if not self._token or time.monotonic() >= self._renew_at:
                self._obtain()
            return self._token

    def invalidate(self, token: str) -> None:
        with self._lock:
            if token == self._token:
                self._token = ""

    def _obtain(self) -> None:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        try:
            with httpx.Client(timeout=TIMEOUT, verify=self.verify) as http:
                url = self._token_url or self._discover(http)
                resp = http.post(url, data=form, auth=(self.client_id, self._secret),
                                 headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise TokenUnavailable(
                f"the identity provider at {self.issuer} is unreachable for client "
                f"{self.client_id!r}: {exc.__class__.__name__}: {exc}") from exc
        body = _json(resp)
        if resp.status_code != 200 or not isinstance(body.get("access_token"), str):
            why = body.get("error_description") or body.get("error") or f"HTTP {resp.status_code}"
            raise TokenUnavailable(f"the identity provider refused client {self.client_id!r} "
                                   f"a token: {why}")
        try:
            lifetime = float(body.get("expires_in", RENEW_BEFORE_SECONDS * 2))
        except (TypeError, ValueError):
            lifetime = RENEW_BEFORE_SECONDS * 2
        self._token = body["access_token"]
        self._renew_at = time.monotonic() + lifetime - min(RENEW_BEFORE_SECONDS, lifetime / 2)
        self.obtained += 1

    def _discover(self, http: httpx.Client) -> str:
        url = f"{self.issuer}/.well-known/openid-configuration"
        resp = http.get(url)
        endpoint = _json(resp).get("token_endpoint")
        if resp.status_code != 200 or not isinstance(endpoint, str):
            raise TokenUnavailable(f"{url} names no token_endpoint (HTTP {resp.status_code}); "
                                   "set SPE_OIDC_TOKEN_URL")
        self._token_url = endpoint
        return endpoint


class StaticToken:
    """One token given by the operator (deprecated: it stops working when it expires)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        return self._token

    def invalidate(self, token: str) -> None:
        """Nothing to renew it with: the callee goes on refusing it."""


def _json(resp: httpx.Response) -> dict:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


__all__ = ["BearerSource", "ClientCredentials", "StaticToken", "TokenUnavailable"]
