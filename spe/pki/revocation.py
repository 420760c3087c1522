"""Revocation: the CA's certificate revocation list (CRL), and its checks at every service.

`spe pki revoke` marks a certificate revoked in the CA's index and writes `crl.pem` (signed
by the CA, numbered one above the last) beside `ca.crt`. Every service reads the `crl.pem`
of its own PKI folder and re-reads it when the file changes:

- the hub's client context (spe.pki.client_ssl_context) loads it with
  VERIFY_CRL_CHECK_LEAF, so a revoked node's server certificate fails the handshake; the
  hub's Fanout rebuilds its context and drops its pooled connections when it changes;
- a node's server (spe.pki.server_ssl_options) pins its peers' certificates, which OpenSSL
  cannot check against a CRL (a pinned leaf is its own trust anchor), so `RevocationWatch`
  checks each connection's certificate against the list right after the handshake, and
  again on every request of a kept-alive connection, and drops it when revoked.

The hub sends its list to every node (gateway/hub/crl_push.py); a node keeps it only if
the CA signed it and its number is above the node's own (`accept_crl`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID

from spe.pki import PkiError, _load_ca, _read_cert, _write
from spe.pki.index import read_index, write_index

__all__ = ["CRL_FILE", "REASONS", "Revoked", "RevocationWatch", "accept_crl", "crl_number",
           "load_crl", "revoke", "revoke_name", "write_crl"]

CRL_FILE = "crl.pem"
REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
}
log = logging.getLogger("spe.pki")


@dataclass(frozen=True)
class Revoked:
    serial: str
    name: str
    reason: str
    crl: Path
    number: int
    already: bool


def revoke(ca_dir: Path, target: str, *, reason: str) -> Revoked:
    """Revoke the certificate `target` (its serial in hex, or a certificate file) issued by
    the CA in `ca_dir`, and write the CA's new CRL. Revoking one twice only re-writes the
    list."""
    ca_dir = Path(ca_dir)
    if reason not in REASONS:
        raise PkiError(f"--reason must be one of {', '.join(REASONS)}, not {reason!r}")
    path = Path(target)
    if path.is_file():
        serial = f"{_read_cert(path).serial_number:x}"
    else:
        serial = target.lower().removeprefix("0x").replace(":", "")
        try:
            int(serial, 16)
        except ValueError:
            raise PkiError(f"{target!r} is neither a certificate file nor a serial number "
                           f"(hex, as `spe pki list --ca` shows it)") from None
        serial = serial.lstrip("0") or "0"
    entries = read_index(ca_dir)
    entry = next((e for e in entries if e.serial == serial), None)
    if entry is None:
        raise PkiError(f"serial {serial} is not in the CA's index {ca_dir / 'index.json'}: "
                       f"this CA did not issue it (list them with `spe pki list --ca`)")
    already = entry.revoked_at is not None
    if not already:
        entry.revoked_at = dt.datetime.now(dt.UTC).isoformat()
        entry.reason = reason
        write_index(ca_dir, entries)
    crl_path, number = write_crl(ca_dir)
    return Revoked(serial, entry.name, entry.reason or reason, crl_path, number, already)


def revoke_name(ca_dir: Path, name: str, *, reason: str) -> list[str]:
    """Revoke every current certificate of `name` (an institution leaving the federation)
    and write the new CRL; their serials (none: nothing to revoke, no new list)."""
    ca_dir = Path(ca_dir)
    entries = read_index(ca_dir)
    now = dt.datetime.now(dt.UTC).isoformat()
    serials = []
    for entry in entries:
        if entry.name == name and entry.revoked_at is None:
            entry.revoked_at, entry.reason = now, reason
            serials.append(entry.serial)
    if serials:
        write_index(ca_dir, entries)
        write_crl(ca_dir)
    return serials


def write_crl(ca_dir: Path) -> tuple[Path, int]:
    """The CA's CRL of every revoked certificate in its index, numbered one above the last
    one written (a node keeps only a newer one than it holds)."""
    ca_dir = Path(ca_dir)
    now = dt.datetime.now(dt.UTC)
    ca_cert, ca_key = _load_ca(ca_dir / "ca.crt", ca_dir / "ca.key", now)
    previous = load_crl(ca_dir / CRL_FILE, ca_cert)
    number = (crl_number(previous) if previous is not None else 0) + 1
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca_cert.subject)
               .last_update(now - dt.timedelta(minutes=5))
               # Pushed, not fetched: the list stays in force until a newer one replaces
               # it, so it is valid as long as the CA.
               .next_update(ca_cert.not_valid_after_utc)
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_cert.public_key()), critical=False))  # type: ignore[arg-type]
    for entry in read_index(ca_dir):
        if entry.revoked_at is None:
            continue
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(entry.serial, 16))
            .revocation_date(dt.datetime.fromisoformat(entry.revoked_at))
            .add_extension(x509.CRLReason(REASONS.get(entry.reason or "",
                                                      x509.ReasonFlags.unspecified)),
                           critical=False)
            .build())
    crl = builder.sign(ca_key, hashes.SHA256())
    path = ca_dir / CRL_FILE
    _write(path, crl.public_bytes(serialization.Encoding.PEM), 0o600)
    return path, number


def load_crl(path: Path, ca: x509.Certificate) -> x509.CertificateRevocationList | None:
    """The CRL at `path` if there is one, checked to be `ca`'s; PkiError if it is not."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PkiError(f"cannot read the revocation list {path}: {exc.strerror or exc}") \
            from exc
    return parse_crl(data, ca, str(path))


def parse_crl(data: bytes, ca: x509.Certificate, what: str) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise PkiError(f"{what} is not a PEM revocation list") from exc
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise PkiError(f"{what} is not signed by the federation CA; refused")
    return crl


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return int(crl.extensions.get_extension_for_oid(ExtensionOID.CRL_NUMBER).value
                   .crl_number)
    except x509.ExtensionNotFound:
        return 0


def accept_crl(pki_dir: Path, data: bytes) -> tuple[str, int]:
    """Keep a pushed CRL in `pki_dir` if the CA signed it and it is newer than the one held:
    ("stored" | "held" | "older", its number). PkiError if the CA did not sign it."""
    pki_dir = Path(pki_dir)
    ca = _read_cert(pki_dir / "ca.crt")
    crl = parse_crl(data, ca, "the pushed revocation list")
    number = crl_number(crl)
    try:
        current = load_crl(pki_dir / CRL_FILE, ca)
    except PkiError:
        current = None  # a damaged list is replaced by a valid one
    held = crl_number(current) if current is not None else -1
    if number < held:
        return "older", number
    if number == held:
        return "held", number
    _write(pki_dir / CRL_FILE, crl.public_bytes(serialization.Encoding.PEM), 0o600)
    return "stored", number


class RevocationWatch:
    """Whether a peer's certificate (DER) is on `<pki_dir>/crl.pem`, re-read when the file
    changes. Fails closed: a list that exists but cannot be read or is not the CA's
    refuses every peer until a valid one is in place."""

    def __init__(self, pki_dir: Path) -> None:
        self.path = Path(pki_dir) / CRL_FILE
        self.ca_path = Path(pki_dir) / "ca.crt"
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._serials: frozenset[int] | None = frozenset()
        self._verdicts: dict[bytes, bool] = {}

    def _refresh(self) -> frozenset[int] | None:
        try:
            st = self.path.stat()
            stamp: tuple = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = ()
        if stamp == self._stamp:
            return self._serials
        with self._lock:
            if stamp != self._stamp:
                try:
                    crl = load_crl(self.path, _read_cert(self.ca_path)) if stamp else None
                    serials = frozenset(
                        r.serial_number for r in crl) if crl is not None else frozenset()
                except PkiError as exc:
                    log.error("revocation list unusable, refusing every peer: %s", exc)
                    serials = None
                self._serials, self._verdicts, self._stamp = serials, {}, stamp
        return self._serials

    def is_revoked(self, der: bytes) -> bool:
        serials = self._refresh()
        if serials is None:
            return True
        key = hashlib.sha256(der).digest()
        verdict = self._verdicts.get(key)
        if verdict is None:
            try:
                verdict = x509.load_der_x509_certificate(der).serial_number in serials
            except ValueError:
                verdict = True
            self._verdicts[key] = verdict
        return verdict
