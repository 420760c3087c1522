"""`spe pki request | sign | install | revoke | list`: enrolment without moving private keys,
rotation and revocation (spe/pki/enrolment.py, spe/pki/revocation.py). Every refusal is one line
and exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spe.cli.http import fail
from spe.cli.progress import console

Hosts = Annotated[list[str] | None, typer.Option(
    "--host", help="An IP address or DNS name the service is reached by (a SAN); repeat "
                   "for several")]


def request(
    name: Annotated[str, typer.Option(help="This service's federation name (its CN)")],
    out: Annotated[Path, typer.Option(help="This service's own PKI folder (created 0700); "
                                          "its key is made and stays there")],
    host: Hosts = None,
    rotate: Annotated[bool, typer.Option(
        help="Request the successor of the current certificate (written beside it as "
             "NAME.next.key / NAME.next.csr; the current pair keeps working until install)")]
    = False,
) -> None:
    """Make this service's private key and a certificate request (CSR) for the CA."""
    from spe.pki import PkiError
    from spe.pki.enrolment import request_certificate

    try:
        made = request_certificate(name, out, hosts=host or [], rotate=rotate)
    except PkiError as exc:
        raise fail(exc.detail) from None
    console.print(f"private key {made.key} (0600: it never leaves this folder)")
    console.print(f"request {made.csr}, for {', '.join(made.sans)}: send it to the "
                  f"federation CA's operator (`spe pki sign {made.csr.name} --ca DIR`)")


def sign(
    csr: Annotated[Path, typer.Argument(help="The member's certificate request (PEM)")],
    ca: Annotated[Path, typer.Option(help="The federation CA's folder (ca.crt, ca.key)")],
    role: Annotated[str, typer.Option(help="node, or hub for the hub's own certificate")]
    = "node",
    days: Annotated[int, typer.Option(help="Validity (at most 825 days)")] = 825,
    out: Annotated[Path | None, typer.Option(
        help="Where to write the certificate [default: beside the request, .crt]")] = None,
) -> None:
    """Sign a member's request with the federation CA and record it in the CA's index."""
    from spe.pki import PkiError
    from spe.pki.enrolment import sign_request

    try:
        signed = sign_request(csr, ca, role=role, days=days, out=out)
    except PkiError as exc:
        raise fail(exc.detail) from None
    console.print(f"{signed.cert}: {signed.role} {signed.name}, serial {signed.serial}, SAN "
                  f"{', '.join(signed.sans)}, until {signed.not_after:%Y-%m-%d}")
    console.print(f"send it back with ca.crt{'' if signed.role == 'hub' else ' and hub.crt'}"
                  f" (public files) for `spe pki install`")


def install(
    cert: Annotated[Path, typer.Argument(help="The certificate the CA signed")],
    directory: Annotated[Path, typer.Option("--dir", help="The folder holding its key")],
    ca_cert: Annotated[Path | None, typer.Option(
        help="The federation CA's certificate, copied in as ca.crt")] = None,
    hub_cert: Annotated[Path | None, typer.Option(
        help="The hub's certificate, copied in as hub.crt (a node needs it)")] = None,
) -> None:
    """Install a signed certificate beside its key (checked against the key and the CA);
    a rotation's new pair replaces the current one, picked up without a restart."""
    from spe.pki import PkiError
    from spe.pki.enrolment import install_certificate

    try:
        done = install_certificate(cert, directory, ca_cert=ca_cert, hub_cert=hub_cert)
    except PkiError as exc:
        raise fail(exc.detail) from None
    what = "rotated to" if done.rotated else "installed"
    console.print(f"{what} {done.cert} with {done.key}, valid until {done.not_after:%Y-%m-%d}")
    for path in done.copied:
        console.print(f"copied {path}")


def revoke(
    target: Annotated[str, typer.Argument(help="The serial (hex) or the certificate file")],
    ca: Annotated[Path, typer.Option(help="The federation CA's folder")],
    reason: Annotated[str, typer.Option(
        help="unspecified, key-compromise, superseded, cessation-of-operation or "
             "affiliation-changed")],
) -> None:
    """Revoke a certificate and write the CA's new revocation list (crl.pem in --ca).

    The hub re-reads its SPE_PKI_DIR/crl.pem on its next call and sends it to every node;
    copy crl.pem there if the CA's folder is not the hub's."""
    from spe.pki import PkiError
    from spe.pki.revocation import revoke as revoke_certificate

    try:
        done = revoke_certificate(ca, target, reason=reason)
    except PkiError as exc:
        raise fail(exc.detail) from None
    state = "was already revoked" if done.already else f"revoked ({done.reason})"
    console.print(f"{done.name} serial {done.serial} {state}; revocation list "
                  f"{done.crl} number {done.number}")


def list_issued(
    ca: Annotated[Path, typer.Option(help="The federation CA's folder")],
) -> None:
    """The certificates the CA issued: serial, name, role, expiry, revocation."""
    from spe.pki import PkiError
    from spe.pki.index import read_index

    try:
        entries = read_index(ca)
    except PkiError as exc:
        raise fail(exc.detail) from None
    for e in entries:
        state = f"revoked {e.revoked_at[:10]} ({e.reason})" if e.revoked_at else "valid"
        typer.echo(f"{e.serial}\t{e.name}\t{e.role}\t{e.not_after[:10]}\t{state}")


def register(pki_app: typer.Typer) -> None:
    pki_app.command("request")(request)
    pki_app.command("sign")(sign)
    pki_app.command("install")(install)
    pki_app.command("revoke")(revoke)
    pki_app.command("list")(list_issued)
