"""An issued data permit as the nodes receive it: a document the hub signs (ES256, the
hub's key of the federation PKI, as for query contexts), pushed to every node holding one
of its datasets, and pushed again on every change of status (suspension, revocation) so a
node's next decision already knows.

The node keeps the latest document per permit (highest `seq`) and decides with it; an
older document never replaces a newer one, so a revocation cannot be undone by replaying
the issuing document.
"""

from __future__ import annotations

import hashlib
import time
from datetime import date

from joserfc import jwt
from joserfc.errors import JoseError
from pydantic import BaseModel, ValidationError

from spe.errors import NotAuthenticated
from spe.wire.context import ALGORITHM, ec_key

DOCUMENT_TYPE = "spe-permit"


class PermitDocument(BaseModel):
    typ: str = DOCUMENT_TYPE
    pid: str  # the permit's public id
    seq: int  # increases with every document the hub issues for this permit
    status: str  # issued | suspended | revoked (expiry follows from the dates)
    members: list[str]  # user ids allowed to use it
    datasets: dict[str, list[str]]  # node id -> catalogue identifiers held there
    form: str  # anonymised | pseudonymised
    purpose: str
    start: date
    end: date
    iat: int

    def usable_on(self, day: date) -> bool:
        return self.status == "issued" and self.start <= day <= self.end


def sign_document(document: PermitDocument, private_key) -> str:
    return jwt.encode({"alg": ALGORITHM, "typ": "JWT"}, document.model_dump(mode="json"),
                      ec_key(private_key))


def verify_document(token: str, hub_public_key) -> PermitDocument:
    try:
        claims = jwt.decode(token, ec_key(hub_public_key), algorithms=[ALGORITHM]).claims
        doc = PermitDocument.model_validate(claims)
    except (JoseError, ValueError, ValidationError) as exc:
        raise NotAuthenticated("permit document not signed by this node's hub") from exc
    if doc.typ != DOCUMENT_TYPE:
        raise NotAuthenticated("not a permit document")
    return doc


def document_hash(token: str) -> str:
    """What the push's hub context names (its `qh`): the SHA-256 of the signed document."""
    return hashlib.sha256(token.encode()).hexdigest()


def now() -> int:
    return int(time.time())


__all__ = ["PermitDocument", "document_hash", "now", "sign_document", "verify_document"]
