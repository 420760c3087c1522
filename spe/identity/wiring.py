"""Choosing the token source from settings: an external OIDC provider, or the demo issuer."""

from __future__ import annotations

from spe.identity.issuer import DemoIssuer
from spe.identity.verify import JwksSource, TokenVerifier
from spe.settings import Settings


def demo_issuer(settings: Settings) -> DemoIssuer:
    return DemoIssuer(settings.issuer_key_path, settings.oidc_issuer, settings.oidc_audience)


def make_verifier(settings: Settings, issuer: DemoIssuer | None = None) -> TokenVerifier:
    if settings.oidc_jwks_url:
        jwks = JwksSource(url=settings.oidc_jwks_url)
    else:
        issuer = issuer or demo_issuer(settings)
        jwks = JwksSource(static=issuer.jwks)
    return TokenVerifier(jwks, issuer=settings.oidc_issuer, audience=settings.oidc_audience)
