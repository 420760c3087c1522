"""A federation enrolled as across hosts: the CA (and the hub, whose SPE_PKI_DIR it is, as
at a single centre) in one folder, each node in its own, every key made where it stays."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from spe.pki import init_pki
from spe.pki.enrolment import install_certificate, request_certificate, sign_request


@dataclass(frozen=True)
class Federation:
    ca: Path  # the CA's folder, also the hub's SPE_PKI_DIR
    nodes: dict[str, Path]  # node -> its own PKI folder
    transfer: Path  # where requests and certificates travel (public files only)

    def node(self, name: str) -> Path:
        return self.nodes[name]


def enrol_federation(root: Path, nodes: tuple[str, ...] = ("site-a", "site-b")) -> Federation:
    ca = root / "centre" / "pki"
    init_pki(ca, nodes=[])  # the CA and the hub's own pair, made at the centre
    transfer = root / "transfer"
    transfer.mkdir(parents=True, exist_ok=True)
    dirs = {}
    for name in nodes:
        own = root / name / "pki"
        made = request_certificate(name, own, hosts=["127.0.0.1", "localhost"])
        csr = transfer / made.csr.name
        csr.write_bytes(made.csr.read_bytes())
        signed = sign_request(csr, ca, role="node", out=transfer / f"{name}.crt")
        install_certificate(signed.cert, own, ca_cert=ca / "ca.crt", hub_cert=ca / "hub.crt")
        dirs[name] = own
    return Federation(ca, dirs, transfer)


def client_context(pki_dir: Path, name: str, tls: ssl.TLSVersion | None = None,
                   check_hostname: bool = True) -> ssl.SSLContext:
    """A client trusting the folder's CA, presenting `name`'s pair (no CRL: what a revoked
    peer itself would use)."""
    ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    ctx.load_cert_chain(pki_dir / f"{name}.crt", pki_dir / f"{name}.key")
    ctx.check_hostname = check_hostname
    if tls is not None:
        ctx.minimum_version = ctx.maximum_version = tls
    return ctx
