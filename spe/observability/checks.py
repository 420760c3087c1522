"""The readiness checks every service shares: its database, the identity provider's keys,
its policy, its certificates. (The audit chain's is in audit_watch.py; a node's sources'
in gateway/node/source_probe.py.)"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from cryptography import x509
from joserfc.jwk import KeySet
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from spe.observability.metrics import ServiceMetrics
from spe.observability.readiness import CheckResult
from spe.policy import PolicyService

#: How long a readiness probe waits for the identity provider.
JWKS_TIMEOUT = 3.0


def database(sessions: sessionmaker[Session]) -> Callable[[], CheckResult]:
    def check() -> CheckResult:
        try:
            with sessions() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return CheckResult.failed(f"the database does not answer "
                                      f"({type(exc.orig or exc).__name__}); check "
                                      "SPE_DATABASE_URL and the database server")
        return CheckResult.ok()

    return check


def identity_provider(jwks_url: str,
                      fresh_seconds: Callable[[], float] = lambda: 300.0
                      ) -> Callable[[], CheckResult]:
    """The provider's signing keys can be fetched now. When they cannot, the keys fetched
    less than `fresh_seconds` ago (the verifier's own cache period) still check tokens: a
    warning, so an outage of the provider does not take every service out of its load
    balancer at once; after that (a rotation at the provider would be missed, and a service
    that never had the keys refuses every token) it fails."""
    last_fetched: list[float] = []

    def fetch() -> str | None:
        try:
            resp = httpx.get(jwks_url, timeout=JWKS_TIMEOUT)
            resp.raise_for_status()
            keys = KeySet.import_key_set(resp.json())
        except httpx.HTTPStatusError as exc:
            return (f"the identity provider's keys (SPE_OIDC_JWKS_URL) answer HTTP "
                    f"{exc.response.status_code}")
        except httpx.HTTPError as exc:
            return (f"the identity provider's keys (SPE_OIDC_JWKS_URL) cannot be fetched "
                    f"({type(exc).__name__})")
        except (ValueError, TypeError, KeyError):
            return "the identity provider's key set (SPE_OIDC_JWKS_URL) is not a valid JWKS"
        if not keys.keys:
            return "the identity provider publishes no keys (SPE_OIDC_JWKS_URL)"
        return None

    def check() -> CheckResult:
        problem = fetch()
        now = time.monotonic()
        if problem is None:
            last_fetched[:] = [now]
            return CheckResult.ok()
        if last_fetched and now - last_fetched[0] < fresh_seconds():
            return CheckResult.warn(f"{problem}; the keys fetched {now - last_fetched[0]:.0f} s "
                                    f"ago are used meanwhile")
        return CheckResult.failed(problem)

    return check


def policy(service: PolicyService, which: str) -> Callable[[], CheckResult]:
    """A probe decision evaluates (the Rego compiles and answers). The probe asks as
    nobody, so a correct policy denies it; only an error is a failure."""
    probe = {"service": which, "method": "GET", "route": "/ready",
             "subject": {"id": "readiness-probe", "subject": "readiness-probe",
                         "roles": [], "institution": None}}

    def check() -> CheckResult:
        decision = service.decide("authz/decision", probe)
        if decision.error:
            return CheckResult.failed("the policy cannot be evaluated (every request "
                                      "would be denied); see the service's log and run "
                                      "`spe policy test`")
        return CheckResult.ok()

    return check


def certificates(pki_dir: Path, warn_days: int,
                 metrics: ServiceMetrics | None = None) -> Callable[[], CheckResult]:
    """Days left of each certificate in the PKI folder: below `warn_days` a warning, an
    expired or unreadable one a failure (mutual TLS with it fails)."""

    def check() -> CheckResult:
        now = dt.datetime.now(dt.UTC)
        expired, soon, unreadable = [], [], []
        found = sorted(pki_dir.glob("*.crt"))
        for path in found:
            try:
                cert = x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, ValueError):
                unreadable.append(path.name)
                continue
            days = (cert.not_valid_after_utc - now).total_seconds() / 86400
            if metrics is not None:
                metrics.cert_days.labels(path.stem).set(round(days, 2))
            if days <= 0:
                expired.append(path.name)
            elif days < warn_days:
                soon.append(f"{path.name} in {int(days)} days")
        if not found:
            return CheckResult.failed("no certificate in SPE_PKI_DIR")
        if expired or unreadable:
            return CheckResult.failed("; ".join(
                ([f"expired: {', '.join(expired)}"] if expired else [])
                + ([f"unreadable: {', '.join(unreadable)}"] if unreadable else []))
                + ": issue new ones")
        if soon:
            return CheckResult.warn(f"expiring: {', '.join(soon)}: rotate them")
        return CheckResult.ok()

    return check
