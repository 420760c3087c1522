"""HTTPS at the central service: how `spe serve central` listens (its own certificate, or
a TLS-terminating proxy it trusts, or loopback only) and the HSTS header on HTTPS answers.

Production does not serve bearer tokens in plain HTTP to the network: off loopback it needs
a certificate (SPE_TLS_CERT_FILE / SPE_TLS_KEY_FILE, or `--tls-cert` / `--tls-key`) or a
proxy named by SPE_FORWARDED_ALLOW_IPS with SPE_TLS_TERMINATED_BY_PROXY=true.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spe.settings import InsecureConfiguration, Settings

__all__ = ["HSTS", "StrictTransportSecurity", "central_listen_options", "is_loopback"]

# One year, the value HSTS preload lists ask for; no includeSubDomains: the institution's
# other hosts under the same domain are not ours to pin to HTTPS.
HSTS = "max-age=31536000"
# uvicorn's own default: a proxy on this machine is believed about the client and scheme.
LOCAL_PROXY = "127.0.0.1"


class PlainHttpRefused(InsecureConfiguration):
    """Production would serve plain HTTP to the network."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def central_listen_options(settings: Settings, host: str, *, tls_cert: Path | None = None,
                           tls_key: Path | None = None) -> dict:
    """uvicorn's keyword arguments for the central service on `host`: its certificate
    (checked to load now, so a bad file is one line, not a traceback at the first
    handshake) and whom it believes X-Forwarded-Proto/-For from. Raises
    InsecureConfiguration with the reason."""
    cert = tls_cert or settings.tls_cert_file
    key = tls_key or settings.tls_key_file
    if bool(cert) != bool(key):
        raise InsecureConfiguration(
            "a TLS certificate needs its key and a key its certificate: give both "
            "--tls-cert and --tls-key (SPE_TLS_CERT_FILE and SPE_TLS_KEY_FILE)")
    options: dict = {"proxy_headers": True,
                     "forwarded_allow_ips": settings.forwarded_allow_ips or LOCAL_PROXY}
    if cert and key:
        _check_loads(Path(cert), Path(key), production=settings.environment == "production")
        options.update(ssl_certfile=str(cert), ssl_keyfile=str(key))
    elif (settings.environment == "production" and not is_loopback(host)
          and not settings.tls_terminated_by_proxy):
        raise PlainHttpRefused(
            f"production does not serve plain HTTP on {host}: serve HTTPS with --tls-cert "
            "and --tls-key (SPE_TLS_CERT_FILE, SPE_TLS_KEY_FILE), or bind 127.0.0.1 behind "
            "a TLS proxy (deploy/proxy/), or set SPE_TLS_TERMINATED_BY_PROXY=true and "
            "SPE_FORWARDED_ALLOW_IPS to the proxy's address")
    return options


def _check_loads(cert: Path, key: Path, *, production: bool) -> None:
    for name, path in (("certificate", cert), ("key", key)):
        if not path.is_file():
            raise InsecureConfiguration(f"the TLS {name} {path} does not exist or is not a file")
    if production and key.stat().st_mode & 0o004:
        raise InsecureConfiguration(
            f"the TLS key {key} can be read by every user of this machine; chmod o-r it "
            "(0600, or 0640 for a group the service is in)")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise InsecureConfiguration(
            f"cannot load the TLS certificate {cert} with the key {key}: "
            f"{getattr(exc, 'reason', None) or exc}") from exc


class StrictTransportSecurity:
    """Adds Strict-Transport-Security to every answer of a request that came over HTTPS:
    uvicorn's own TLS, or a trusted proxy's X-Forwarded-Proto (uvicorn's proxy headers set
    the scheme). Over plain HTTP the header means nothing (RFC 6797 section 7.2)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"strict-transport-security"]
                headers.append((b"strict-transport-security", HSTS.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_hsts)
