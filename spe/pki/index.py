"""The CA's index of the certificates it issued (`index.json` in its folder) and a copy of
each (`issued/<serial>.crt`): what `spe pki sign` checks names against and `spe pki revoke`
finds serials in."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from spe.pki import PkiError, _make_private_dir, _read_cert, _write, certificate_fingerprint

__all__ = ["INDEX", "ISSUED_DIR", "IndexEntry", "read_index", "record_issued", "write_index"]

INDEX = "index.json"
ISSUED_DIR = "issued"


@dataclass
class IndexEntry:
    serial: str  # hex, as `openssl x509 -serial` prints it
    name: str
    role: str
    sans: list[str]
    not_after: str
    fingerprint: str
    issued_at: str
    revoked_at: str | None = None
    reason: str | None = None


def record_issued(ca_dir: Path, cert_path: Path, role: str) -> None:
    """Index a certificate `spe pki init` issued (the demo's single-host path)."""
    cert = _read_cert(Path(cert_path))
    serial = f"{cert.serial_number:x}"
    issued_dir = Path(ca_dir) / ISSUED_DIR
    _make_private_dir(issued_dir)
    data = cert.public_bytes(serialization.Encoding.PEM)
    _write(issued_dir / f"{serial}.crt", data, 0o600)
    try:
        sans = [str(v) for v in cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        sans = []
    entries = [e for e in read_index(ca_dir) if e.serial != serial]
    entries.append(IndexEntry(
        serial=serial, name=_cn(cert, Path(cert_path)), role=role, sans=sans,
        not_after=cert.not_valid_after_utc.isoformat(),
        fingerprint=certificate_fingerprint(issued_dir / f"{serial}.crt"),
        issued_at=dt.datetime.now(dt.UTC).isoformat()))
    write_index(ca_dir, entries)


def read_index(ca_dir: Path) -> list[IndexEntry]:
    path = Path(ca_dir) / INDEX
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())
        return [IndexEntry(**row) for row in rows]
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"the CA's index {path} is unreadable ({exc}); restore it from the "
                       f"CA's backup") from exc


def write_index(ca_dir: Path, entries: list[IndexEntry]) -> None:
    _write(Path(ca_dir) / INDEX,
           json.dumps([e.__dict__ for e in entries], indent=1).encode(), 0o600)




def _cn(cert: x509.Certificate, path: Path) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        raise PkiError(f"{path} has no common name in its subject")
    return str(attrs[0].value)
