"""Fetching descriptors from the nodes over HTTP (`GET /api/v1/descriptors`) and harvesting
them. httpx errors are translated here into CatalogueError, with the node named."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

import httpx
from pydantic import Field, TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from catalogue.schemas import HarvestOutcome
from catalogue.service import CatalogueError, harvest
from spe.audit import CENTRAL_AUDIT, AuditLog
from spe.identity.client_credentials import BearerSource, StaticToken, TokenUnavailable
from spe.policy import EmbeddedEngine, PolicyService
from spe.policy.disclosure import NoCountRule, count_rule
from spe.settings import REPO_ROOT
from spe.wire.descriptors import (
    MAX_DESCRIPTORS,
    MAX_DESCRIPTORS_BYTES,
    DatasetDescriptor,
    disclosure_problems,
)

DESCRIPTORS_PATH = "/api/v1/descriptors"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class TokenRefused(CatalogueError):
    """The node answered 401: the harvester's token was not (or no longer) good there."""


@dataclass(frozen=True)
class HarvestStep:
    """Where a harvest is, for its progress: node `node` (its URL) reached `phase`
    ("fetching", "validated": its descriptors fetched and checked, "stored", or "failed"
    with `error`); `nodes_done` of `nodes_total` nodes are through (monotone, ending at
    the total)."""

    node: str
    phase: str
    nodes_done: int
    nodes_total: int
    datasets: int = 0
    error: str = ""


HarvestProgress = Callable[[HarvestStep], None]


_DESCRIPTORS = TypeAdapter(Annotated[list[DatasetDescriptor], Field(max_length=MAX_DESCRIPTORS)])


def catalogue_threshold(policy: PolicyService) -> int:
    """The smallest threshold a harvested descriptor may have been computed with: the
    centre's own `policies/disclosure` rule for catalogue descriptors (a node may be
    stricter, never laxer). CatalogueError when the policy gives none (fail closed)."""
    try:
        return count_rule(policy, "public", "catalogue_descriptor", least_min_count=1).min_count
    except NoCountRule as exc:
        raise CatalogueError(f"not harvested: {exc}") from None


def _project_policy() -> PolicyService:
    return PolicyService(EmbeddedEngine(REPO_ROOT / "policies"))


def _get_bounded(http: httpx.Client, endpoint: str, token: str,
                 url: str) -> tuple[int, bytes]:
    """The node's answer (status, body), read only up to MAX_DESCRIPTORS_BYTES."""
    with http.stream("GET", endpoint, headers={"Authorization": f"Bearer {token}"}) as resp:
        body = bytearray()
        for chunk in resp.iter_bytes():
            body += chunk
            if len(body) > MAX_DESCRIPTORS_BYTES:
                raise CatalogueError(f"{url}: the descriptors are over "
                                     f"{MAX_DESCRIPTORS_BYTES} bytes; not harvested")
        return resp.status_code, bytes(body)


def fetch_descriptors(url: str, token: str, *, least_threshold: int,
                      client: httpx.Client | None = None,
                      tls: ssl.SSLContext | None = None) -> list[DatasetDescriptor]:
    """The node's descriptors, or CatalogueError saying why not (also when one was computed
    with a threshold below `least_threshold` or would let a reader work out a small count or
    a single patient's age or study day). `tls`: the federation's client context
    (spe.pki.client_ssl_context) for nodes that require mutual TLS."""
    endpoint = url.rstrip("/") + DESCRIPTORS_PATH
    own = client is None
    http = client or httpx.Client(timeout=TIMEOUT, verify=tls if tls is not None else True)
    try:
        status, content = _get_bounded(http, endpoint, token, url)
    except httpx.TimeoutException as exc:
        raise CatalogueError(f"{url}: timed out ({exc.__class__.__name__})") from exc
    except httpx.HTTPError as exc:
        raise CatalogueError(f"{url}: unreachable ({exc})") from exc
    finally:
        if own:
            http.close()
    if status != 200:
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        detail = (body.get("detail", body) if isinstance(body, dict)
                  else content[:200].decode("utf-8", "replace"))
        refused = TokenRefused if status == 401 else CatalogueError
        raise refused(f"{url}: HTTP {status}: {detail}")
    try:
        descriptors = _DESCRIPTORS.validate_json(content)
    except ValidationError as exc:
        raise CatalogueError(f"{url}: not a list of dataset descriptors ({exc.error_count()} "
                             "errors)") from exc
    for d in descriptors:
        # A node that does not protect its descriptor (an old or a compromised one) is not
        # published: its threshold and what a reader could work out are checked here too.
        problems = disclosure_problems(d)
        if d.suppression_threshold < least_threshold:
            problems.insert(0, "suppression_threshold: below the catalogue's "
                               f"{least_threshold}")
        if problems:
            raise CatalogueError(f"{url}: descriptor {d.identifier} refused: "
                                 + "; ".join(problems))
    return descriptors


def _fetch_as(source: BearerSource, url: str, **kw) -> list[DatasetDescriptor]:
    """`fetch_descriptors` with the source's token; a token the node refuses (it expired on
    the way, the provider rotated its keys) is renewed and tried once more."""
    try:
        token = source.token()
        try:
            return fetch_descriptors(url, token, **kw)
        except TokenRefused:
            source.invalidate(token)
            renewed = source.token()
            if renewed == token:
                raise
            return fetch_descriptors(url, renewed, **kw)
    except TokenUnavailable as exc:
        raise CatalogueError(f"{url}: not harvested: {exc.detail}") from exc


def harvest_nodes(
    session: Session,
    urls: Sequence[str],
    token: str | BearerSource,
    *,
    actor: str = "system",
    clients: Mapping[str, httpx.Client] | None = None,
    audit: AuditLog = CENTRAL_AUDIT,
    tls: ssl.SSLContext | None = None,
    policy: PolicyService | None = None,
    progress: HarvestProgress | None = None,
) -> list[HarvestOutcome]:
    """Harvest every node that answers; a failing node is reported (and audited), not fatal.

    `policy`: the centre's (its disclosure rule sets the least threshold a descriptor may
    have); by default the project's own `policies/`. `token`: a bearer token, or where the
    harvester gets one (spe.identity: client credentials), renewed when a node refuses it.
    The caller owns the transaction (see `spe catalogue harvest`).
    """
    policy = policy or _project_policy()
    source = StaticToken(token) if isinstance(token, str) else token
    outcomes: list[HarvestOutcome] = []
    claimed: dict[str, str] = {}  # identifier -> the node URL that described it in this run
    total = len(urls)

    def step(url: str, phase: str, done: int, datasets: int = 0, error: str = "") -> None:
        if progress is not None:
            progress(HarvestStep(url, phase, done, total, datasets, error))

    for done, url in enumerate(urls):
        step(url, "fetching", done)
        try:
            descriptors = _fetch_as(source, url, least_threshold=catalogue_threshold(policy),
                                    client=(clients or {}).get(url), tls=tls)
            for d in descriptors:
                other = claimed.setdefault(d.identifier, url)
                if other != url:
                    raise CatalogueError(f"{url}: describes {d.identifier}, already described "
                                         f"by {other} in this harvest")
        except CatalogueError as exc:
            audit.record(session, actor=actor, action="catalogue.harvest", object=url,
                         decision="error", reason=exc.detail)
            outcomes.append(HarvestOutcome(node=url, error=exc.detail))
            step(url, "failed", done + 1, error=exc.detail)
            continue
        step(url, "validated", done, len(descriptors))
        stored = harvest(session, descriptors, actor=actor, audit=audit)
        for done_one in stored:
            outcomes.append(HarvestOutcome(node=url, identifier=done_one.identifier,
                                           created=done_one.created))
        step(url, "stored", done + 1, len(stored))
    return outcomes


def run_harvest(
    database_url: str,
    urls: Sequence[str],
    token: str | BearerSource,
    *,
    actor: str = "system",
    clients: Mapping[str, httpx.Client] | None = None,
    tls: ssl.SSLContext | None = None,
    policy: PolicyService | None = None,
    progress: HarvestProgress | None = None,
) -> list[HarvestOutcome]:
    """Migrate the central database and harvest the nodes in one transaction (in-process use
    and `spe catalogue harvest`)."""
    from spe.db import make_engine, make_sessionmaker, session_scope
    from spe.db.migrate import upgrade

    upgrade(database_url, "central")
    engine = make_engine(database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            return harvest_nodes(session, urls, token, actor=actor, clients=clients, tls=tls,
                                 policy=policy, progress=progress)
    finally:
        engine.dispose()


__all__ = ["HarvestProgress", "HarvestStep", "TokenRefused", "catalogue_threshold",
           "fetch_descriptors", "harvest_nodes", "run_harvest"]
