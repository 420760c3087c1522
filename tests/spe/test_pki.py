"""The federation's PKI and mutual TLS, against a real uvicorn TLS server and httpx clients."""

from __future__ import annotations

import asyncio
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from fastapi import FastAPI
from typer.testing import CliRunner

from spe.cli.main import app as cli
from spe.pki import (
    PkiError,
    client_ssl_context,
    common_name,
    init_pki,
    private_key_of,
    public_key_of,
    server_ssl_options,
)

runner = CliRunner()

# How a refused client certificate reaches httpx. The server (uvicorn on asyncio) drops the
# connection without a TLS alert: under TLS 1.2 that ends the handshake (ConnectError);
# under TLS 1.3 the client's handshake is already complete when the server checks its
# certificate, so the request is sent and the drop is seen on the first read
# (RemoteProtocolError "Server disconnected without sending a response", or ReadError).
REFUSED = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)
TLS_VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@dataclass(frozen=True)
class Pkis:
    federation: Path
    other: Path  # a second, unrelated federation: same names, another CA


@dataclass(frozen=True)
class Server:
    url: str


@pytest.fixture(scope="session")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> Pkis:
    root = tmp_path_factory.mktemp("pki")
    federation, other = root / "federation", root / "other"
    init_pki(federation, nodes=["site-a", "site-b"])
    init_pki(other, nodes=["site-a"])
    return Pkis(federation, other)


def _serve(pki_dir: Path, name: str) -> Iterator[Server]:
    """A tiny FastAPI app under uvicorn with the node's mutual-TLS options, in a thread."""
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict:
        return {"pong": True}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="critical", lifespan="off",
                            **server_ssl_options(pki_dir, name))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("the TLS test server did not start")
            time.sleep(0.02)
        yield Server(f"https://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def node(pkis: Pkis) -> Iterator[Server]:
    """Institution node site-a of the federation."""
    yield from _serve(pkis.federation, "site-a")


@pytest.fixture(scope="module")
def rogue(pkis: Pkis) -> Iterator[Server]:
    """A server calling itself site-a, certified by the other federation's CA."""
    yield from _serve(pkis.other, "site-a")


#: Generous: a refusal comes at once, and a loaded CI machine can take seconds to shake hands.
TIMEOUT = 30


def get(ctx: ssl.SSLContext, url: str, mode: str, **kwargs) -> httpx.Response:
    """GET with the sync client or, as the hub does, with httpx.AsyncClient."""
    if mode == "sync":
        with httpx.Client(verify=ctx, timeout=TIMEOUT) as client:
            return client.get(url, **kwargs)

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(verify=ctx, timeout=TIMEOUT) as client:
            return await client.get(url, **kwargs)

    return asyncio.run(run())


def trusting(ca_dir: Path, cert_dir: Path | None = None,
             tls: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client trusting ca_dir's CA, presenting cert_dir's hub certificate if given."""
    ctx = ssl.create_default_context(cafile=str(ca_dir / "ca.crt"))
    if cert_dir is not None:
        ctx.load_cert_chain(cert_dir / "hub.crt", cert_dir / "hub.key")
    if tls is not None:
        ctx.minimum_version = ctx.maximum_version = tls
    return ctx


@pytest.fixture(params=["sync", "async"])
def mode(request) -> str:
    return request.param


# -- the TLS layer -------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["hub", "site-a"])
def test_the_hub_and_the_nodes_own_operator_get_through(pkis, node, mode, client):
    # A node pins two certificates: its hub's, and its own (its operator's).
    response = get(client_ssl_context(pkis.federation, client), f"{node.url}/ping", mode)
    assert response.status_code == 200
    assert response.json() == {"pong": True}


@pytest.mark.parametrize("tls", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
def test_another_member_of_the_federation_is_refused_at_the_handshake(pkis, node, mode,
                                                                      tls):
    # site-b's certificate is from the federation's CA, but site-a takes calls from its
    # hub and its operator only: a compromised node gets no connection.
    ctx = client_ssl_context(pkis.federation, "site-b")
    ctx.minimum_version = ctx.maximum_version = tls
    with pytest.raises(REFUSED):
        get(ctx, f"{node.url}/ping", mode)
    assert get(client_ssl_context(pkis.federation, "hub"), f"{node.url}/ping",
               mode).status_code == 200


@pytest.mark.parametrize("tls", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
def test_a_client_without_a_certificate_is_refused(pkis, node, mode, tls):
    with pytest.raises(REFUSED):
        get(trusting(pkis.federation, tls=tls), f"{node.url}/ping", mode)
    # The refusal was the server's choice, not a dead server: a member still gets in.
    assert get(client_ssl_context(pkis.federation, "hub"), f"{node.url}/ping",
               mode).status_code == 200


@pytest.mark.parametrize("tls", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
def test_a_client_certified_by_another_ca_is_refused(pkis, node, mode, tls):
    # It trusts our CA, so the server's certificate passes; only its own is wrong.
    ctx = trusting(pkis.federation, cert_dir=pkis.other, tls=tls)
    with pytest.raises(REFUSED):
        get(ctx, f"{node.url}/ping", mode)
    assert get(client_ssl_context(pkis.federation, "hub"), f"{node.url}/ping",
               mode).status_code == 200


def test_the_client_refuses_a_server_certified_by_another_ca(pkis, rogue, mode, monkeypatch):
    # Were the system store loaded, SSL_CERT_FILE would make the other CA trusted.
    monkeypatch.setenv("SSL_CERT_FILE", str(pkis.other / "ca.crt"))
    control = ssl.create_default_context()  # loads the "system" store: the other CA
    control.load_cert_chain(pkis.other / "hub.crt", pkis.other / "hub.key")
    assert get(control, f"{rogue.url}/ping", mode).status_code == 200

    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        get(client_ssl_context(pkis.federation, "hub"), f"{rogue.url}/ping", mode)


def test_the_client_checks_the_server_name(pkis, node, mode):
    ctx = client_ssl_context(pkis.federation, "hub")
    assert ctx.check_hostname
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    url = f"{node.url}/ping"
    assert get(ctx, url, mode, extensions={"sni_hostname": "site-a"}).status_code == 200
    # site-a's certificate is from our CA but is not site-b's: refused.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        get(ctx, url, mode, extensions={"sni_hostname": "site-b"})


def test_server_options_require_one_of_the_pinned_certificates(pkis):
    from spe.peer import PeerCertProtocol

    options = server_ssl_options(pkis.federation, "site-a")
    assert set(options) == {"ssl_context_factory", "http"}
    assert issubclass(options["http"], PeerCertProtocol)  # requests name their certificate
    ctx = options["ssl_context_factory"](None, None)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    # Two certificates (the hub's and site-a's; the handshake tests above say which),
    # and no CA: nothing else the CA signed is trusted.
    assert ctx.cert_store_stats() == {"x509": 2, "crl": 0, "x509_ca": 0}


# -- the files -----------------------------------------------------------------------------


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_ca_certificate(pkis):
    ca = _cert(pkis.federation / "ca.crt")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    ca.verify_directly_issued_by(ca)
    assert ca.issuer == ca.subject


@pytest.mark.parametrize("name", ["hub", "site-a", "site-b"])
def test_service_certificates(pkis, name):
    ca = _cert(pkis.federation / "ca.crt")
    cert = _cert(pkis.federation / f"{name}.crt")
    cert.verify_directly_issued_by(ca)
    assert common_name(pkis.federation / f"{name}.crt") == name
    assert cert.public_key().curve.name == "secp256r1"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name, "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.not_valid_after_utc <= ca.not_valid_after_utc


def test_file_modes(pkis):
    directory = pkis.federation
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("ca", "hub", "site-a", "site-b"):  # the service's own, like all it keeps
        assert stat.S_IMODE((directory / f"{name}.key").stat().st_mode) == 0o600
        assert stat.S_IMODE((directory / f"{name}.crt").stat().st_mode) == 0o600
    # and the CA's index of what it issued, copies of those certificates, and its
    # revocation list (spe/pki/enrolment.py, spe/pki/revocation.py)
    for name in ("crl.pem", "index.json"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "issued").stat().st_mode) == 0o700
    assert len(list((directory / "issued").iterdir())) == 3
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [f"{n}.{ext}" for n in ("ca", "hub", "site-a", "site-b") for ext in ("crt", "key")]
        + ["crl.pem", "index.json", "issued"])


def test_the_hub_signs_and_a_node_verifies_with_hub_crt(pkis):
    message = b"hub-signed query context"
    signature = private_key_of(pkis.federation / "hub.key").sign(
        message, ec.ECDSA(hashes.SHA256()))
    public_key_of(pkis.federation / "hub.crt").verify(
        signature, message, ec.ECDSA(hashes.SHA256()))
    other = public_key_of(pkis.other / "hub.crt")
    with pytest.raises(InvalidSignature):  # another federation's hub
        other.verify(signature, message, ec.ECDSA(hashes.SHA256()))


def test_missing_files_name_the_file_and_the_command(tmp_path, pkis):
    for call in (lambda: server_ssl_options(tmp_path, "site-a"),
                 lambda: client_ssl_context(tmp_path, "hub"),
                 lambda: public_key_of(tmp_path / "hub.crt"),
                 lambda: private_key_of(tmp_path / "hub.key")):
        with pytest.raises(PkiError, match=r"does not exist; make it with `spe pki request`"):
            call()
    with pytest.raises(PkiError, match="site-z.crt"):
        server_ssl_options(pkis.federation, "site-z")
    garbage = tmp_path / "hub.crt"
    garbage.write_text("not a certificate")
    with pytest.raises(PkiError, match="is not a PEM certificate"):
        common_name(garbage)


def test_rerun_refuses_adding_a_node_reuses_the_ca_and_force_replaces_it(tmp_path):
    pki = tmp_path / "pki"
    init_pki(pki, nodes=["site-a"])
    ca_before, hub_before = (pki / "ca.crt").read_bytes(), (pki / "hub.crt").read_bytes()

    with pytest.raises(PkiError, match="already has a federation CA"):
        init_pki(pki, nodes=["site-a"])
    assert (pki / "ca.crt").read_bytes() == ca_before

    added = init_pki(pki, nodes=["site-c"])
    assert not added.ca_created
    assert [i.name for i in added.issued] == ["site-c"]
    assert added.kept == ["hub"]
    assert (pki / "ca.crt").read_bytes() == ca_before
    assert (pki / "hub.crt").read_bytes() == hub_before
    _cert(pki / "site-c.crt").verify_directly_issued_by(_cert(pki / "ca.crt"))
    assert stat.S_IMODE((pki / "site-c.key").stat().st_mode) == 0o600

    replaced = init_pki(pki, nodes=[], force=True)
    assert replaced.ca_created
    assert replaced.ca_replaced
    assert (pki / "ca.crt").read_bytes() != ca_before
    # Every certificate in the folder comes from the new CA: none is left behind.
    assert sorted(i.name for i in replaced.issued) == ["hub", "site-a", "site-c"]
    new_ca = _cert(pki / "ca.crt")
    for name in ("hub", "site-a", "site-c"):
        _cert(pki / f"{name}.crt").verify_directly_issued_by(new_ca)


def test_refusals(tmp_path):
    with pytest.raises(PkiError, match="invalid name"):
        init_pki(tmp_path / "a", nodes=["../etc"])
    with pytest.raises(PkiError, match="invalid name"):
        init_pki(tmp_path / "b", nodes=["ca"])
    with pytest.raises(PkiError, match="invalid --host"):
        init_pki(tmp_path / "c", nodes=["site-a"], hosts=["not a host"])
    with pytest.raises(PkiError, match="--days"):
        init_pki(tmp_path / "d", nodes=["site-a"], days=5000)
    pki = tmp_path / "e"
    init_pki(pki, nodes=["site-a"])
    (pki / "ca.key").write_bytes(b"garbage")
    with pytest.raises(PkiError, match="ca.key is not an unencrypted PEM private key"):
        init_pki(pki, nodes=["site-b"])


# -- the command ---------------------------------------------------------------------------


def spe(*args: object):
    result = runner.invoke(cli, ["pki", "init", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result, " ".join(result.output.split())


def test_cli_init_writes_the_files(tmp_path):
    out = tmp_path / "pki"
    result, text = spe("--out", out, "--node", "site-a", "--node", "site-b",
                       "--host", "10.0.0.5", "--host", "node-a.example.org", "--days", 30)
    assert result.exit_code == 0, result.output
    assert "secret" in text
    for name in ("ca", "hub", "site-a", "site-b"):
        assert (out / f"{name}.crt").is_file()
        assert (out / f"{name}.key").is_file()
    cert = _cert(out / "site-a.crt")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["site-a", "node-a.example.org"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 30 <= lifetime.days <= 31

    result, text = spe("--out", out, "--node", "site-a")
    assert result.exit_code == 2
    assert "error" in text
    assert "already has a federation CA" in text

    result, text = spe("--out", out, "--node", "site-c")
    assert result.exit_code == 0, result.output
    assert "kept the existing certificates of hub" in text
    assert (out / "site-c.crt").is_file()


def test_cli_bad_out_is_a_clear_error(tmp_path):
    a_file = tmp_path / "regular-file"
    a_file.write_text("x")
    result, text = spe("--out", a_file / "pki", "--node", "site-a")
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)
    assert "error" in text
    assert "cannot create the PKI folder" in text
    assert "Not a directory" in text

    result, text = spe("--out", tmp_path / "x", "--node", "Site A")
    assert result.exit_code == 2
    assert "invalid name 'Site A'" in text
