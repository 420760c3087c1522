"""The context the hub signs onto every query it sends a node: who asks, in which tier,
under which permit, for which query (by its hash), until when, for which node.

A node answers nothing that does not carry a valid context: signed (ES256) with the hub's
key, whose certificate the node holds from the federation's PKI (spe/pki.py); addressed to
this node; not expired; and naming the very query it came with, so a context cannot be
replayed with another query or at another node. A node also answers each context once
(its `jti`, gateway/node/trust) and refuses the contexts of users suspended at the centre
(`sus`: the epoch of the suspension list the hub signed it under, spe/wire/suspensions).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Literal

from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from pydantic import BaseModel, Field, ValidationError

from spe.errors import NotAuthenticated

#: The header the context travels in, on every call from the hub to a node.
CONTEXT_HEADER = "X-SPE-Hub-Context"
ALGORITHM = "ES256"
ISSUER = "spe-hub"
#: Long enough for the slowest node's timeout, short enough that a leaked context is stale.
TTL_SECONDS = 60

Tier = Literal["statistics", "permit"]


class HubContext(BaseModel):
    sub: str  # the user, as the hub authenticated them ("issuer|subject")
    roles: list[str]
    tier: Tier
    permit: str | None = None
    qh: str  # SHA-256 of the canonical query (spe.wire.query.Query.digest)
    aud: str  # the node this context is for
    exp: int
    iat: int
    jti: str = Field(min_length=1, max_length=64)
    sus: int = Field(default=0, ge=0, le=2**62)  # the hub's suspension-list epoch
    # The institution the user acts for (an approver's), as the hub's identity provider
    # said; a node checks it is itself before letting an approver review code there.
    inst: str | None = Field(default=None, max_length=64)


def ec_key(key) -> ECKey:
    """A joserfc key from a cryptography key object (private or public)."""
    if hasattr(key, "private_bytes"):
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    else:
        pem = key.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return ECKey.import_key(pem)


class ContextSigner:
    """The hub's side: one signer per hub private key.

    `epoch_of(user)`, set by the central app, refuses (raises) for a suspended user and
    otherwise gives the suspension list's epoch, which the context carries."""

    def __init__(self, private_key, epoch_of: Callable[[str], int] | None = None) -> None:
        self._key = ec_key(private_key)
        self.epoch_of = epoch_of

    def sign(self, *, user: str, roles: list[str], tier: Tier, query_hash: str, node_id: str,
             permit: str | None = None, ttl_seconds: int = TTL_SECONDS,
             institution: str | None = None) -> str:
        return self.sign_each([node_id], user=user, roles=roles, tier=tier,
                              query_hash=query_hash, permit=permit, ttl_seconds=ttl_seconds,
                              institution=institution)[node_id]

    def sign_each(self, node_ids: list[str], *, user: str, roles: list[str], tier: Tier,
                  query_hash: str, permit: str | None = None, ttl_seconds: int = TTL_SECONDS,
                  institution: str | None = None) -> dict[str, str]:
        """A context for each node (node -> context), all under one reading of the
        suspension list: `epoch_of` reads the database, so a query asking many nodes
        checks the user once, not once per node (and off the event loop, by the caller)."""
        epoch = self.epoch_of(user) if self.epoch_of is not None else 0
        now = int(time.time())
        signed = {}
        for node_id in node_ids:
            claims = {"sus": epoch, "iss": ISSUER, "sub": user, "roles": list(roles),
                      "tier": tier, "permit": permit, "qh": query_hash, "aud": node_id,
                      "iat": now, "exp": now + ttl_seconds, "jti": uuid.uuid4().hex}
            if institution is not None:
                claims["inst"] = institution
            signed[node_id] = jwt.encode({"alg": ALGORITHM, "typ": "JWT"}, claims, self._key)
        return signed


class ContextVerifier:
    """A node's side: accepts only contexts signed by its hub's key, for itself."""

    def __init__(self, hub_public_key, node_id: str) -> None:
        self._key = ec_key(hub_public_key)
        self.node_id = node_id

    def verify(self, token: str | None, *, query_hash: str | None) -> HubContext:
        """`query_hash` None: what the context names is checked by the caller (the node's
        door binds it to the request: gateway/node/trust/door.py)."""
        if not token:
            raise NotAuthenticated("no hub context: nodes answer queries from their hub only")
        try:
            decoded = jwt.decode(token, self._key, algorithms=[ALGORITHM])
        except (JoseError, ValueError) as exc:
            raise NotAuthenticated("hub context not signed by this node's hub") from exc
        claims = decoded.claims
        try:
            ctx = HubContext.model_validate(claims)
        except ValidationError as exc:
            raise NotAuthenticated("hub context is incomplete") from exc
        if claims.get("iss") != ISSUER:
            raise NotAuthenticated("hub context from an unknown issuer")
        if ctx.aud != self.node_id:
            raise NotAuthenticated(f"hub context is for {ctx.aud}, not {self.node_id}")
        if ctx.exp < time.time():
            raise NotAuthenticated("hub context expired")
        if query_hash is not None and ctx.qh != query_hash:
            raise NotAuthenticated("hub context names another query")
        return ctx


__all__ = ["CONTEXT_HEADER", "ContextSigner", "ContextVerifier", "HubContext", "Tier"]
