"""The demo's own token issuer: an EC key kept in the data directory, published as a JWKS.

In production the central service does not issue tokens; `SPE_OIDC_ISSUER` and
`SPE_OIDC_JWKS_URL` name an external provider (Keycloak, LS-AAI) instead.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import ECKey

from spe.identity.principal import ROLES

ALGORITHM = "ES256"


class IssuerKeyMissing(Exception):
    """No issuer key where one was expected, and none may be made here (`spe token`)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"no demo issuer key at {path}")
        self.path = path


def check_claims(roles: list[str], institution: str | None) -> None:
    """ValueError, in words for the CLI, when the roles cannot make a usable token."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown role(s) {unknown}; roles are {', '.join(ROLES)}")
    if "approver" in roles and not institution:
        raise ValueError("an approver acts for one institution: give --institution")


class DemoIssuer:
    def __init__(self, key_path: Path, issuer: str, audience: str, *,
                 create: bool = True) -> None:
        """`create`: make the key when there is none (the service that publishes it);
        otherwise IssuerKeyMissing (a client must sign with the key the service publishes,
        never with one of its own)."""
        self.issuer = issuer
        self.audience = audience
        if not create and not key_path.exists():
            raise IssuerKeyMissing(key_path)
        self.key = self._load_or_create(key_path)

    @staticmethod
    def _load_or_create(path: Path) -> ECKey:
        if path.exists():
            return ECKey.import_key(json.loads(path.read_text()))
        path.parent.mkdir(parents=True, exist_ok=True)
        key = ECKey.generate_key(
            "P-256",
            parameters={"kid": uuid.uuid4().hex[:16], "use": "sig", "alg": ALGORITHM},
            private=True,
        )
        # Written 0600 from the start: the private key never sits world-readable.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(key.as_dict(private=True), fh)
        return key

    def jwks(self) -> dict:
        return {"keys": [self.key.as_dict(private=False)]}

    def mint(
        self,
        user: str,
        roles: list[str],
        *,
        institution: str | None = None,
        ttl_seconds: int = 3600,
        name: str | None = None,
    ) -> str:
        check_claims(roles, institution)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "jti": uuid.uuid4().hex,
            "roles": roles,
            "name": name or user,
            # Demo users have addresses at a reserved domain (RFC 2606): nothing is sent
            # anywhere real even with an SMTP server configured.
            "email": f"{user}@demo.invalid",
        }
        if institution:
            claims["institution"] = institution
        header = {"alg": ALGORITHM, "kid": self.key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self.key)
