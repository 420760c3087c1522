"""HTTPS at the central service, from outside: real TLS (uvicorn with a test CA's
certificate, httpx trusting only that CA), a plain-HTTP request to the TLS port failing,
HSTS on HTTPS answers only (also when a trusted proxy says the request was HTTPS, never when
an untrusted client says so), and production refusing to serve plain HTTP off loopback
(the real `spe serve` in a fresh process: exit 2, one line, nothing written); a production
node answering nothing but mutual TLS with a pinned certificate.

No page of the central service sets a cookie (tokens travel as bearer headers); the test
below keeps it so, since a cookie would need Secure, HttpOnly and SameSite."""

from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.node.orthanc_process import free_port
from spe.app import create_central_app
from spe.db.migrate import upgrade
from spe.pki import init_pki
from spe.settings import REPO_ROOT, InsecureConfiguration, Settings
from spe.web.https import HSTS, central_listen_options
from tests.servers import bind, serve

IDP = "https://idp.example/realms/spe"
PRODUCTION = {
    "SPE_ENVIRONMENT": "production",
    "SPE_SECRET_KEY": secrets.token_urlsafe(48),
    "SPE_DATABASE_URL": "postgresql://spe@db.example/spe",  # refused before connecting
    "SPE_OIDC_ISSUER": IDP,
    "SPE_OIDC_JWKS_URL": f"{IDP}/protocol/openid-connect/certs",
}


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Path:
    """A test CA and a server certificate for 127.0.0.1 and localhost (ca.crt, central.*)."""
    folder = tmp_path_factory.mktemp("tls") / "pki"
    init_pki(folder, nodes=[], hub="central")
    return folder


def _trusting(folder: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(folder / "ca.crt"))


def _central(tmp_path: Path, **fields) -> tuple[Settings, object]:
    url = f"sqlite:///{tmp_path / 'central.db'}"
    upgrade(url, "central")
    settings = Settings(data_dir=tmp_path, database_url=url, **fields)
    return settings, create_central_app(settings)


def test_the_centre_serves_https_with_hsts_and_plain_http_to_its_port_fails(
        tls: Path, tmp_path: Path) -> None:
    settings, app = _central(tmp_path)
    options = central_listen_options(settings, "127.0.0.1", tls_cert=tls / "central.crt",
                                     tls_key=tls / "central.key")
    sock = bind()
    port = sock.getsockname()[1]
    with serve(app, sock, **options):
        response = httpx.get(f"https://127.0.0.1:{port}/health", verify=_trusting(tls))
        assert response.status_code == 200
        assert response.headers["strict-transport-security"] == HSTS
        # Every answer over HTTPS carries it, refusals too.
        refused = httpx.get(f"https://localhost:{port}/api/v1/users", verify=_trusting(tls))
        assert refused.status_code == 401
        assert refused.headers["strict-transport-security"] == HSTS
        # A client speaking plain HTTP to the TLS port gets no HTTP answer at all.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        # A client that does not trust the certificate's CA stops at the handshake.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://127.0.0.1:{port}/health", verify=True, timeout=5)


def test_hsts_only_when_the_request_was_https_by_a_trusted_proxys_word(
        tmp_path: Path) -> None:
    # Bound to loopback behind a proxy on this machine (the default trust: 127.0.0.1).
    settings, app = _central(tmp_path)
    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/health"
    with serve(app, sock, **central_listen_options(settings, "127.0.0.1")):
        plain = httpx.get(url)
        assert plain.status_code == 200
        assert "strict-transport-security" not in plain.headers  # meaningless over HTTP
        proxied = httpx.get(url, headers={"X-Forwarded-Proto": "https"})
        assert proxied.headers["strict-transport-security"] == HSTS


def test_an_untrusted_client_cannot_claim_https(tmp_path: Path) -> None:
    # The proxy is elsewhere: a client on this machine saying "https" is not believed.
    settings, app = _central(tmp_path / "c", tls_terminated_by_proxy=True,
                             forwarded_allow_ips="192.0.2.10")
    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/health"
    with serve(app, sock, **central_listen_options(settings, "0.0.0.0")):
        response = httpx.get(url, headers={"X-Forwarded-Proto": "https"})
        assert response.status_code == 200
        assert "strict-transport-security" not in response.headers


def test_no_page_sets_a_cookie() -> None:
    sources = [p for root in ("spe", "catalogue", "gateway")
               for p in (REPO_ROOT / root).rglob("*.py")]
    assert len(sources) > 50  # the walk saw the code
    setting = [str(p) for p in sources
               if "set_cookie" in p.read_text() or "Set-Cookie" in p.read_text()]
    assert not setting, f"cookies need Secure, HttpOnly, SameSite and a test: {setting}"


# ----- production refusals of `spe serve central`, as an operator meets them -----

def _spe_serve(args: list[str], changes: dict[str, str], cwd: Path,
               timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPE_")}
    env.update(PRODUCTION)
    env.update(changes)
    return subprocess.run([sys.executable, "-m", "spe.cli", "serve", "central", *args,
                           "--port", str(free_port())], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _garbage(tmp_path: Path) -> dict[str, str]:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    bad.chmod(0o600)
    return {"SPE_TLS_CERT_FILE": str(bad), "SPE_TLS_KEY_FILE": str(bad)}


REFUSED = {
    "plain HTTP on every interface": (["--host", "0.0.0.0"], {}, "does not serve plain HTTP"),
    "plain HTTP on an address of the network": (["--host", "192.0.2.1"], {},
                                                "does not serve plain HTTP"),
    "a proxy with no address": (["--host", "0.0.0.0"],
                                {"SPE_TLS_TERMINATED_BY_PROXY": "true"},
                                "needs SPE_FORWARDED_ALLOW_IPS"),
    "every client trusted as a proxy": (["--host", "0.0.0.0"],
                                        {"SPE_TLS_TERMINATED_BY_PROXY": "true",
                                         "SPE_FORWARDED_ALLOW_IPS": "*"}, "is '*'"),
    "a certificate without its key": (["--host", "0.0.0.0", "--tls-cert", "/etc/hostname"],
                                      {}, "needs its key"),
    "a certificate file that is none": (["--host", "0.0.0.0"], "garbage",
                                        "cannot load the TLS certificate"),
    "a missing certificate": (["--tls-cert", "/nonexistent.crt", "--tls-key",
                               "/nonexistent.key"], {}, "does not exist"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_production_refuses_to_serve_the_centre_unprotected(case: str,
                                                            tmp_path: Path) -> None:
    args, changes, reason = REFUSED[case]
    if changes == "garbage":
        changes = _garbage(tmp_path)
    data = tmp_path / "data"
    result = _spe_serve(args, {**changes, "SPE_DATA_DIR": str(data)}, tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    message = result.stderr.strip()
    assert reason in message, message
    assert "\n" not in message, message
    assert "Traceback" not in result.stderr
    assert not data.exists()  # refused before anything was written


def test_a_tls_key_every_user_can_read_is_refused(tls: Path, tmp_path: Path) -> None:
    key = tmp_path / "central.key"
    key.write_bytes((tls / "central.key").read_bytes())
    key.chmod(0o644)
    settings = Settings(**{k[4:].lower(): v for k, v in PRODUCTION.items()},
                        data_dir=tmp_path)
    with pytest.raises(InsecureConfiguration, match="can be read by every user"):
        central_listen_options(settings, "0.0.0.0", tls_cert=tls / "central.crt",
                               tls_key=key)
    key.chmod(0o640)  # a group the service is in may read it
    assert central_listen_options(settings, "0.0.0.0", tls_cert=tls / "central.crt",
                                  tls_key=key)["ssl_keyfile"] == str(key)


def test_a_key_that_is_not_the_certificates_is_refused(tls: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_pki(other, nodes=[], hub="central")
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(InsecureConfiguration, match="cannot load the TLS certificate"):
        central_listen_options(settings, "127.0.0.1", tls_cert=tls / "central.crt",
                               tls_key=other / "central.key")


def test_production_allows_loopback_or_a_named_proxy(tmp_path: Path) -> None:
    settings = Settings(**{k[4:].lower(): v for k, v in PRODUCTION.items()},
                        data_dir=tmp_path)
    for host in ("127.0.0.1", "localhost", "::1"):
        assert "ssl_certfile" not in central_listen_options(settings, host)
    behind = Settings(**{k[4:].lower(): v for k, v in PRODUCTION.items()}, data_dir=tmp_path,
                      tls_terminated_by_proxy=True, forwarded_allow_ips="10.0.0.0/8")
    options = central_listen_options(behind, "0.0.0.0")
    assert options["forwarded_allow_ips"] == "10.0.0.0/8"
    assert options["proxy_headers"] is True


def test_a_node_takes_no_tls_certificate_options(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPE_")}
    result = subprocess.run(
        [sys.executable, "-m", "spe.cli", "serve", "node", "--tls-cert", "a", "--tls-key", "b"],
        env={**env, "SPE_DATA_DIR": str(tmp_path / "d")}, cwd=tmp_path, capture_output=True,
        text=True, timeout=60)
    assert result.returncode == 2
    assert "SPE_PKI_DIR" in result.stderr
    assert "Traceback" not in result.stderr


def test_spe_serve_central_in_production_serves_https(tls: Path, postgres_url: str,
                                                      tmp_path: Path) -> None:
    """The real command an operator runs, on every interface with its certificate."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPE_")}
    env.update(PRODUCTION, SPE_DATABASE_URL=postgres_url, SPE_DATA_DIR=str(tmp_path / "d"),
               SPE_TLS_CERT_FILE=str(tls / "central.crt"),
               SPE_TLS_KEY_FILE=str(tls / "central.key"))
    process = subprocess.Popen(
        [sys.executable, "-m", "spe.cli", "serve", "central", "--host", "0.0.0.0",
         "--port", str(port)], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"https://127.0.0.1:{port}/health",
                                     verify=_trusting(tls), timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(process.communicate()[1]) from None
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.headers["strict-transport-security"] == HSTS
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_production_node_speaks_only_mutual_tls(postgres_url: str, tmp_path: Path) -> None:
    """`spe serve node` as an operator runs it, on every interface: plain HTTP and TLS
    without a pinned client certificate get no HTTP answer; the node's own certificate
    does."""
    from spe.pki import client_ssl_context

    pki = tmp_path / "pki"
    init_pki(pki, nodes=["site-a"])
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPE_")}
    env.update(PRODUCTION, SPE_DATABASE_URL=postgres_url, SPE_DATA_DIR=str(tmp_path / "d"),
               SPE_NODE_ID="site-a", SPE_PKI_DIR=str(pki), SPE_NODE_WORKERS="0")
    process = subprocess.Popen(
        [sys.executable, "-m", "spe.cli", "serve", "node", "--host", "0.0.0.0",
         "--port", str(port)], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    own = client_ssl_context(pki, "site-a")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"https://127.0.0.1:{port}/health", verify=own, timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(process.communicate()[1]) from None
                time.sleep(0.2)
        assert response.status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        with pytest.raises(httpx.TransportError):  # TLS, but no client certificate
            httpx.get(f"https://127.0.0.1:{port}/health", verify=_trusting(pki), timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=30)
