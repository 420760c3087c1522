"""Who is calling: bearer JWTs checked against a JWKS (OIDC-compatible)."""

from spe.identity.issuer import DemoIssuer
from spe.identity.principal import ROLES, Principal
from spe.identity.verify import JwksSource, TokenVerifier
from spe.identity.wiring import demo_issuer, make_verifier

__all__ = [
    "ROLES",
    "DemoIssuer",
    "JwksSource",
    "Principal",
    "TokenVerifier",
    "demo_issuer",
    "make_verifier",
]
