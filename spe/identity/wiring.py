"""Choosing the token source from settings: an external OIDC provider, or the demo issuer."""

from __future__ import annotations

import logging
import ssl

from spe.identity.client_credentials import (
    BearerSource,
    ClientCredentials,
    ClientKeyError,
    PrivateKeyJwt,
    StaticToken,
)
from spe.identity.issuer import DemoIssuer
from spe.identity.verify import JwksSource, TokenVerifier
from spe.settings import InsecureConfiguration, Settings

log = logging.getLogger("spe.identity")


def demo_issuer(settings: Settings, *, create: bool = True) -> DemoIssuer:
    """The demo issuer of `settings.data_dir`; `create=False` (a CLI client) refuses with
    IssuerKeyMissing rather than making a key no service publishes."""
    return DemoIssuer(settings.issuer_key_path, settings.oidc_issuer, settings.oidc_audience,
                      create=create)


def provider_tls(settings: Settings) -> ssl.SSLContext | bool:
    """What the provider's TLS certificate is checked against: SPE_OIDC_CA_FILE or the
    system's store."""
    if settings.oidc_ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(settings.oidc_ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise InsecureConfiguration(
            f"SPE_OIDC_CA_FILE {settings.oidc_ca_file}: not a readable PEM CA bundle "
            f"({exc})") from exc


def make_verifier(settings: Settings, issuer: DemoIssuer | None = None) -> TokenVerifier:
    if settings.oidc_jwks_url:
        jwks = JwksSource(url=settings.oidc_jwks_url,
                          cache_seconds=settings.oidc_jwks_cache_seconds,
                          min_refresh_seconds=settings.oidc_jwks_min_refresh_seconds,
                          verify=provider_tls(settings))
    else:
        issuer = issuer or demo_issuer(settings)
        jwks = JwksSource(static=issuer.jwks)
    return TokenVerifier(jwks, issuer=settings.oidc_issuer, audience=settings.oidc_audience,
                         leeway_seconds=settings.oidc_clock_skew_seconds,
                         entitlement_roles=settings.oidc_entitlement_roles)


class MintedToken:
    """Development only: the demo issuer mints the harvester a fresh token each time."""

    def __init__(self, issuer: DemoIssuer, user: str, roles: list[str]) -> None:
        self.issuer, self.user, self.roles = issuer, user, roles

    def token(self) -> str:
        return self.issuer.mint(self.user, self.roles)

    def invalidate(self, token: str) -> None:
        """Each token is new already."""


def machine_token(settings: Settings, issuer: DemoIssuer | None,
                  user: str = "catalogue-harvester") -> BearerSource | None:
    """The central service's bearer tokens for its own calls: client credentials at the
    provider; the deprecated static token; in development, the demo issuer's; or None."""
    if settings.oidc_client_id and (settings.oidc_client_secret is not None
                                    or settings.oidc_client_key_file is not None):
        key = None
        if settings.oidc_client_key_file is not None:
            try:
                key = PrivateKeyJwt(settings.oidc_client_key_file, settings.oidc_client_key_id)
            except ClientKeyError as exc:
                raise InsecureConfiguration(f"SPE_OIDC_CLIENT_KEY_FILE: {exc}") from exc
        secret = settings.oidc_client_secret
        return ClientCredentials(issuer=settings.oidc_issuer,
                                 client_id=settings.oidc_client_id,
                                 client_secret="" if secret is None else secret.get_secret_value(),
                                 client_key=key, token_url=settings.oidc_token_url,
                                 verify=provider_tls(settings))
    if settings.catalogue_harvest_token is not None:
        log.warning("SPE_CATALOGUE_HARVEST_TOKEN is deprecated (refused in production): the "
                    "harvest stops when that token expires; set SPE_OIDC_CLIENT_ID and "
                    "SPE_OIDC_CLIENT_SECRET instead")
        return StaticToken(settings.catalogue_harvest_token.get_secret_value())
    if issuer is not None and settings.environment == "development":
        return MintedToken(issuer, user, ["hdab"])
    return None
