"""Checking a bearer token: signature against the issuer's JWKS, then iss, aud, exp, nbf."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
from joserfc import errors, jwt
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from spe.errors import NotAuthenticated
from spe.identity.principal import ROLES, Principal

ACCEPTED_ALGORITHMS = ["ES256", "RS256", "PS256"]
LEEWAY_SECONDS = 30


class JwksSource:
    """The issuer's public keys: fixed (demo) or fetched from a JWKS URL and cached."""

    def __init__(
        self,
        *,
        url: str = "",
        static: Callable[[], dict] | None = None,
        ttl_seconds: int = 300,
    ) -> None:
        if not url and static is None:
            raise ValueError("a JWKS source needs a URL or static keys")
        self.url = url
        self.static = static
        self.ttl = ttl_seconds
        self._cached: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def keys(self, *, refresh: bool = False) -> KeySet:
        if self.static is not None:
            return KeySet.import_key_set(self.static())
        with self._lock:
            stale = time.monotonic() - self._fetched_at > self.ttl
            if self._cached is None or stale or refresh:
                try:
                    resp = httpx.get(self.url, timeout=5.0)
                    resp.raise_for_status()
                    self._cached = KeySet.import_key_set(resp.json())
                except (httpx.HTTPError, ValueError) as exc:
                    if self._cached is None:
                        raise NotAuthenticated(
                            "the identity provider's keys could not be fetched"
                        ) from exc
                self._fetched_at = time.monotonic()
            return self._cached


class TokenVerifier:
    def __init__(self, jwks: JwksSource, *, issuer: str, audience: str) -> None:
        self.jwks = jwks
        self.registry = JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS,
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
            roles=_roles(claims),
            institution=claims.get("institution"),
            name=claims.get("name") or claims.get("preferred_username"),
            email=claims.get("email") if isinstance(claims.get("email"), str) else None,
        )


def _roles(claims: dict) -> tuple[str, ...]:
    """Our `roles` claim, or Keycloak's `realm_access.roles`; unknown roles are dropped."""
    raw = claims.get("roles")
    if raw is None:
        raw = (claims.get("realm_access") or {}).get("roles", [])
    if isinstance(raw, str):
        raw = raw.split()
    return tuple(r for r in raw if r in ROLES)
