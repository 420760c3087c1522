"""Checking a bearer token: signature against the issuer's JWKS, then iss, aud, exp, nbf."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import httpx
from joserfc import errors, jwt
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from spe.errors import NotAuthenticated
from spe.identity.principal import ROLES, Principal

ACCEPTED_ALGORITHMS = ["ES256", "RS256", "PS256"]
LEEWAY_SECONDS = 30
#: Keys last fetched longer ago than this are not used (the provider may have revoked one).
KEYS_CACHE_SECONDS = 600
#: The least time between two fetches the keys' cache does not ask for itself: a token
#: naming a key nobody knows (a rotation, or anyone's made-up `kid`), a provider that is down.
MIN_REFRESH_SECONDS = 10
FETCH_TIMEOUT = httpx.Timeout(5.0)


class IdentityProviderUnavailable(NotAuthenticated):
    """The provider's keys could not be fetched and none recent enough are held: no token
    can be checked. A 503 (the caller's token may well be good), audited like any refusal
    of authentication."""

    status_code = 503
    error = "identity_provider_unavailable"


class JwksSource:
    """The issuer's public keys: fixed (demo) or fetched from a JWKS URL and cached.

    Fetched keys are refreshed once half of `cache_seconds` has passed, and used for at most
    `cache_seconds` after their last successful fetch: a provider that is down is ridden out
    for that long, never for ever. A token signed with a key the cache does not hold makes
    it fetch again (the provider rotated its keys), at most once per `min_refresh_seconds`.
    """

    def __init__(
        self,
        *,
        url: str = "",
        static: Callable[[], dict] | None = None,
        cache_seconds: float = KEYS_CACHE_SECONDS,
        min_refresh_seconds: float = MIN_REFRESH_SECONDS,
        verify: ssl.SSLContext | str | bool = True,
    ) -> None:
        if not url and static is None:
            raise ValueError("a JWKS source needs a URL or static keys")
        self.url = url
        self.static = static
        self.cache_seconds = cache_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self.verify = verify
        self._cached: KeySet | None = None
        self._fetched_at = 0.0  # the last successful fetch (monotonic)
        self._attempted_at = -float("inf")  # the last fetch, successful or not
        self._failure = ""
        self._lock = threading.Lock()

    def keys(self, *, refresh: bool = False) -> KeySet:
        """The keys; `refresh`: a token names a key not among them (fetched again unless
        that was tried less than `min_refresh_seconds` ago)."""
        if self.static is not None:
            return KeySet.import_key_set(self.static())
        with self._lock:
            now = time.monotonic()
            age = now - self._fetched_at
            due = self._cached is None or age > self.cache_seconds / 2 or refresh
            if due and now - self._attempted_at >= self.min_refresh_seconds:
                self._fetch(now)
            if self._cached is not None and time.monotonic() - self._fetched_at > \
                    self.cache_seconds:
                self._cached = None  # too old to trust: refused until a fetch succeeds
            if self._cached is None:
                raise IdentityProviderUnavailable(
                    f"the identity provider's keys could not be fetched ({self._failure}); "
                    "no token can be checked until they can")
            return self._cached

    def _fetch(self, now: float) -> None:
        self._attempted_at = now
        try:
            resp = httpx.get(self.url, timeout=FETCH_TIMEOUT, verify=self.verify)
            resp.raise_for_status()
            self._cached = KeySet.import_key_set(resp.json())
        except (httpx.HTTPError, ValueError, errors.JoseError) as exc:
            since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._failure = f"{self.url}: {_reason(exc)}, at {since}"
            return
        self._fetched_at = time.monotonic()
        self._failure = ""

    def health(self) -> str:
        """"" when keys are held and fresh enough, else why not (for a readiness check)."""
        try:
            self.keys()
        except NotAuthenticated as exc:
            return exc.detail
        return ""


def _reason(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.HTTPError):
        return f"unreachable ({exc.__class__.__name__}: {exc})"[:300]
    return f"not a JWKS ({exc.__class__.__name__})"


class TokenVerifier:
    def __init__(self, jwks: JwksSource, *, issuer: str, audience: str,
                 leeway_seconds: int = LEEWAY_SECONDS,
                 entitlement_roles: Mapping[str, str] | None = None) -> None:
        self.jwks = jwks
        self.entitlement_roles = dict(entitlement_roles or {})
        self.registry = JWTClaimsRegistry(
            leeway=leeway_seconds,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
        )

    def verify(self, token: str) -> Principal:
        try:
            try:
                decoded = jwt.decode(token, self.jwks.keys(), algorithms=ACCEPTED_ALGORITHMS)
            except errors.InvalidKeyIdError:
                # Key rotation at the provider: fetch once more before refusing.
                decoded = jwt.decode(
                    token, self.jwks.keys(refresh=True), algorithms=ACCEPTED_ALGORITHMS
                )
            self.registry.validate(decoded.claims)
        except errors.ExpiredTokenError as exc:
            raise NotAuthenticated("token expired") from exc
        except errors.BadSignatureError as exc:
            raise NotAuthenticated("token signature is not valid") from exc
        except errors.InvalidKeyIdError as exc:
            raise NotAuthenticated("token signed by a key the issuer does not publish") from exc
        except (errors.InvalidClaimError, errors.MissingClaimError) as exc:
            raise NotAuthenticated(f"token rejected: {exc.description}") from exc
        except (errors.JoseError, ValueError) as exc:
            raise NotAuthenticated("malformed token") from exc
        claims = decoded.claims
        return Principal(
            subject=str(claims["sub"]),
            issuer=str(claims["iss"]),
            roles=_roles(claims, self.entitlement_roles),
            institution=claims.get("institution"),
            name=claims.get("name") or claims.get("preferred_username"),
            email=claims.get("email") if isinstance(claims.get("email"), str) else None,
        )


def _roles(claims: dict, entitlement_roles: Mapping[str, str]) -> tuple[str, ...]:
    """Our `roles` claim, or Keycloak's `realm_access.roles`, and the roles the operator's
    map gives the token's `eduperson_entitlement` values; unknown roles are dropped."""
    raw = claims.get("roles")
    if raw is None:
        raw = (claims.get("realm_access") or {}).get("roles", [])
    roles = [r for r in _strings(raw) if r in ROLES]
    for entitlement in _strings(claims.get("eduperson_entitlement")):
        role = entitlement_roles.get(entitlement)
        if role in ROLES and role not in roles:
            roles.append(role)
    return tuple(roles)


def _strings(raw: object) -> list[str]:
    """A claim's values: a list of strings, or one space-separated string."""
    if isinstance(raw, str):
        return raw.split()
    if isinstance(raw, list):
        return [r for r in raw if isinstance(r, str)]
    return []
