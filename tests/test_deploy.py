"""deploy/compose.yaml cannot run here (no container engine); this checks what can be
checked without one: every `spe` command in it is one the CLI has, with options it takes,
and every service's SPE_* variables make valid production Settings."""

from __future__ import annotations

import re

import pytest
import yaml
from typer.testing import CliRunner

from spe.cli.main import app
from spe.settings import REPO_ROOT, Settings

COMPOSE = yaml.safe_load((REPO_ROOT / "deploy" / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
_PLACEHOLDER = re.compile(r"\$\{(\w+)(?::\?[^}]*)?\}")


def _filled(value: str) -> str:
    """Compose's ${VAR} and ${VAR:?message}, with a value an operator could give (the
    identity provider's over https, as production demands)."""
    def value_of(name: str) -> str:
        if name.endswith(("_URL", "_ISSUER")):
            return f"https://idp.example/{name.lower()}"
        return f"{name.lower()}-0123456789abcdef0123456789"
    return _PLACEHOLDER.sub(lambda m: value_of(m.group(1)), value)


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items()
                                  if (s.get("command") or [""])[0] == "spe"])
def test_each_command_is_one_the_cli_has(name: str) -> None:
    command = SERVICES[name]["command"]
    result = CliRunner().invoke(app, [*command[1:], "--help"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items()
                                  if any(k.startswith("SPE_")
                                         for k in (s.get("environment") or {}))])
def test_each_services_settings_are_valid(name: str, monkeypatch, tmp_path) -> None:
    environment = {k: _filled(str(v)) for k, v in SERVICES[name]["environment"].items()}
    known = {f"SPE_{field.upper()}" for field in Settings.model_fields}
    unknown = set(environment) - known
    assert not unknown, f"{name}: variables no code reads: {sorted(unknown)}"
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    settings = Settings(data_dir=tmp_path)
    assert settings.environment == "production"
    if "SPE_FEDERATION_NODES" in environment:
        assert settings.federation_nodes == {"site-a": "https://node-site-a:8001"}


def test_the_nodes_certificates_are_the_ones_the_pki_service_makes() -> None:
    pki = SERVICES["pki"]["command"]
    out = pki[pki.index("--out") + 1]
    nodes = {pki[i + 1] for i, arg in enumerate(pki) if arg == "--node"}
    hosts = {pki[i + 1] for i, arg in enumerate(pki) if arg == "--host"}
    for name, service in SERVICES.items():
        env = service.get("environment") or {}
        if "SPE_PKI_DIR" in env:
            assert env["SPE_PKI_DIR"] == out, name
        if "SPE_NODE_ID" in env:
            assert env["SPE_NODE_ID"] in nodes, name
    assert {"central", "node-site-a"} <= hosts  # the names the services call each other by
