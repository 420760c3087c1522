"""Which certificate is at the other end of a request's TLS connection.

uvicorn does not hand the client certificate to the app (ASGI's "tls" extension is
optional and uvicorn leaves it out), so a node could not tell the hub from another member
of the federation once the handshake passed. `PeerCertProtocol`, uvicorn's HTTP/1.1
protocol with one addition, puts it in every request's scope as that extension names it:
`scope["extensions"]["tls"]["client_cert_chain"]` (PEM), with its SHA-256 fingerprint
beside it. `spe.pki.server_ssl_options` serves with it.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["FINGERPRINT_KEY", "PeerCertProtocol", "fingerprint", "peer_fingerprint"]

#: Our own key in the extension: the peer certificate's SHA-256 (hex), computed once per
#: connection rather than from the PEM on every request.
FINGERPRINT_KEY = "client_cert_sha256"


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


class PeerCertProtocol(H11Protocol):
    """HTTP/1.1 over TLS, each request's scope naming the client certificate.

    `revoked` (set by spe.pki.server_ssl_options): whether a certificate (DER) is on the
    current revocation list; such a connection is dropped right after the handshake, or
    before a request of a kept-alive connection once the list names it."""

    revoked: Callable[[bytes], bool] | None = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        revoked = type(self).revoked
        if der and revoked is not None and revoked(der):
            transport.abort()
            return
        tls = {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
               "client_cert_name": None, "client_cert_error": None,
               FINGERPRINT_KEY: fingerprint(der) if der else None}
        app = self.app

        async def with_peer(scope, receive, send):
            if der and revoked is not None and revoked(der):
                transport.abort()
                return
            if scope["type"] in ("http", "websocket"):
                scope.setdefault("extensions", {})["tls"] = dict(tls)
            await app(scope, receive, send)

        self.app = with_peer


def peer_fingerprint(scope: dict) -> str | None:
    """The SHA-256 of the request's client certificate; None without TLS or certificate."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    value = tls.get(FINGERPRINT_KEY)
    return value if isinstance(value, str) else None
