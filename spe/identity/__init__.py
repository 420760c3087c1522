"""Who is calling: bearer JWTs checked against a JWKS (OIDC-compatible); and the central
service's own tokens for its machine-to-machine calls (client credentials)."""

from spe.identity.client_credentials import (
    BearerSource,
    ClientCredentials,
    PrivateKeyJwt,
    StaticToken,
    TokenUnavailable,
)
from spe.identity.issuer import DemoIssuer, IssuerKeyMissing
from spe.identity.principal import ROLES, Principal
from spe.identity.verify import IdentityProviderUnavailable, JwksSource, TokenVerifier
from spe.identity.wiring import demo_issuer, machine_token, make_verifier

__all__ = [
    "ROLES",
    "BearerSource",
    "ClientCredentials",
    "DemoIssuer",
    "IdentityProviderUnavailable",
    "IssuerKeyMissing",
    "JwksSource",
    "Principal",
    "PrivateKeyJwt",
    "StaticToken",
    "TokenUnavailable",
    "TokenVerifier",
    "demo_issuer",
    "machine_token",
    "make_verifier",
]
