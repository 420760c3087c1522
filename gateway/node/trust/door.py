"""The node's doors: every route but the public ones passes exactly one of them.

- `HubCaller`: the hub's own certificate (pinned at the handshake and checked again here by
  fingerprint) and a context the hub signed for this node; `HubCall.bind` then checks the
  context names this request, was never answered before (single use, remembered in the
  node's database until it expires) and is not a suspended user's. Queries, jobs, permit
  and suspension pushes.
- `OperatorCaller`: the node's own certificate, which only its operator holds, and a bearer
  token the policy door (spe.web.access) allows. The node's admin routes (index summary,
  audit log).
- `TokenCaller`: the hub's or the operator's certificate and a bearer token (descriptors,
  harvested by the central catalogue with the hub's certificate).

Another member of the federation (a compromised node) is refused at the handshake already
(spe.pki.server_ssl_options pins the two certificates); these checks hold also behind a
server that does not. Every refusal is audited in its own transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Header, Request

from gateway.node.trust import repository
from spe.db import session_scope
from spe.errors import Conflict, Forbidden, NotAuthenticated, SPEError
from spe.identity import Principal
from spe.peer import peer_fingerprint
from spe.policy.gate import audit_refusal
from spe.web import authorize
from spe.wire.context import CONTEXT_HEADER, HubContext

HUB, OPERATOR = "hub", "operator"


class ReplayedContext(Conflict):
    error = "context_replayed"


class SuspendedUser(Forbidden):
    error = "user_suspended"


def peers_of(pki_dir: Path | None, node_id: str) -> PeerMap | None:
    """{certificate fingerprint: HUB or OPERATOR} from the PKI folder; None without one."""
    if pki_dir is None:
        return None
    return PeerMap(pki_dir, node_id)


class PeerMap:
    """The fingerprints of hub.crt (HUB) and the node's own certificate (OPERATOR), read
    again when either file changes: a rotated certificate is known without a restart."""

    def __init__(self, pki_dir: Path, node_id: str) -> None:
        self._files = {HUB: Path(pki_dir) / "hub.crt",
                       OPERATOR: Path(pki_dir) / f"{node_id}.crt"}
        self._stamp: tuple | None = None
        self._map: dict[str, str] = {}
        self._load()

    def _stamps(self) -> tuple:
        out = []
        for path in self._files.values():
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def _load(self) -> None:
        from spe.pki import PkiError, certificate_fingerprint

        stamp = self._stamps()
        try:
            self._map = {certificate_fingerprint(path): who
                         for who, path in self._files.items()}
        except PkiError:
            if self._stamp is None:
                raise  # at start: the node does not serve without them
            return  # mid-rotation: keep what was loaded, try again on the next request
        self._stamp = stamp

    def get(self, fingerprint: str | None) -> str | None:
        if self._stamps() != self._stamp:
            self._load()
        return self._map.get(fingerprint) if fingerprint else None


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _refuse(request: Request, exc: SPEError, *, actor: str = "unknown", action: str = "",
            obj: str = "") -> SPEError:
    """`exc`, audited in its own transaction (the request's is rolled back); before a route
    binds a context, as the door's refusal of the route."""
    ctx = request.app.state.ctx
    route = getattr(request.scope.get("route"), "path", request.url.path)
    return audit_refusal(ctx.audit, ctx.sessions, exc, actor=actor, action=action or "door",
                         object=obj or f"{request.method} {route}",
                         details={"client": _client(request)})


def _peer(request: Request, allowed: set[str]) -> None:
    """The request's certificate is one of `allowed` (HUB, OPERATOR)."""
    peers = request.app.state.peers
    if peers is None:
        # No PKI: plain HTTP, nobody's certificate. The hub's routes are refused anyway (no
        # hub key to check its contexts); token routes only in development.
        if HUB in allowed and OPERATOR not in allowed:
            raise _refuse(request, NotAuthenticated(
                "this node has no hub certificate configured (SPE_PKI_DIR): it takes no "
                "calls from a hub"))
        if request.app.state.ctx.settings.environment != "development":
            raise _refuse(request, NotAuthenticated(
                "this node has no PKI (SPE_PKI_DIR): outside development it takes calls "
                "only over mutual TLS"))
        return
    fingerprint = peer_fingerprint(request.scope)
    if fingerprint is None:
        raise _refuse(request, NotAuthenticated("a client certificate is required"))
    who = peers.get(fingerprint)
    if who not in allowed:
        names = " or ".join(sorted("the hub's" if a == HUB else "this node's operator's"
                                   for a in allowed))
        raise _refuse(request, Forbidden(f"this route takes calls with {names} certificate "
                                         "only"))


class HubCall:
    """A context the hub signed for this node, not yet bound to what the request does:
    `bind` is the only way to its claims, so no route acts on an unchecked one."""

    def __init__(self, request: Request, context: HubContext) -> None:
        self._request = request
        self._context = context

    def bind(self, subject: str, *, action: str, obj: str,
             pushed_epoch: int | None = None) -> HubContext:
        """The context, if it names `subject` (the SHA-256 the route computes of what the
        request asks), is used for the first time and is no suspended user's.
        `pushed_epoch`: the request brings a suspension list of that epoch (it is what
        brings this node up to date, so its own list may be older)."""
        request, ctx = self._request, self._context
        app = request.app.state

        def refuse(exc: SPEError) -> SPEError:
            return _refuse(request, exc, actor=ctx.sub, action=action, obj=obj)

        if ctx.qh != subject:
            raise refuse(NotAuthenticated("hub context names another query"))
        with session_scope(app.ctx.sessions) as session:
            fresh = repository.use_context(session, ctx.jti,
                                           datetime.fromtimestamp(ctx.exp, UTC))
            held = repository.suspensions(session)
            epoch, suspended = (0, []) if held is None else (held.epoch, list(held.users))
        if not fresh:
            raise refuse(ReplayedContext("hub context already used: each is answered once"))
        if ctx.sub in suspended:
            raise refuse(SuspendedUser(f"{ctx.sub} is suspended at the centre"))
        if ctx.sus > max(epoch, pushed_epoch or 0):
            # A push this node missed: its list may lack a suspension the hub knows of.
            raise refuse(Conflict(
                f"this node's suspension list (epoch {epoch}) is older than the hub's "
                f"({ctx.sus}); refused until the hub pushes it"))
        return ctx


def hub_caller(request: Request, x_spe_hub_context: Annotated[
        str | None, Header(alias=CONTEXT_HEADER)] = None) -> HubCall:
    _peer(request, {HUB})
    verifier = request.app.state.context_verifier
    try:
        if verifier is None:
            raise NotAuthenticated("this node has no hub certificate configured "
                                   "(SPE_PKI_DIR): it takes no calls from a hub")
        context = verifier.verify(x_spe_hub_context, query_hash=None)
    except NotAuthenticated as exc:
        raise _refuse(request, exc) from None
    request.state.caller = context.sub  # the access log's user (spe/observability)
    return HubCall(request, context)


def operator_peer(request: Request) -> None:
    _peer(request, {OPERATOR})


def token_peer(request: Request) -> None:
    _peer(request, {HUB, OPERATOR})


# The certificate first (parameters are solved in order): a caller with the wrong one is
# refused before its token is looked at.
def operator_caller(_: Annotated[None, Depends(operator_peer)],
                    principal: Annotated[Principal, Depends(authorize)]) -> Principal:
    return principal


def token_caller(_: Annotated[None, Depends(token_peer)],
                 principal: Annotated[Principal, Depends(authorize)]) -> Principal:
    return principal


HubCaller = Annotated[HubCall, Depends(hub_caller)]
OperatorCaller = Annotated[Principal, Depends(operator_caller)]
TokenCaller = Annotated[Principal, Depends(token_caller)]

#: A route's certificate check, for a router included as a whole (the audit routes the
#: centre shares): `include_router(..., dependencies=[Depends(operator_peer)])`.
PEER_CHECKS = (operator_peer, token_peer)

__all__ = ["HUB", "OPERATOR", "HubCall", "PeerMap", "HubCaller",
           "OperatorCaller", "PEER_CHECKS", "TokenCaller", "hub_caller",
           "operator_peer", "peers_of"]
