"""One settings object for every part of the system, read from `SPE_*` variables."""

from __future__ import annotations

import math
import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_SECRET = "dev-only-secret-change-me"
#: spe.identity's ROLES, as a type settings can check (the settings import no other module
#: of the core; tests/identity/test_machine_identity.py keeps the two in step).
Role = Literal["researcher", "approver", "hdab", "output_checker", "admin"]


class InsecureConfiguration(RuntimeError):
    """Raised when a production deployment would run on a development default."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPE_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    # Signs demo tokens and derives per-permit keys; must be replaced outside development.
    secret_key: SecretStr = SecretStr(DEV_SECRET)
    data_dir: Path = Path("var")
    database_url: str = ""

    # Identity: in the demo the central service is its own OIDC-style issuer.
    oidc_issuer: str = "http://127.0.0.1:8000"
    oidc_audience: str = "spe"
    oidc_jwks_url: str = ""
    token_ttl_seconds: int = 3600
    # The provider's TLS certificate is checked against this CA bundle (PEM) instead of the
    # system's (an in-house provider with a private CA); the keys and tokens are fetched
    # with it.
    oidc_ca_file: Path | None = None
    # Clock skew allowed on a token's exp/nbf; keys last fetched longer ago than the cache
    # time are not used (the provider down is ridden out that long, not for ever); an
    # unknown key id fetches the keys again at most once per the refresh time.
    # Research logins (LS Login, AARC proxies) carry group memberships, not roles: these
    # `eduperson_entitlement` values give these roles ('{"urn:geant:...#...": "researcher"}').
    oidc_entitlement_roles: dict[str, Role] = {}
    oidc_clock_skew_seconds: int = Field(default=30, ge=0, le=300)
    oidc_jwks_cache_seconds: float = Field(default=600, ge=2, le=86_400)
    oidc_jwks_min_refresh_seconds: float = Field(default=10, ge=0.5, le=3600)
    # The central service's own client at the provider, for its machine-to-machine calls
    # (the scheduled harvest): OAuth 2.0 client credentials, a confidential client with a
    # service account holding role hdab. The token endpoint is the provider's discovery
    # document's unless named.
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr | None = None
    # Or, with no shared secret, a private key (PEM, EC P-256 or RSA; the hub's own
    # hub.key will do) whose public key is registered for the client: private_key_jwt.
    # The key id the provider knows it by, unless its RFC 7638 thumbprint.
    oidc_client_key_file: Path | None = None
    oidc_client_key_id: str = ""
    oidc_token_url: str = ""

    # Policy: embedded regopy unless an OPA server is named.
    policy_dir: Path = REPO_ROOT / "policies"
    opa_url: str = ""

    # EHDS Art. 73(1)(e): access logs kept for at least one year.
    audit_retention_days: int = 365
    # Signed audit checkpoints (spe/audit/checkpoints.py): each service signs its chain's
    # head on start and stop, after this many new entries, and at least this often while
    # the head moves; the hub pulls its nodes' signed heads this often as their witness.
    audit_checkpoint_entries: int = Field(default=1000, ge=1, le=10_000)
    audit_checkpoint_interval_seconds: float = Field(default=300, ge=1, le=86_400)
    audit_witness_interval_seconds: float = Field(default=300, ge=5, le=86_400)

    # Catalogue (the suppression threshold of node descriptors is policies/disclosure's).
    # The central service harvests these nodes' descriptors on a schedule (besides
    # `spe catalogue harvest`). JSON list in the environment: '["https://node-a:8443"]'.
    catalogue_nodes: list[str] = []
    catalogue_harvest_interval_seconds: int = Field(default=3600, ge=60)
    # Deprecated, refused in production: a static bearer token for the harvest, which
    # stops working when it expires. Use SPE_OIDC_CLIENT_ID/SECRET (client credentials);
    # in development without them the demo issuer mints one for every round.
    catalogue_harvest_token: SecretStr | None = None

    # Federation: the PKI folder of `spe pki init` (the CA, this service's certificate and
    # key, the hub's certificate); nodes answer queries only when it is set.
    pki_dir: Path | None = None
    # The hub's nodes, id -> base URL ('{"site-a": "https://127.0.0.1:8001"}').
    federation_nodes: dict[str, str] = {}
    # A node that has not answered by then is reported as timed out.
    query_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # How often the hub pushes the suspension list again to nodes that have not confirmed
    # its current epoch (down or cut off during a push; gateway/hub/suspensions.py).
    suspension_push_interval_seconds: float = Field(default=60.0, ge=1, le=3600)

    # Jobs: how often the hub collects finished jobs' outputs from the nodes into the
    # airlock (also on every status read); where the airlock keeps them (default
    # <data_dir>/airlock), readable by the central service only.
    job_collect_interval_seconds: float = Field(default=10.0, ge=1, le=3600)
    airlock_dir: Path | None = None

    # The largest request body either service reads (413 beyond it); job submissions
    # have their own, the job contract's code limit.
    max_request_bytes: int = Field(default=1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)

    # Notifications are also mailed when an SMTP server is named (in-app always).
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = "spe@localhost"
    smtp_starttls: bool = False
    smtp_user: str = ""
    smtp_password: SecretStr = SecretStr("")

    # An institution node's own settings (only read by `spe serve node` / `spe node sync`).
    node_id: str = ""
    node_name: str = ""
    # "folder:PATH", "dimse://AET@HOST:PORT" or "dicomweb:URL"; empty for none.
    node_dicom: str = ""
    # "ndjson:PATH" or "bundle:PATH"; empty for none.
    node_fhir: str = ""
    # The secret of the node's record keys (the statistics tier's cell-key perturbation,
    # gateway/node/query/perturb.py); unset: the file <data_dir>/nodes/<node_id>/
    # cellkey.secret, made on first use. Changing it changes every perturbed answer.
    node_cellkey_secret: SecretStr | None = None
    # Whether this institution vets job code before it runs (policies/jobs `code_review`):
    # "approval" (its approvers approve each code per permit), "registry" (only code whose
    # SHA-256 is in SPE_NODE_CODE_REGISTRY), "none"; empty: the policy's default (none).
    node_code_review: Literal["", "none", "approval", "registry"] = ""
    # The registry of approved analyses: SHA-256s of code archives, comma-separated.
    node_code_registry: str = Field(default="", pattern=r"^[0-9a-f, ]*$")
    # Job workers each node runs in its own process (threads; 0: jobs queue for others).
    node_workers: int = Field(default=1, ge=0, le=64)
    # Processes that de-identify one permit's extract (DICOM and FHIR) while it is staged;
    # 0: one per core this process may use, at most 8 (gateway/node/jobs/staging.py
    # `staging_workers`). Set it lower where staging must leave cores to running jobs.
    staging_workers: int = Field(default=0, ge=0, le=64)

    # --- The job sandbox (spe/sandbox). Production refuses each setting that weakens it.
    # bubblewrap (default `bwrap` on PATH); in production a root-owned file only root
    # can replace.
    sandbox_bwrap: str = ""
    # The default analysis environment's ("statistics") interpreter jobs run with (default
    # <analysis_environments>/statistics/bin/python if built, else the service's own).
    sandbox_python: str = ""
    # The analysis environments this node has built: a folder with one virtual environment
    # per environment, <folder>/<name>/bin/python (`make analysis-env`: var/analysis-env).
    # Which of them a job may name is policies/jobs' allow-list (spe/sandbox/environments.py).
    analysis_environments: Path | None = None
    # The environments' pinned requirements, <folder>/<name>/requirements.txt: what the hub
    # lists (GET /api/v1/environments) and accepts in a job.
    analysis_specs_dir: Path = REPO_ROOT / "deploy" / "analysis"
    # Per-job pids and memory cgroups (off: rlimits and a process watch only).
    sandbox_cgroup: bool = True
    # The seccomp filter (spe/sandbox/seccomp.py).
    sandbox_seccomp: bool = True
    # Jobs run as host uid (and gid) base + a free slot, never root; 0: as the service's
    # own user (a developer's laptop). Not below 1000: no system account's uid.
    sandbox_uid_base: int = Field(default=200000, ge=0, le=2**31 - 2000)

    # --- HTTPS at the central service (spe/web/https.py): its own certificate and key
    # (PEM, e.g. a public CA's), or a TLS-terminating proxy at these addresses (comma-
    # separated IPs or networks, uvicorn's forwarded_allow_ips; default 127.0.0.1) whose
    # X-Forwarded-Proto/-For it believes. Off loopback, production needs one of the two.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_terminated_by_proxy: bool = False
    forwarded_allow_ips: str = ""

    @model_validator(mode="after")
    def _usable_client_key(self) -> Settings:
        if self.oidc_client_key_file is not None:
            why = unusable_client_key(self.oidc_client_key_file)
            if why:
                raise InsecureConfiguration(f"SPE_OIDC_CLIENT_KEY_FILE: {why}")
        return self

    # --- Operations (spe/observability): logs, metrics, readiness, the database at start.
    # Log lines as JSON objects (default in production) or text (default elsewhere).
    log_format: Literal["json", "text"] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The bearer token a Prometheus scraper sends to /metrics; unset, /metrics answers
    # loopback callers in development only (nobody elsewhere).
    metrics_token: SecretStr | None = None
    # `spe node worker`'s own metrics endpoint (0: none), on SPE_METRICS_ADDRESS.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_address: str = "127.0.0.1"
    # How long /ready keeps its answer (each check is cheap, but scrapers and probes poll).
    ready_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    # A certificate with fewer days left is reported (a warning; expired: not ready).
    cert_warn_days: int = Field(default=30, ge=1, le=365)
    # How long a service waits at start for its database before it gives up (exit 2).
    db_wait_seconds: float = Field(default=60.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _refuse_weak_sandbox(self) -> Settings:
        if 0 < self.sandbox_uid_base < 1000:
            raise InsecureConfiguration(
                "SPE_SANDBOX_UID_BASE must be 0 (the service's own user) or at least 1000 "
                "(uids of no system account)")
        if self.environment != "production":
            return self
        if not self.sandbox_cgroup:
            raise InsecureConfiguration(
                "SPE_SANDBOX_CGROUP is off: production bounds each job's processes and "
                "memory together by its cgroups")
        if not self.sandbox_seccomp:
            raise InsecureConfiguration(
                "SPE_SANDBOX_SECCOMP is off: production runs jobs under the seccomp filter")
        if self.sandbox_uid_base == 0:
            raise InsecureConfiguration(
                "SPE_SANDBOX_UID_BASE is 0: production runs each job as a uid of its own, "
                "never as the service's user or root")
        if self.sandbox_bwrap and (why := untrusted_executable(self.sandbox_bwrap)):
            raise InsecureConfiguration(f"SPE_SANDBOX_BWRAP: {why}")
        return self

    @model_validator(mode="after")
    def _refuse_insecure_defaults(self) -> Settings:
        if self.environment == "production":
            reason = production_refusal(self)
            if reason:
                raise InsecureConfiguration(reason)
        if self.audit_retention_days < 365:
            raise InsecureConfiguration(
                "SPE_AUDIT_RETENTION_DAYS must be at least 365 (EHDS Art. 73(1)(e))"
            )
        return self

    @property
    def resolved_log_format(self) -> str:
        return self.log_format or ("json" if self.environment == "production" else "text")

    @property
    def issuer_key_path(self) -> Path:
        return self.data_dir / "keys" / "issuer.jwk.json"

    @property
    def resolved_airlock_dir(self) -> Path:
        return self.airlock_dir or self.data_dir / "airlock"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'central.db').as_posix()}"


def unusable_client_key(path: Path) -> str:
    """Why the key file cannot sign the client's assertions (private_key_jwt), or ""."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    except (ValueError, TypeError):
        return f"{path} is not an unencrypted PEM private key"
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
        return ""
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return ""
    return f"{path}: an EC P-256 or an RSA key of 2048 bits or more signs client assertions"


def untrusted_executable(path: str) -> str | None:
    """Why the program at `path` could be replaced by someone other than root (None: a
    regular root-owned file, in root-owned folders, none writable by group or others but
    sticky ones like /tmp, where only the owner may replace an entry)."""
    if not os.path.isabs(path):
        return f"{path} is not an absolute path"
    current = path
    while True:
        try:
            st = os.stat(current)
        except OSError as exc:
            return f"{current}: {exc.strerror}"
        if current == path and not stat.S_ISREG(st.st_mode):
            return f"{path} is not a regular file"
        if st.st_uid != 0:
            return f"{current} is not owned by root"
        if st.st_mode & 0o022 and not (stat.S_ISDIR(st.st_mode) and st.st_mode & 0o1000):
            return f"{current} can be written by others than root"
        if current == "/":
            return None
        current = os.path.dirname(os.path.realpath(current) if current == path else current)


# Production refusals: a production service does not start on what would leave data open
# (an embedded database file, a guessable secret, keys fetched over plain HTTP, a node
# without mutual TLS). Each is one line naming the variable, for `spe serve` to print.
MIN_SECRET_BITS = 128
KNOWN_SECRETS = frozenset({DEV_SECRET, "changeme", "change-me", "secret", "password"})
NEW_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"


def secret_bits(secret: str) -> float:
    """A simple, pessimistic estimate of a secret's entropy: length x log2(distinct
    characters). 32 identical characters score 0; a random 64-character base64 string
    about 340; a 32-character hex string (128 random bits) usually a little under 128."""
    distinct = len(set(secret))
    return len(secret) * math.log2(distinct) if distinct > 1 else 0.0


def production_refusal(settings: Settings) -> str:
    """Why `settings` must not run in production, or "" when nothing is refused."""
    secret = settings.secret_key.get_secret_value()
    if secret.strip().lower() in KNOWN_SECRETS:
        return f"SPE_SECRET_KEY is a known default; set a random secret (e.g. `{NEW_SECRET}`)"
    if len(secret) < 32:
        return "SPE_SECRET_KEY must be at least 32 characters"
    if secret_bits(secret) < MIN_SECRET_BITS:
        return (f"SPE_SECRET_KEY has about {secret_bits(secret):.0f} bits of entropy (length x "
                f"log2 of its distinct characters), under {MIN_SECRET_BITS}; set a random "
                f"secret (e.g. `{NEW_SECRET}`)")
    if secret in (secret + secret)[1:-1]:  # one shorter piece repeated
        return f"SPE_SECRET_KEY repeats a pattern; set a random secret (e.g. `{NEW_SECRET}`)"
    if _scheme(settings.resolved_database_url) == "sqlite":
        return ("SPE_DATABASE_URL is SQLite (a file on the service's disk, or the default "
                "when unset); production needs PostgreSQL (postgresql://user@host/db)")
    if not settings.oidc_jwks_url:
        return ("production needs an external identity provider: set SPE_OIDC_ISSUER and "
                "SPE_OIDC_JWKS_URL (the demo's own token issuer is for development only)")
    for name, url in (("SPE_OIDC_JWKS_URL", settings.oidc_jwks_url),
                      ("SPE_OIDC_ISSUER", settings.oidc_issuer)):
        if _scheme(url) != "https":
            return (f"{name} is not https:// ({url}); the keys that sign every token must "
                    "not travel over plain HTTP")
    if reason := _machine_identity_refusal(settings):
        return reason
    if settings.opa_url and _scheme(settings.opa_url) != "https" and not _loopback(
            settings.opa_url):
        return (f"SPE_OPA_URL is plain HTTP to another host ({settings.opa_url}); every "
                "decision would cross the network unprotected: use https:// or a local OPA")
    if settings.node_id and settings.pki_dir is None:
        return ("a node needs SPE_PKI_DIR in production: without the federation's "
                "certificates it would serve plain HTTP and answer callers without a client "
                "certificate (make them with `spe pki init`)")
    exposed = _exposed_keys(settings.pki_dir)
    if exposed:
        return (f"SPE_PKI_DIR holds private keys others than their owner may read "
                f"({', '.join(exposed)}); chmod 600 them (and 700 the folder)")
    for name, urls in (("SPE_FEDERATION_NODES", list(settings.federation_nodes.values())),
                       ("SPE_CATALOGUE_NODES", settings.catalogue_nodes)):
        plain = [u for u in urls if _scheme(u) != "https"]
        if plain:
            return f"{name} names nodes over plain HTTP ({', '.join(plain)}); use https://"
    if settings.tls_terminated_by_proxy and not settings.forwarded_allow_ips:
        return ("SPE_TLS_TERMINATED_BY_PROXY needs SPE_FORWARDED_ALLOW_IPS: the proxy's "
                "address, the only one whose X-Forwarded-Proto is believed")
    if "*" in settings.forwarded_allow_ips:
        return ("SPE_FORWARDED_ALLOW_IPS is '*': any client could claim HTTPS and any "
                "address; name the proxy's address or network")
    return ""


def _machine_identity_refusal(settings: Settings) -> str:
    """Why the central service's own calls (the scheduled harvest) would not authenticate
    as a client of the provider, or ""."""
    if settings.catalogue_harvest_token is not None:
        return ("SPE_CATALOGUE_HARVEST_TOKEN is a static token: it stops working when it "
                "expires and cannot be rotated; unset it and give the central service a "
                "client of the identity provider (SPE_OIDC_CLIENT_ID, SPE_OIDC_CLIENT_SECRET: "
                "client credentials, a service account with role hdab)")
    if settings.oidc_client_id and settings.oidc_client_secret is None \
            and settings.oidc_client_key_file is None:
        return ("SPE_OIDC_CLIENT_ID is set without SPE_OIDC_CLIENT_SECRET (or "
                "SPE_OIDC_CLIENT_KEY_FILE)")
    key = settings.oidc_client_key_file
    if key is not None and key.exists() and key.stat().st_mode & 0o077:
        return (f"SPE_OIDC_CLIENT_KEY_FILE {key} may be read by others than its owner; "
                "chmod 600 it")
    if settings.catalogue_nodes and not settings.oidc_client_id:
        return ("SPE_CATALOGUE_NODES is set, but the scheduled harvest has no client of the "
                "identity provider to call the nodes with: set SPE_OIDC_CLIENT_ID and "
                "SPE_OIDC_CLIENT_SECRET or SPE_OIDC_CLIENT_KEY_FILE (client credentials, a "
                "service account with role hdab)")
    if settings.oidc_token_url and _scheme(settings.oidc_token_url) != "https":
        return (f"SPE_OIDC_TOKEN_URL is not https:// ({settings.oidc_token_url}); the client "
                "secret must not travel over plain HTTP")
    return ""


def _exposed_keys(pki_dir: Path | None) -> list[str]:
    """The private keys in `pki_dir` that group or others may read (none there yet: [])."""
    if pki_dir is None:
        return []
    exposed = []
    for key in sorted(pki_dir.glob("*.key")):
        try:
            if key.stat().st_mode & 0o077:
                exposed.append(key.name)
        except OSError:
            continue
    return exposed


def _loopback(url: str) -> bool:
    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def _scheme(url: str) -> str:
    """A URL's scheme without its driver (postgresql+psycopg -> postgresql), lower case."""
    return url.split(":", 1)[0].split("+", 1)[0].strip().lower() if ":" in url else ""


@lru_cache
def get_settings() -> Settings:
    return Settings()
