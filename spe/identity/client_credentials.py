"""The central service's own bearer tokens for its machine-to-machine calls (the scheduled
harvest of the nodes' descriptors): an OAuth 2.0 client credentials grant (RFC 6749
section 4.4) at the identity provider, never a user's token.

The client authenticates with its secret (client_secret_basic) or, without a shared secret,
with a JWT signed by its private key (private_key_jwt, RFC 7523 section 2.2 as OpenID
Connect Core section 9 profiles it): the provider holds only the public key.

A token is cached and asked for again before it expires (and at once when a callee
refuses it: `invalidate`), so the calls go on past any token's lifetime. The provider's
token endpoint comes from its discovery document (OpenID Connect Discovery 1.0) unless
it is named.
"""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import Protocol

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from spe.errors import SPEError

#: A token is renewed this long before it expires (at most half its lifetime before), so
#: one a callee receives is not expiring on the way.
RENEW_BEFORE_SECONDS = 60.0
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class TokenUnavailable(SPEError):
    """No token could be had from the identity provider (down, or refusing the client)."""

    status_code = 503
    error = "identity_provider_unavailable"


class BearerSource(Protocol):
    """Where a machine-to-machine caller gets its bearer token."""

    def token(self) -> str: ...

    def invalidate(self, token: str) -> None:
        """`token` was refused by a callee: the next `token()` is a new one."""


class ClientKeyError(ValueError):
    """The client's private key file cannot sign client assertions."""


class PrivateKeyJwt:
    """private_key_jwt: a short-lived assertion signed with the client's key (ES256 for an
    EC P-256 key, RS256 for RSA), `iss` and `sub` the client, `aud` the token endpoint."""

    LIFETIME_SECONDS = 60

    def __init__(self, key_file: Path, key_id: str = "") -> None:
        try:
            pem = Path(key_file).read_bytes()
            key = serialization.load_pem_private_key(pem, password=None)
        except OSError as exc:
            raise ClientKeyError(f"cannot read {key_file}: {exc.strerror or exc}") from exc
        except (ValueError, TypeError) as exc:
            raise ClientKeyError(f"{key_file} is not an unencrypted PEM private key") from exc
        if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
            self.key, self.alg = ECKey.import_key(pem), "ES256"
        elif isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
            self.key, self.alg = RSAKey.import_key(pem), "RS256"
        else:
            raise ClientKeyError(f"{key_file}: an EC P-256 or an RSA key of 2048 bits or more "
                                 "signs client assertions")
        # The key id the provider knows the public key by (RFC 7638 thumbprint by default).
        self.kid = key_id or self.key.thumbprint()

    def public_jwk(self) -> dict:
        return {**self.key.as_dict(private=False), "kid": self.kid, "use": "sig",
                "alg": self.alg}

    def assertion(self, client_id: str, token_url: str) -> str:
        now = int(time.time())
        return jwt.encode({"alg": self.alg, "kid": self.kid, "typ": "JWT"}, {
            "iss": client_id, "sub": client_id, "aud": token_url, "jti": uuid.uuid4().hex,
            "iat": now, "exp": now + self.LIFETIME_SECONDS}, self.key)


class ClientCredentials:
    """Tokens of the client `client_id` from the provider of `issuer`, authenticated by
    `client_secret` or by assertions `client_key` signs."""

    def __init__(self, *, issuer: str, client_id: str, client_secret: str = "",
                 client_key: PrivateKeyJwt | None = None,
                 token_url: str = "", scope: str = "",
                 verify: ssl.SSLContext | str | bool = True) -> None:
        if not client_secret and client_key is None:
            raise ValueError("a client authenticates with a secret or a private key")
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self._key = client_key
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
                auth = None
                if self._key is not None:
                    form |= {"client_id": self.client_id,
                             "client_assertion_type": JWT_BEARER,
                             "client_assertion": self._key.assertion(self.client_id, url)}
                else:
                    auth = (self.client_id, self._secret)
                resp = http.post(url, data=form, auth=auth,
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


__all__ = ["BearerSource", "ClientCredentials", "ClientKeyError", "PrivateKeyJwt",
           "StaticToken", "TokenUnavailable"]
