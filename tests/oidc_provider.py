"""A real OpenID Connect provider for tests: panva's `oidc-provider` (npm, pinned in
tests/oidc/package.json, OpenID Certified) under Node, over real TLS on a free loopback port,
configured as a small realm (tests/oidc/provider.mjs).

Missing Node or the npm package (`npm ci --prefix tests/oidc`, which `make test` runs)
skips the test, or fails it when `CI` is set to a true value, as for Orthanc.

Tokens are obtained the way real clients do: authorization code with PKCE for a user (the
realm's login form, posted by the test), client credentials for a service account.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc.jwk import ECKey

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc"
MIN_NODE = 20
AUDIENCE = "spe"
#: The web client users sign in to (public, PKCE), and its redirect URI (never fetched).
WEB_CLIENT = "spe-web"
REDIRECT_URI = "https://spe.test/callback"
#: The central service's confidential client with a service account (role hdab).
HARVESTER = "spe-central"
HARVESTER_SECRET = secrets.token_urlsafe(24)
USERS = {
    "alice": {"password": "alice-pw", "roles": ["researcher"], "name": "Alice Researcher",
              "email": "alice@example.org"},
    "olga": {"password": "olga-pw", "roles": ["approver"], "institution": "site-a"},
    # A research login's user: group memberships, no roles.
    "erik": {"password": "erik-pw", "eduperson_entitlement": [
        "urn:geant:lifescience-ri.eu:group:ehds-spe:researchers#login.example.org",
        "urn:geant:lifescience-ri.eu:group:another-project#login.example.org"]},
}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def require_provider() -> str:
    """The `node` binary; skips (fails in CI) without Node or the npm package."""
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "Node.js (`node`) is not installed"
    elif (version := _node_major(node)) < MIN_NODE:
        problem = f"Node.js {MIN_NODE} or later is needed by oidc-provider, not {version}"
    elif not (PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        problem = f"the npm package oidc-provider is not installed (npm ci --prefix {PROVIDER_DIR})"
    if problem:
        if _in_ci():
            pytest.fail(f"{problem}, but required in CI (CI={os.environ['CI']!r})")
        pytest.skip(problem)
    return node


def _node_major(node: str) -> int:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    try:
        return int(out.stdout.strip().lstrip("v").split(".")[0])
    except ValueError:
        return 0


def signing_key() -> dict:
    """A new private EC key (P-256, ES256) with a kid of its own, as a JWK."""
    key = ECKey.generate_key("P-256", parameters={"kid": secrets.token_hex(8), "use": "sig",
                                                  "alg": "ES256"}, private=True)
    return key.as_dict(private=True)


def tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key): a CA of the provider's own and a certificate for
    127.0.0.1 it signed; the SPE trusts the CA by SPE_OIDC_CA_FILE."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test identity provider CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class OidcProvider:
    """A running provider; `rotate()` restarts it signing with a new key, `stop()` takes it
    down (`start()` brings it back on the same address)."""

    node: str
    directory: Path
    access_token_ttl: int
    #: More clients (oidc-provider metadata, plus "roles"), e.g. one with private_key_jwt.
    extra_clients: list[dict] = field(default_factory=list)
    issuer: str = ""
    keys: list[dict] = field(default_factory=list)
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.ca, self.cert, self.key = tls_files(self.directory / "tls")
        self.issuer = f"https://127.0.0.1:{_free_port()}"
        self.keys = [signing_key()]

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    @property
    def kid(self) -> str:
        return self.keys[0]["kid"]

    def http(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.issuer, timeout=10, **kw,
                            verify=ssl.create_default_context(cafile=str(self.ca)))

    def start(self) -> None:
        config = self.directory / "provider.json"
        config.write_text(json.dumps({
            "port": urlsplit(self.issuer).port, "issuer": self.issuer, "audience": AUDIENCE,
            "tls": {"cert": str(self.cert), "key": str(self.key)},
            "keys": self.keys, "access_token_ttl": self.access_token_ttl, "users": USERS,
            "clients": [
                {"client_id": WEB_CLIENT, "token_endpoint_auth_method": "none",
                 "grant_types": ["authorization_code"], "response_types": ["code"],
                 "redirect_uris": [REDIRECT_URI]},
                {"client_id": HARVESTER, "client_secret": HARVESTER_SECRET,
                 "grant_types": ["client_credentials"], "response_types": [],
                 "redirect_uris": [], "roles": ["hdab"]},
                *self.extra_clients,
            ],
        }))
        log = (self.directory / "provider.log").open("ab")
        self.process = subprocess.Popen(
            [self.node, str(PROVIDER_DIR / "provider.mjs"), str(config)], cwd=PROVIDER_DIR,
            stdout=subprocess.PIPE, stderr=log)
        line = self.process.stdout.readline().decode()  # the provider's "listening on"
        if "listening" not in line:
            self.stop()
            raise RuntimeError("the OIDC provider did not start: "
                               + (self.directory / "provider.log").read_text()[-2000:])
        with self.http() as http:  # up and serving its discovery document over TLS
            http.get("/.well-known/openid-configuration").raise_for_status()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def rotate(self, *, keep_old: bool = True) -> None:
        """A new signing key (a new kid); the old one still published when `keep_old`."""
        self.stop()
        self.keys = [signing_key(), *(self.keys if keep_old else [])]
        self.start()

    # -- tokens, as clients obtain them ---------------------------------------------

    def client_credentials(self, client_id: str = HARVESTER,
                           secret: str = HARVESTER_SECRET) -> dict:
        with self.http() as http:
            resp = http.post("/token", data={"grant_type": "client_credentials"},
                             auth=(client_id, secret))
        if resp.status_code != 200:
            raise RuntimeError(f"client credentials refused: {resp.text}")
        return resp.json()

    def login(self, user: str, password: str | None = None) -> dict:
        """Authorization code with PKCE (RFC 7636) for `user`, through the realm's login
        form as a browser would post it; the token endpoint's answer."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(12)
        with self.http() as http:
            resp = http.get("/auth", params={
                "client_id": WEB_CLIENT, "response_type": "code", "redirect_uri": REDIRECT_URI,
                "scope": "openid profile email spe", "state": state,
                "code_challenge": challenge, "code_challenge_method": "S256"})
            location = ""
            for _ in range(10):
                if resp.status_code not in (302, 303):
                    break
                location = urljoin(str(resp.url), resp.headers["location"])
                if location.startswith(REDIRECT_URI):
                    break
                resp = http.get(location)
                if resp.status_code == 200 and "<form" in resp.text:  # the login page
                    action = resp.text.split('action="', 1)[1].split('"', 1)[0]
                    resp = http.post(action, data={
                        "login": user, "password": password or USERS[user]["password"]})
            if not location.startswith(REDIRECT_URI):
                raise RuntimeError(f"no code for {user}: HTTP {resp.status_code} {resp.text}")
            query = parse_qs(urlsplit(location).query)
            assert query["state"] == [state]
            resp = http.post("/token", data={
                "grant_type": "authorization_code", "code": query["code"][0],
                "redirect_uri": REDIRECT_URI, "client_id": WEB_CLIENT,
                "code_verifier": verifier})
        if resp.status_code != 200:
            raise RuntimeError(f"authorization code refused: {resp.text}")
        return resp.json()


@contextmanager
def oidc_provider(directory: Path, *, access_token_ttl: int = 300,
                  extra_clients: list[dict] | None = None) -> Iterator[OidcProvider]:
    provider = OidcProvider(require_provider(), directory, access_token_ttl,
                            list(extra_clients or []))
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()


def wait_until_expired(token: str) -> None:
    """Sleeps until `token`'s exp has passed (by its own claims, read unverified)."""
    payload = token.split(".")[1]
    exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
    time.sleep(max(0.0, exp - time.time()) + 1.1)
