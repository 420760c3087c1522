"""Enrolment without moving private keys: request at the member, sign at the CA, install.

    node$ spe pki request --name site-a --out /etc/spe/pki --host node-a.example.org
          (site-a.key stays here, 0600 in a 0700 folder; site-a.csr goes to the CA)
    ca$   spe pki sign site-a.csr --ca /srv/spe-ca --role node
          (site-a.crt, and a line in the CA's index of issued certificates)
    node$ spe pki install site-a.crt --dir /etc/spe/pki --ca-cert ca.crt --hub-cert hub.crt

Rotation is the same with `request --rotate`: the new key and request are written beside
the current pair (`<name>.next.key`, `<name>.next.csr`) while the current certificate keeps
working, and `install` puts the new pair in place (each file by an atomic rename).

The CA's folder holds `index.json`, one entry per issued certificate (serial, name, role,
SANs, validity, fingerprint, and its revocation when revoked), and `issued/<serial>.crt`,
a copy of each: the CA can then revoke by serial or by certificate, and refuses a request
claiming the hub's name or another member's.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spe.pki import (
    MAX_DAYS,
    ORGANIZATION,
    PkiError,
    _check_names,
    _host_names,
    _key_pem,
    _leaf_certificate,
    _load_ca,
    _make_private_dir,
    _read_cert,
    _write,
    certificate_fingerprint,
)
from spe.pki.index import ISSUED_DIR, IndexEntry, read_index, write_index

__all__ = ["ROLES", "Installed", "Requested", "Signed", "install_certificate",
           "request_certificate", "sign_request"]

ROLES = ("node", "hub")
NEXT = ".next"
# The hub's name (`spe pki init --hub`'s default): no node may carry it, also before the
# hub itself is enrolled.
HUB_NAME = "hub"
# Names every member may carry: a single-host federation serves all of them on loopback.
SHARED_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class Requested:
    name: str
    key: Path
    csr: Path
    sans: tuple[str, ...]
    rotation: bool


@dataclass(frozen=True)
class Signed:
    name: str
    role: str
    cert: Path
    serial: str
    sans: tuple[str, ...]
    not_after: dt.datetime


@dataclass(frozen=True)
class Installed:
    name: str
    cert: Path
    key: Path
    rotated: bool
    not_after: dt.datetime
    copied: tuple[Path, ...]


# -- at the member ---------------------------------------------------------------------------


def request_certificate(name: str, out_dir: Path, *, hosts: Sequence[str] = (),
                        rotate: bool = False) -> Requested:
    """Make `name`'s private key in `out_dir` (0600, folder 0700) and a CSR for it.

    The key is written here and nowhere else; only the CSR (public) goes to the CA. A
    first request is refused where a key exists already (use `rotate`); a rotation needs the
    current certificate and writes beside it, so the current pair keeps serving until
    `install_certificate` replaces it."""
    out_dir = Path(out_dir)
    (name,) = _check_names([name])
    sans = tuple(dict.fromkeys((name, *_host_names(hosts))))
    _make_private_dir(out_dir)
    key_path, csr_path = out_dir / f"{name}.key", out_dir / f"{name}.csr"
    if rotate:
        if not (out_dir / f"{name}.crt").is_file() or not key_path.is_file():
            raise PkiError(f"{out_dir} has no current {name}.crt and {name}.key to rotate; "
                           f"request a first certificate without --rotate")
        key_path, csr_path = (out_dir / f"{name}{NEXT}.key", out_dir / f"{name}{NEXT}.csr")
        if key_path.exists():
            raise PkiError(f"{key_path} exists already: a rotation is under way; install its "
                           f"certificate (`spe pki install`), or delete {key_path.name} and "
                           f"{csr_path.name} to start it again")
    elif key_path.exists():
        raise PkiError(f"{key_path} exists already; give --rotate to request its successor "
                       f"(the current pair keeps working until `spe pki install`)")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([
               x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
               x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(_san_of(sans), critical=False)
           .sign(key, hashes.SHA256()))
    _write(key_path, _key_pem(key), 0o600)
    _write(csr_path, csr.public_bytes(serialization.Encoding.PEM), 0o600)
    return Requested(name, key_path, csr_path, sans, rotate)


def install_certificate(cert_path: Path, directory: Path, *, ca_cert: Path | None = None,
                        hub_cert: Path | None = None) -> Installed:
    """Put a signed certificate in place beside the key it was requested with.

    Checked first: it is signed by the federation CA (`ca.crt` in `directory`, or the one
    given, which is copied there), it matches a key in `directory` (`<name>.next.key` of a
    rotation, else `<name>.key`), it is in its validity period and not on the folder's
    revocation list. A rotation then renames the new key and certificate over the current
    ones, each atomically; services reload them on their next handshake (spe.pki)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PkiError(f"{directory} is not a folder; give the folder where "
                       f"`spe pki request` wrote the key")
    cert = _read_cert(Path(cert_path))
    copied: list[Path] = []
    ca_path = directory / "ca.crt"
    if ca_cert is not None:
        ca = _read_cert(Path(ca_cert))
        _check_ca(ca, Path(ca_cert))
    elif ca_path.is_file():
        ca = _read_cert(ca_path)
    else:
        raise PkiError(f"{directory} has no ca.crt: give --ca-cert with the federation CA's "
                       f"certificate (public, from the CA's operator)")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise PkiError(f"{cert_path} was not signed by the federation CA "
                       f"({ca_cert or ca_path}); ask the CA's operator to sign your "
                       f"request with `spe pki sign`") from None
    name = _cn(cert, Path(cert_path))
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise PkiError(f"{cert_path} is not valid now (valid {cert.not_valid_before_utc:%F} "
                       f"to {cert.not_valid_after_utc:%F}); request a new one")
    from spe.pki.revocation import load_crl

    crl = load_crl(directory / "crl.pem", ca)
    if crl is not None and crl.get_revoked_certificate_by_serial_number(
            cert.serial_number) is not None:
        raise PkiError(f"{cert_path} is revoked (serial {cert.serial_number:x}); request a "
                       f"new certificate")
    public = cert.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    rotated = False
    key_path = None
    for candidate, is_next in ((directory / f"{name}{NEXT}.key", True),
                               (directory / f"{name}.key", False)):
        if candidate.is_file() and _public_of(candidate) == public:
            key_path, rotated = candidate, is_next
            break
    if key_path is None:
        raise PkiError(f"{cert_path} ({name}) matches no private key in {directory}: install "
                       f"it where `spe pki request --name {name}` made its key")
    if ca_cert is not None:
        _write(ca_path, ca.public_bytes(serialization.Encoding.PEM), 0o600)
        copied.append(ca_path)
    if hub_cert is not None:
        hub = _read_cert(Path(hub_cert))
        try:
            hub.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise PkiError(f"{hub_cert} was not signed by the federation CA") from None
        _write(directory / "hub.crt", hub.public_bytes(serialization.Encoding.PEM), 0o600)
        copied.append(directory / "hub.crt")
    final_cert, final_key = directory / f"{name}.crt", directory / f"{name}.key"
    data = cert.public_bytes(serialization.Encoding.PEM)
    if rotated:
        # The key first: a service reloading between the two renames sees a pair that does
        # not match, keeps its current context and retries on the next handshake.
        try:
            os.replace(key_path, final_key)
        except OSError as exc:
            raise PkiError(f"cannot move {key_path} to {final_key}: "
                           f"{exc.strerror or exc}") from exc
        (directory / f"{name}{NEXT}.csr").unlink(missing_ok=True)
    _write(final_cert, data, 0o600)
    return Installed(name, final_cert, final_key, rotated, cert.not_valid_after_utc,
                     tuple(copied))


# -- at the CA -------------------------------------------------------------------------------


def sign_request(csr_path: Path, ca_dir: Path, *, role: str = "node", days: int = MAX_DAYS,
                 out: Path | None = None) -> Signed:
    """Sign a member's CSR with the federation CA in `ca_dir` and record it in the index.

    The names come from the CSR, each checked: a valid DNS name or IP address, and none the
    hub's or another member's (a current certificate of another name in the index carries
    it), but for names every member may carry (`localhost`, loopback addresses). `role` is
    the CA's decision, not the requester's: "hub" only for the hub's own name."""
    ca_dir = Path(ca_dir)
    if role not in ROLES:
        raise PkiError(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    if not 1 <= days <= MAX_DAYS:
        raise PkiError(f"--days must be between 1 and {MAX_DAYS}, not {days}")
    csr = _read_csr(Path(csr_path))
    if not csr.is_signature_valid:
        raise PkiError(f"{csr_path}: the request's signature does not verify (corrupted, or "
                       f"not made with its key); make a new one with `spe pki request`")
    cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cn:
        raise PkiError(f"{csr_path} has no common name; make it with `spe pki request --name`")
    (name,) = _check_names([str(cn[0].value)])
    try:
        requested = [str(v) for v in csr.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)]
        requested += [str(v) for v in csr.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        requested = []
    sans = tuple(dict.fromkeys((name, *_host_names(requested))))
    ca_crt, ca_key_path = ca_dir / "ca.crt", ca_dir / "ca.key"
    if not ca_key_path.is_file():
        raise PkiError(f"{ca_dir} has no ca.key: give --ca the federation CA's folder "
                       f"(made by `spe pki init`)")
    now = dt.datetime.now(dt.UTC)
    ca_cert, ca_key = _load_ca(ca_crt, ca_key_path, now)
    entries = read_index(ca_dir)
    _check_claims(name, role, sans, entries, now)
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = _leaf_certificate(name, csr.public_key(), sans[1:], ca_cert, ca_key, now,
                             not_after)
    data = cert.public_bytes(serialization.Encoding.PEM)
    if out is None:
        stem = Path(csr_path).name.removesuffix(".csr")
        out = Path(csr_path).with_name(f"{stem}.crt")
    serial = f"{cert.serial_number:x}"
    issued_dir = ca_dir / ISSUED_DIR
    _make_private_dir(issued_dir)
    _write(issued_dir / f"{serial}.crt", data, 0o600)
    entries.append(IndexEntry(
        serial=serial, name=name, role=role, sans=list(sans),
        not_after=not_after.isoformat(), fingerprint=certificate_fingerprint(
            issued_dir / f"{serial}.crt"), issued_at=now.isoformat()))
    write_index(ca_dir, entries)
    _write(Path(out), data, 0o600)
    return Signed(name, role, Path(out), serial, sans, not_after)


# -- internals -------------------------------------------------------------------------------


def _check_claims(name: str, role: str, sans: Sequence[str], entries: list[IndexEntry],
                  now: dt.datetime) -> None:
    current = [e for e in entries if e.revoked_at is None
               and dt.datetime.fromisoformat(e.not_after) > now]
    for entry in current:
        if entry.name == name and entry.role != role:
            raise PkiError(f"{name!r} is enrolled as the federation's {entry.role}, not a "
                           f"{role}; a request may not take another role's name")
    hub_names = {e.name for e in current if e.role == "hub"} | {HUB_NAME}
    if role == "node" and hub_names & set(sans):
        raise PkiError(f"the request for {name!r} claims the hub's name; refused")
    for entry in current:
        if entry.name == name:
            continue  # its own earlier certificate: a rotation
        taken = (set(entry.sans) | {entry.name}) & set(sans)
        taken = {t for t in taken if not _shared(t)}
        if taken:
            raise PkiError(f"the request for {name!r} claims {', '.join(sorted(taken))}, "
                           f"which {entry.name!r} holds (serial {entry.serial}); refused")


def _shared(name: str) -> bool:
    if name in SHARED_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _san_of(sans: Sequence[str]) -> x509.SubjectAlternativeName:
    general: list[x509.GeneralName] = []
    for entry in sans:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            general.append(x509.DNSName(entry))
    return x509.SubjectAlternativeName(general)


def _read_csr(path: Path) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(path.read_bytes())
    except OSError as exc:
        raise PkiError(f"cannot read the request {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM certificate request ({exc}); make one with "
                       f"`spe pki request`") from exc


def _check_ca(ca: x509.Certificate, path: Path) -> None:
    try:
        ca.verify_directly_issued_by(ca)
        if not ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise ValueError("not a CA")
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        raise PkiError(f"{path} is not the federation CA's certificate") from None


def _cn(cert: x509.Certificate, path: Path) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        raise PkiError(f"{path} has no common name in its subject")
    return str(attrs[0].value)


def _public_of(key_path: Path) -> bytes:
    from spe.pki import private_key_of

    return private_key_of(key_path).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
