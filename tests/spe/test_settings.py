from __future__ import annotations

import pytest
from typer.testing import CliRunner

from spe.cli import app
from spe.settings import InsecureConfiguration, Settings

SECRET = "k3Jv9-QpZr_W7xYtLm2NbC8sHdF4gAe6UoPiXcVq1wE"  # a random one (secrets.token_urlsafe)
POSTGRES = "postgresql://spe@db/spe"


def test_production_refuses_the_default_secret():
    with pytest.raises(InsecureConfiguration, match="SPE_SECRET_KEY"):
        Settings(environment="production", oidc_jwks_url="https://idp/jwks")


def test_production_needs_an_external_identity_provider():
    with pytest.raises(InsecureConfiguration, match="SPE_OIDC_JWKS_URL"):
        Settings(environment="production", secret_key=SECRET, database_url=POSTGRES)


def test_retention_below_a_year_is_refused():
    with pytest.raises(InsecureConfiguration, match="365"):
        Settings(audit_retention_days=30)


def test_production_with_real_secret_starts():
    s = Settings(environment="production", secret_key=SECRET, database_url=POSTGRES,
                 oidc_issuer="https://idp", oidc_jwks_url="https://idp/jwks")
    assert s.secret_key.get_secret_value() == SECRET
    assert SECRET not in repr(s)


def test_cli_refuses_to_start_with_default_secret_in_production(monkeypatch, tmp_path):
    monkeypatch.setenv("SPE_ENVIRONMENT", "production")
    monkeypatch.setenv("SPE_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["token", "--user", "a", "--role", "researcher"])
    assert result.exit_code == 2
    assert "SPE_SECRET_KEY" in result.output
    assert "Traceback" not in result.output


def test_token_command_rejects_unknown_role(monkeypatch, tmp_path):
    monkeypatch.setenv("SPE_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["token", "--user", "a", "--role", "superuser"])
    assert result.exit_code == 2
    assert "unknown role" in result.output
    assert not (tmp_path / "keys").exists()  # the CLI never makes a key of its own


def test_token_command_mints_a_verifiable_token(monkeypatch, tmp_path):
    from spe.identity import demo_issuer, make_verifier

    monkeypatch.setenv("SPE_DATA_DIR", str(tmp_path))
    demo_issuer(Settings(data_dir=tmp_path))  # the key the running service publishes
    result = CliRunner().invoke(app, ["token", "--user", "bob", "--role", "approver",
                                      "--institution", "site-a"])
    assert result.exit_code == 0, result.output
    principal = make_verifier(Settings(data_dir=tmp_path)).verify(result.output.strip())
    assert (principal.subject, principal.roles, principal.institution) == (
        "bob", ("approver",), "site-a")
