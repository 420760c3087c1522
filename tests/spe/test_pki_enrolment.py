"""Enrolment without moving private keys (`spe pki request | sign | install`), per-name
hosts of `spe pki init`, rotation without a restart, and a search of every file written
for private keys outside their owner's folder."""

from __future__ import annotations

import json
import ssl
import stat
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI
from typer.testing import CliRunner

from spe.cli.main import app as cli
from spe.pki import PkiError, init_pki, private_key_of, server_ssl_options
from spe.pki.enrolment import install_certificate, request_certificate, sign_request
from spe.pki.index import read_index
from tests.pki_federation import client_context, enrol_federation
from tests.servers import bind, serve

runner = CliRunner()


def _sans(cert: Path) -> set[str]:
    ext = x509.load_pem_x509_certificate(cert.read_bytes()).extensions \
        .get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.get_values_for_type(x509.IPAddress)}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_request_sign_install_through_the_cli(tmp_path):
    ca, node, transfer = tmp_path / "ca", tmp_path / "node-a" / "pki", tmp_path / "transfer"
    transfer.mkdir()
    assert runner.invoke(cli, ["pki", "init", "--out", str(ca)]).exit_code == 0
    result = runner.invoke(cli, ["pki", "request", "--name", "site-a", "--out", str(node),
                                 "--host", "node-a.example.org", "--host", "localhost"])
    assert result.exit_code == 0, result.output
    assert _mode(node) == 0o700
    assert _mode(node / "site-a.key") == 0o600
    csr = transfer / "site-a.csr"
    csr.write_bytes((node / "site-a.csr").read_bytes())
    result = runner.invoke(cli, ["pki", "sign", str(csr), "--ca", str(ca), "--days", "30"])
    assert result.exit_code == 0, result.output
    cert = transfer / "site-a.crt"
    # The names come from the request, nothing more.
    assert _sans(cert) == {"site-a", "node-a.example.org", "localhost"}
    result = runner.invoke(cli, ["pki", "install", str(cert), "--dir", str(node),
                                 "--ca-cert", str(ca / "ca.crt"),
                                 "--hub-cert", str(ca / "hub.crt")])
    assert result.exit_code == 0, result.output
    assert {p.name for p in node.iterdir()} == {"site-a.key", "site-a.csr", "site-a.crt",
                                                 "ca.crt", "hub.crt"}
    # The CA recorded what it issued: the hub's from init, and site-a's.
    index = json.loads((ca / "index.json").read_text())
    assert sorted((e["name"], e["role"]) for e in index) == [("hub", "hub"),
                                                             ("site-a", "node")]
    listed = runner.invoke(cli, ["pki", "list", "--ca", str(ca)])
    assert "site-a\tnode" in listed.output
    assert "valid" in listed.output
    # The installed pair serves: a TLS server with it is reached by the hub's certificate.
    app = FastAPI()
    app.get("/ping")(lambda: {"pong": True})
    sock = bind()
    with serve(app, sock, lifespan="off", **server_ssl_options(node, "site-a")):
        url = f"https://localhost:{sock.getsockname()[1]}/ping"
        with httpx.Client(verify=client_context(ca, "hub")) as client:
            assert client.get(url).json() == {"pong": True}


def test_a_second_request_without_rotate_is_refused(tmp_path):
    request_certificate("site-a", tmp_path / "a")
    key = (tmp_path / "a" / "site-a.key").read_bytes()
    with pytest.raises(PkiError, match="exists already; give --rotate"):
        request_certificate("site-a", tmp_path / "a")
    assert (tmp_path / "a" / "site-a.key").read_bytes() == key  # never overwritten
    result = runner.invoke(cli, ["pki", "request", "--name", "site-a", "--out",
                                 str(tmp_path / "a")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("name", "hosts", "role", "refusal"), [
    ("hub", [], "node", "enrolled as the federation's hub"),
    ("site-x", ["hub"], "node", "claims the hub's name"),
    ("site-x", ["site-a"], "node", "claims site-a, which 'site-a' holds"),
    ("site-x", ["node-a.example.org"], "node", "which 'site-a' holds"),
    ("site-a", [], "hub", "enrolled as the federation's node"),
])
def test_sign_refuses_a_request_claiming_anothers_name(tmp_path, name, hosts, role, refusal):
    ca = tmp_path / "ca"
    init_pki(ca, nodes=[])
    made = request_certificate("site-a", tmp_path / "a", hosts=["node-a.example.org"])
    sign_request(made.csr, ca)
    rogue = request_certificate(name, tmp_path / "rogue", hosts=hosts)
    before = read_index(ca)
    with pytest.raises(PkiError, match=refusal):
        sign_request(rogue.csr, ca, role=role)
    assert read_index(ca) == before  # nothing issued, nothing recorded
    assert not rogue.csr.with_suffix(".crt").exists()


def test_no_node_takes_the_hubs_name_before_the_hub_enrols(tmp_path):
    ca = tmp_path / "ca"
    init_pki(ca, nodes=[], hub=None)  # the CA alone: no hub in the index yet
    early = request_certificate("hub", tmp_path / "early")
    with pytest.raises(PkiError, match="claims the hub's name"):
        sign_request(early.csr, ca, role="node")
    assert sign_request(early.csr, ca, role="hub").role == "hub"


def test_loopback_and_localhost_may_be_shared(tmp_path):
    ca = tmp_path / "ca"
    init_pki(ca, nodes=[])  # the hub's certificate carries 127.0.0.1 and localhost
    made = request_certificate("site-a", tmp_path / "a", hosts=["127.0.0.1", "localhost"])
    assert set(sign_request(made.csr, ca).sans) == {"site-a", "127.0.0.1", "localhost"}


def test_a_tampered_request_is_refused(tmp_path):
    ca = tmp_path / "ca"
    init_pki(ca, nodes=[])
    made = request_certificate("site-a", tmp_path / "a")
    pem = made.csr.read_bytes()
    csr = x509.load_pem_x509_csr(pem)
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # in the signature
    bad = tmp_path / "bad.csr"
    bad.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\n" + __import__("base64")
                    .encodebytes(bytes(der)) + b"-----END CERTIFICATE REQUEST-----\n")
    with pytest.raises(PkiError):
        sign_request(bad, ca)
    result = runner.invoke(cli, ["pki", "sign", str(tmp_path / "missing.csr"), "--ca",
                                 str(ca)])
    assert result.exit_code == 2
    assert "cannot read the request" in result.output


def test_install_checks_the_key_and_the_ca(tmp_path):
    fed = enrol_federation(tmp_path / "fed")
    other = tmp_path / "other"
    init_pki(other, nodes=["site-a"])
    # A certificate of another federation's CA, for the same name.
    with pytest.raises(PkiError, match="not signed by the federation CA"):
        install_certificate(other / "site-a.crt", fed.node("site-a"))
    # site-b's certificate matches no key in site-a's folder.
    with pytest.raises(PkiError, match="matches no private key"):
        install_certificate(fed.transfer / "site-b.crt", fed.node("site-a"))
    # A folder without the CA's certificate is told what to give.
    lone = tmp_path / "lone"
    request_certificate("site-c", lone)
    with pytest.raises(PkiError, match="give --ca-cert"):
        install_certificate(fed.transfer / "site-a.crt", lone)


def test_init_puts_each_host_in_its_own_certificate_only(tmp_path):
    out = tmp_path / "pki"
    result = runner.invoke(cli, [
        "pki", "init", "--out", str(out), "--node", "site-a", "--node", "site-b",
        "--host", "site-a=node-a.example.org", "--host", "hub=hub.example.org",
        "--host", "site-b=10.0.0.2"])
    assert result.exit_code == 0, result.output
    assert _sans(out / "site-a.crt") == {"site-a", "node-a.example.org"}
    assert _sans(out / "site-b.crt") == {"site-b", "10.0.0.2"}
    assert _sans(out / "hub.crt") == {"hub", "hub.example.org"}
    bad = runner.invoke(cli, ["pki", "init", "--out", str(tmp_path / "x"), "--node", "site-a",
                              "--host", "site-z=z.example.org"])
    assert bad.exit_code == 2
    assert "not the hub or a --node" in bad.output
    # Bare hosts still go into every certificate (one machine serving them all).
    shared = tmp_path / "shared"
    init_pki(shared, nodes=["site-a"], hosts=["127.0.0.1", "localhost"])
    assert _sans(shared / "site-a.crt") == _sans(shared / "hub.crt") - {"hub"} | {"site-a"}


def test_a_node_missing_hub_crt_gets_one_line_naming_the_files(tmp_path, monkeypatch):
    fed = enrol_federation(tmp_path / "fed", nodes=("site-a",))
    (fed.node("site-a") / "hub.crt").unlink()
    monkeypatch.setenv("SPE_NODE_ID", "site-a")
    monkeypatch.setenv("SPE_DATABASE_URL", f"sqlite:///{tmp_path / 'node.db'}")
    monkeypatch.setenv("SPE_PKI_DIR", str(fed.node("site-a")))
    monkeypatch.setenv("SPE_DATA_DIR", str(tmp_path / "data"))
    result = runner.invoke(cli, ["serve", "node"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    line = " ".join(result.output.split())
    assert "lacks hub.crt" in line
    for needed in ("site-a.crt", "site-a.key", "ca.crt", "hub.crt"):
        assert needed in line
    assert not (tmp_path / "node.db").exists()  # refused before the database is touched


def test_rotation_keeps_the_old_pair_working_then_swaps_without_restart(tmp_path):
    fed = enrol_federation(tmp_path / "fed", nodes=("site-a",))
    node = fed.node("site-a")
    app = FastAPI()
    app.get("/ping")(lambda: {"pong": True})
    sock = bind()

    def served_cert(url: str) -> bytes:
        ctx = client_context(fed.ca, "hub")
        with httpx.Client(verify=ctx) as client:
            assert client.get(url).json() == {"pong": True}
        host, port = url.split("//")[1].split("/")[0].split(":")
        return ssl.get_server_certificate((host, int(port))).encode()

    with serve(app, sock, lifespan="off", **server_ssl_options(node, "site-a")):
        url = f"https://localhost:{sock.getsockname()[1]}/ping"
        first = served_cert(url)
        result = runner.invoke(cli, ["pki", "request", "--name", "site-a", "--out", str(node),
                                     "--rotate", "--host", "127.0.0.1", "--host", "localhost"])
        assert result.exit_code == 0, result.output
        assert (node / "site-a.next.key").exists()
        assert (node / "site-a.next.csr").exists()
        with pytest.raises(PkiError, match="a rotation is under way"):
            request_certificate("site-a", node, rotate=True)  # the pending key is kept
        assert served_cert(url) == first  # the current pair still serves
        signed = sign_request(node / "site-a.next.csr", fed.ca,
                              out=fed.transfer / "site-a.rotated.crt")
        done = install_certificate(signed.cert, node)
        assert done.rotated
        assert not (node / "site-a.next.key").exists()
        # The same server now presents the new certificate, no restart.
        second = served_cert(url)
        assert second != first
        assert x509.load_pem_x509_certificate(second).serial_number == int(signed.serial, 16)
        # And its operator's calls with the rotated pair are still taken (pinned anew).
        operator = client_context(node, "site-a")
        with httpx.Client(verify=operator) as client:
            assert client.get(url).status_code == 200


# -- no private key outside its owner's folder ------------------------------------------------


def _key_fingerprints(path: Path) -> bytes:
    key = private_key_of(path)
    return key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[attr-defined]


def test_no_private_key_is_written_outside_its_owners_folder(tmp_path):
    # Across hosts: the CA alone at the CA, the hub and two nodes each making their own.
    root = tmp_path / "world"
    ca, transfer = root / "ca", root / "transfer"
    owners = {"hub": root / "hub" / "pki", "site-a": root / "site-a" / "pki",
              "site-b": root / "site-b" / "pki"}
    transfer.mkdir(parents=True)
    assert runner.invoke(cli, ["pki", "init", "--out", str(ca), "--ca-only"]).exit_code == 0
    for name, own in owners.items():
        role = "hub" if name == "hub" else "node"
        assert runner.invoke(cli, ["pki", "request", "--name", name, "--out", str(own)]
                             ).exit_code == 0
        (transfer / f"{name}.csr").write_bytes((own / f"{name}.csr").read_bytes())
        result = runner.invoke(cli, ["pki", "sign", str(transfer / f"{name}.csr"), "--ca",
                                     str(ca), "--role", role])
        assert result.exit_code == 0, result.output
    for name, own in owners.items():
        result = runner.invoke(cli, ["pki", "install", str(transfer / f"{name}.crt"),
                                     "--dir", str(own), "--ca-cert", str(ca / "ca.crt"),
                                     "--hub-cert", str(transfer / "hub.crt")])
        assert result.exit_code == 0, result.output
    # A rotation and a revocation write more files: search after them too.
    runner.invoke(cli, ["pki", "request", "--name", "site-a", "--out",
                        str(owners["site-a"]), "--rotate"])
    (transfer / "site-a.next.csr").write_bytes(
        (owners["site-a"] / "site-a.next.csr").read_bytes())
    assert runner.invoke(cli, ["pki", "sign", str(transfer / "site-a.next.csr"), "--ca",
                               str(ca)]).exit_code == 0
    assert runner.invoke(cli, ["pki", "install", str(transfer / "site-a.next.crt"), "--dir",
                               str(owners["site-a"])]).exit_code == 0
    assert runner.invoke(cli, ["pki", "revoke", str(transfer / "site-b.crt"), "--ca",
                               str(ca), "--reason", "key-compromise"]).exit_code == 0
    # The demo's single-host path: every key in its one PKI folder, none elsewhere.
    demo = root / "demo" / "pki"
    assert runner.invoke(cli, ["pki", "init", "--out", str(demo), "--node", "site-c"]
                         ).exit_code == 0

    keys = {"ca": (ca, ca / "ca.key"), "demo-ca": (demo, demo / "ca.key"),
            "demo-hub": (demo, demo / "hub.key"), "demo-site-c": (demo, demo / "site-c.key")}
    keys |= {name: (own, own / f"{name}.key") for name, own in owners.items()}
    secrets = {name: (owner, path.read_bytes(), _key_fingerprints(path))
               for name, (owner, path) in keys.items()}
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) > 20
    assert len(secrets) == 7
    for path in files:
        data = path.read_bytes()
        owner_of_file = next((o for o in {ca, demo, *owners.values()} if o in path.parents),
                             None)
        if b"PRIVATE KEY-----" in data:
            assert path.suffix == ".key", f"a PEM private key in {path}"
            assert owner_of_file is not None, f"a private key outside any owner's folder: {path}"
        for name, (owner, pem, raw) in secrets.items():
            if pem in data or raw in data:
                assert owner_of_file == owner, f"{name}'s key found in {path}"
    # Each owner's folder holds exactly its own keys; the CA's holds ca.key alone.
    assert sorted(p.name for p in ca.rglob("*.key")) == ["ca.key"]
    for name, own in owners.items():
        assert sorted(p.name for p in own.rglob("*.key")) == [f"{name}.key"]
        assert _mode(own / f"{name}.key") == 0o600
        assert _mode(own) == 0o700
    assert sorted(p.name for p in transfer.iterdir() if b"PRIVATE" in p.read_bytes()) == []
