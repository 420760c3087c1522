"""deploy/proxy: the nginx and Caddy configurations the runbook gives, run for real (Debian's
nginx and caddy) in front of a central service bound to loopback, as production allows it:
HTTPS through the proxy with HSTS (the centre believes the proxy's X-Forwarded-Proto),
plain HTTP redirected, and a client's forged X-Forwarded-For not reaching the audit log.

Only what a test run cannot have is changed: ports, certificate paths, the public name
(localhost) and, for Caddy, its global options (no admin endpoint, no ACME)."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from gateway.node.orthanc_process import free_port
from spe.app import create_central_app
from spe.audit import CentralAuditEntry
from spe.db import make_engine, make_sessionmaker
from spe.db.migrate import upgrade
from spe.pki import init_pki
from spe.settings import REPO_ROOT, Settings
from spe.web.https import HSTS, central_listen_options
from tests.conftest import IN_CI
from tests.servers import bind, serve

PROXY = REPO_ROOT / "deploy" / "proxy"
FORGED = "203.0.113.66"


def _program(name: str) -> str:
    found = shutil.which(name)
    if not found:
        if IN_CI:
            pytest.fail(f"{name} (Debian package) is needed in CI")
        pytest.skip(f"{name} is not installed (Debian package)")
    return found


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("proxy-tls") / "pki"
    init_pki(folder, nodes=[], hub="proxy")  # SANs 127.0.0.1 and localhost
    return folder


def _own_home(folder: Path) -> dict[str, str]:
    """Caddy keeps its autosaved configuration and data under HOME/XDG: the test's own."""
    return {**os.environ, "HOME": str(folder), "XDG_CONFIG_HOME": str(folder / "config"),
            "XDG_DATA_HOME": str(folder / "data")}


@contextmanager
def running(argv: list[str], port: int, cwd: Path) -> Iterator[None]:
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=_own_home(cwd))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise AssertionError(process.communicate()[0]) from None
                time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def nginx(tls: Path, tmp: Path, upstream: int) -> tuple[list[str], int, int]:
    http, https = free_port(), free_port()
    site = (PROXY / "nginx.conf").read_text()
    site = site.replace("listen [::]:80;", "").replace("listen [::]:443 ssl http2;", "")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{http};")
    site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;")
    site = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {tls / 'proxy.crt'};", site)
    site = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {tls / 'proxy.key'};",
                  site)
    site = site.replace("spe.example.org", "localhost")
    site = site.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{upstream}")
    assert str(upstream) in site
    (tmp / "site.conf").write_text(site)
    (tmp / "nginx.conf").write_text(
        f"user root; pid {tmp}/nginx.pid; error_log {tmp}/error.log;\n"
        "events {}\n"
        f"http {{ access_log off; client_body_temp_path {tmp}/body; "
        f"proxy_temp_path {tmp}/proxy; include {tmp}/site.conf; }}\n")
    return ([_program("nginx"), "-p", str(tmp), "-c", str(tmp / "nginx.conf"),
             "-g", "daemon off;"], http, https)


def caddy(tls: Path, tmp: Path, upstream: int) -> tuple[list[str], int, int]:
    http, https = free_port(), free_port()
    text = (PROXY / "Caddyfile").read_text()
    (body,) = re.findall(r"^spe\.example\.org \{\n(.*)^\}", text, re.S | re.M)
    assert "reverse_proxy 127.0.0.1:8000" in body
    body = body.replace("127.0.0.1:8000", f"127.0.0.1:{upstream}")
    (tmp / "Caddyfile").write_text(
        f"{{\n\tadmin off\n\thttp_port {http}\n\thttps_port {https}\n"
        f"\tskip_install_trust\n\tstorage file_system {tmp}/storage\n}}\n"
        f"localhost {{\n\ttls {tls / 'proxy.crt'} {tls / 'proxy.key'}\n{body}}}\n")
    return ([_program("caddy"), "run", "--adapter", "caddyfile", "--config",
             str(tmp / "Caddyfile")], http, https)


def _clients_audited(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            rows = session.execute(select(CentralAuditEntry.details)).scalars().all()
    finally:
        engine.dispose()
    return [json.loads(d).get("client", "") for d in rows]


@pytest.mark.parametrize("make", [nginx, caddy], ids=["nginx", "caddy"])
def test_the_proxy_serves_the_centre_over_https_with_hsts(make, tls: Path,
                                                          tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'central.db'}"
    upgrade(url, "central")
    # Production's own refusal lets exactly this through: plain HTTP on loopback.
    settings = Settings(data_dir=tmp_path / "data", database_url=url)
    sock = bind()
    upstream = sock.getsockname()[1]
    argv, http, https = make(tls, tmp_path, upstream)
    verify = ssl.create_default_context(cafile=str(tls / "ca.crt"))
    with serve(create_central_app(settings), sock,
               **central_listen_options(settings, "127.0.0.1")), \
            running(argv, http, tmp_path):
        response = httpx.get(f"https://localhost:{https}/health", verify=verify)
        assert response.status_code == 200
        assert response.headers["strict-transport-security"] == HSTS
        plain = httpx.get(f"http://127.0.0.1:{http}/health", headers={"Host": "localhost"})
        assert plain.status_code in (301, 308)
        assert plain.headers["location"].startswith("https://")
        # A forged client address does not reach the audit log through the proxy.
        before = len(_clients_audited(url))
        refused = httpx.get(f"https://localhost:{https}/api/v1/users", verify=verify,
                            headers={"X-Forwarded-For": FORGED})
        assert refused.status_code == 401
        assert refused.headers["strict-transport-security"] == HSTS
    clients = _clients_audited(url)[before:]
    assert clients  # the refusal was audited: the check below is not vacuous
    assert FORGED not in clients
    assert set(clients) == {"127.0.0.1"}


def test_caddy_validates_the_configuration_as_shipped(tmp_path: Path) -> None:
    result = subprocess.run([_program("caddy"), "validate", "--adapter", "caddyfile",
                             "--config", str(PROXY / "Caddyfile")],
                            capture_output=True, text=True, timeout=60,
                            env=_own_home(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr
