"""Production refuses to start on what is unsafe, as an operator following the docs would
meet it: the real `spe serve` (and `spe node worker`) in a fresh process with only the
`SPE_*` variables given, exit 2 and one line naming the reason, no traceback.

Measured before: production started on SQLite (central and node), a secret of 32 identical
characters, a JWKS URL over plain HTTP, and a node with no SPE_PKI_DIR (plain HTTP, no
client certificate asked).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.node.orthanc_process import free_port
from spe.settings import DEV_SECRET, InsecureConfiguration, Settings

SECRET = secrets.token_urlsafe(48)
POSTGRES = "postgresql://spe@db.example/spe"  # never reached: refused before connecting
IDP = "https://idp.example/realms/spe"
SAFE = {
    "SPE_ENVIRONMENT": "production",
    "SPE_SECRET_KEY": SECRET,
    "SPE_DATABASE_URL": POSTGRES,
    "SPE_OIDC_ISSUER": IDP,
    "SPE_OIDC_JWKS_URL": f"{IDP}/protocol/openid-connect/certs",
}
NODE = {"SPE_NODE_ID": "site-a", "SPE_PKI_DIR": "/etc/spe/pki"}
CENTRAL = ("serve", "central")
SERVE_NODE = ("serve", "node")
WORKER = ("node", "worker")

# (command, variables changed from the safe set (None: unset), words of the reason)
UNSAFE = {
    "central on the default SQLite": (CENTRAL, {"SPE_DATABASE_URL": None}, "SQLite"),
    "central on a SQLite file": (CENTRAL, {"SPE_DATABASE_URL": "sqlite:////srv/spe.db"},
                                 "SQLite"),
    "node on SQLite": (SERVE_NODE, {**NODE, "SPE_DATABASE_URL": "sqlite:////srv/node.db"},
                       "SQLite"),
    "node worker on SQLite": (WORKER, {**NODE, "SPE_DATABASE_URL": "sqlite:///node.db"},
                              "SQLite"),
    "32 identical characters": (CENTRAL, {"SPE_SECRET_KEY": "a" * 32}, "bits of entropy"),
    "a long secret of two characters": (CENTRAL, {"SPE_SECRET_KEY": "ab" * 40},
                                        "bits of entropy"),
    "a repeated pattern": (CENTRAL, {"SPE_SECRET_KEY": "0123456789abcdef" * 2},
                           "repeats a pattern"),
    "a short secret": (CENTRAL, {"SPE_SECRET_KEY": "Zq8#kd!2"}, "at least 32 characters"),
    "the development default": (CENTRAL, {"SPE_SECRET_KEY": None}, "known default"),
    "a known default": (CENTRAL, {"SPE_SECRET_KEY": "changeme"}, "known default"),
    "no identity provider": (CENTRAL, {"SPE_OIDC_JWKS_URL": None}, "SPE_OIDC_JWKS_URL"),
    "a JWKS over plain HTTP": (CENTRAL, {"SPE_OIDC_JWKS_URL": "http://idp.example/certs"},
                               "SPE_OIDC_JWKS_URL is not https"),
    "an issuer over plain HTTP": (CENTRAL, {"SPE_OIDC_ISSUER": "http://idp.example/realms/x"},
                                  "SPE_OIDC_ISSUER is not https"),
    "a node's JWKS over plain HTTP": (SERVE_NODE, {**NODE, "SPE_OIDC_JWKS_URL":
                                                   "http://idp.example/certs"},
                                      "SPE_OIDC_JWKS_URL is not https"),
    "policy decisions over plain HTTP": (CENTRAL, {"SPE_OPA_URL": "http://opa.example:8181"},
                                         "SPE_OPA_URL is plain HTTP"),
    "a node without mutual TLS": (SERVE_NODE, {**NODE, "SPE_PKI_DIR": None}, "SPE_PKI_DIR"),
    "a node worker without mutual TLS": (WORKER, {**NODE, "SPE_PKI_DIR": None}, "SPE_PKI_DIR"),
    # Machine-to-machine calls authenticate as a client of the provider (client
    # credentials), never with a static token that stops working when it expires.
    "a static harvest token": (CENTRAL, {"SPE_CATALOGUE_HARVEST_TOKEN": "eyJhbGciOi.x.y"},
                               "SPE_CATALOGUE_HARVEST_TOKEN is a static token"),
    "scheduled harvest without a client": (
        CENTRAL, {"SPE_CATALOGUE_NODES": '["https://node-a:8443"]'},
        "SPE_CATALOGUE_NODES is set, but the scheduled harvest has no client"),
    "a client without its secret": (CENTRAL, {"SPE_OIDC_CLIENT_ID": "spe-central"},
                                    "SPE_OIDC_CLIENT_ID is set without SPE_OIDC_CLIENT_SECRET"),
    "a token endpoint over plain HTTP": (
        CENTRAL, {"SPE_OIDC_CLIENT_ID": "spe-central", "SPE_OIDC_CLIENT_SECRET": "x" * 24,
                  "SPE_OIDC_TOKEN_URL": "http://idp.example/token"},
        "SPE_OIDC_TOKEN_URL is not https"),
    "federation nodes over plain HTTP": (
        CENTRAL, {"SPE_FEDERATION_NODES": '{"site-a": "http://node-a:8001"}'},
        "SPE_FEDERATION_NODES names nodes over plain HTTP"),
}


def _environment(changes: dict[str, str | None]) -> dict[str, str]:
    """The safe production variables with `changes`; nothing else of ours (no SPE_* of the
    test run, no .env: the command runs in an empty folder)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPE_")}
    env.update(SAFE)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _spe(args: tuple[str, ...], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    if args[0] == "serve":  # were it to start after all, on a port of its own
        args = (*args, "--port", str(free_port()))
    return subprocess.run([sys.executable, "-m", "spe.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", list(UNSAFE))
def test_production_refuses_to_start(case: str, tmp_path: Path) -> None:
    command, changes, reason = UNSAFE[case]
    env = _environment({"SPE_DATA_DIR": str(tmp_path / "data"), **changes})
    result = _spe(command, env, tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    message = result.stderr.strip()
    assert reason in message, message
    assert "\n" not in message, message  # one line, however long
    assert "Traceback" not in result.stderr
    assert not result.stdout
    assert env.get("SPE_SECRET_KEY", DEV_SECRET) not in message  # the secret is not shown
    assert not (tmp_path / "data").exists()  # refused before anything was written


@pytest.mark.parametrize("case", list(UNSAFE))
def test_the_same_settings_without_the_unsafe_one_load(case: str, monkeypatch,
                                                       tmp_path: Path) -> None:
    """Each refusal above is that setting's: the safe set (a node's with its PKI) loads,
    and the loader refuses it once the one unsafe value is in."""
    command, changes, _ = UNSAFE[case]
    monkeypatch.chdir(tmp_path)  # no .env
    safe = {**SAFE, **(NODE if command != CENTRAL else {})}
    for key in os.environ:
        if key.startswith("SPE_"):
            monkeypatch.delenv(key)
    for key, value in safe.items():
        monkeypatch.setenv(key, value)
    assert Settings().environment == "production"
    for key, value in changes.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    with pytest.raises(InsecureConfiguration):
        Settings()


def test_a_random_secret_passes_and_development_refuses_nothing_of_this(monkeypatch,
                                                                        tmp_path):
    monkeypatch.chdir(tmp_path)
    for secret in (secrets.token_urlsafe(32), secrets.token_hex(32), SECRET):
        assert Settings(environment="production", secret_key=secret, database_url=POSTGRES,
                        oidc_issuer=IDP, oidc_jwks_url=f"{IDP}/certs",
                        opa_url="http://127.0.0.1:8181")  # a local OPA may be plain HTTP
    # Development keeps its SQLite, demo issuer and nodes without PKI.
    assert Settings(environment="development", node_id="site-a", secret_key="a" * 32)


def test_a_node_whose_certificates_are_missing_says_which(tmp_path: Path) -> None:
    env = _environment({**NODE, "SPE_PKI_DIR": str(tmp_path / "empty"),
                        "SPE_DATA_DIR": str(tmp_path / "data")})
    result = _spe(SERVE_NODE, env, tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    message = result.stderr.strip()
    # Every file a node needs, each named, and how it gets them.
    assert "lacks site-a.crt, site-a.key, ca.crt, hub.crt" in message
    assert "spe pki request --name site-a" in message
    assert "\n" not in message
    assert "Traceback" not in result.stderr


def test_a_private_key_others_can_read_is_refused(tmp_path: Path, monkeypatch) -> None:
    from spe.pki import init_pki

    pki = tmp_path / "pki"
    init_pki(pki, nodes=["site-a"])
    (pki / "site-a.key").chmod(0o644)  # copied the way a careless operator would
    env = _environment({**NODE, "SPE_PKI_DIR": str(pki), "SPE_DATA_DIR": str(tmp_path / "d")})
    result = _spe(SERVE_NODE, env, tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    message = result.stderr.strip()
    assert "SPE_PKI_DIR holds private keys" in message
    assert "site-a.key" in message
    assert "\n" not in message
    assert "Traceback" not in result.stderr
    # With the key closed again, the same settings load.
    (pki / "site-a.key").chmod(0o600)
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        if key.startswith("SPE_"):
            monkeypatch.setenv(key, value)
    assert Settings().pki_dir == pki
