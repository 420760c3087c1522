"""One settings object for every part of the system, read from `SPE_*` variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_SECRET = "dev-only-secret-change-me"


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

    # Policy: embedded regopy unless an OPA server is named.
    policy_dir: Path = REPO_ROOT / "policies"
    opa_url: str = ""

    # EHDS Art. 73(1)(e): access logs kept for at least one year.
    audit_retention_days: int = 365

    # Catalogue (the suppression threshold of node descriptors is policies/disclosure's).
    # The central service harvests these nodes' descriptors on a schedule (besides
    # `spe catalogue harvest`). JSON list in the environment: '["https://node-a:8443"]'.
    catalogue_nodes: list[str] = []
    catalogue_harvest_interval_seconds: int = Field(default=3600, ge=60)
    # The harvester's bearer token (role hdab) from the identity provider; in development
    # the demo issuer mints one for every round instead.
    catalogue_harvest_token: SecretStr | None = None

    # Federation: the PKI folder of `spe pki init` (the CA, this service's certificate and
    # key, the hub's certificate); nodes answer queries only when it is set.
    pki_dir: Path | None = None
    # The hub's nodes, id -> base URL ('{"site-a": "https://127.0.0.1:8001"}').
    federation_nodes: dict[str, str] = {}
    # A node that has not answered by then is reported as timed out.
    query_timeout_seconds: float = Field(default=5.0, gt=0, le=120)

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
    # Job workers each node runs in its own process (threads; 0: jobs queue for others).
    node_workers: int = Field(default=1, ge=0, le=64)
    # Processes that de-identify one permit's extract (DICOM and FHIR) while it is staged;
    # they share the machine with running jobs, so one unless it has cores to spare.
    staging_workers: int = Field(default=1, ge=1, le=64)

    @model_validator(mode="after")
    def _refuse_insecure_defaults(self) -> Settings:
        if self.environment == "production":
            if self.secret_key.get_secret_value() == DEV_SECRET:
                raise InsecureConfiguration(
                    "SPE_SECRET_KEY is the development default; set a random secret "
                    "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
                )
            if len(self.secret_key.get_secret_value()) < 32:
                raise InsecureConfiguration("SPE_SECRET_KEY must be at least 32 characters")
            if not self.oidc_jwks_url:
                raise InsecureConfiguration(
                    "production needs an external identity provider: set SPE_OIDC_ISSUER and "
                    "SPE_OIDC_JWKS_URL (the demo's own token issuer is for development only)"
                )
        if self.audit_retention_days < 365:
            raise InsecureConfiguration(
                "SPE_AUDIT_RETENTION_DAYS must be at least 365 (EHDS Art. 73(1)(e))"
            )
        return self

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


@lru_cache
def get_settings() -> Settings:
    return Settings()
