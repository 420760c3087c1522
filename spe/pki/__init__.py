"""The federation's PKI: one private CA, a certificate per service, mutual TLS between them.

The hub calls every institution node over HTTPS and both sides prove who they are with a
certificate from the federation's own CA (not a public one: membership of the federation is
the CA's signature, and the public CAs would vouch for anyone). The hub also signs the
context of each request with its private key; nodes verify it with the public key of
`hub.crt`.

Layout of a PKI folder (mode 0700):

    ca.crt  ca.key            the federation CA (ca.key is the secret that admits members)
    hub.crt hub.key           the hub: client of the nodes and server of the API
    <node>.crt <node>.key     one per institution node

`*.key` files are written 0600 and unencrypted, so services start unattended; the file mode
and the folder are their protection.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
import secrets
import ssl
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from spe.errors import SPEError

__all__ = [
    "CA_DAYS",
    "DEFAULT_HOSTS",
    "Issued",
    "PkiError",
    "PkiPaths",
    "ClientTLS",
    "certificate_fingerprint",
    "check_node_files",
    "client_ssl_context",
    "common_name",
    "init_pki",
    "make_private_dir",
    "private_key_of",
    "public_key_of",
    "server_ssl_options",
    "write_atomic",
]

# The CA outlives the service certificates, so renewing those never means a new CA.
CA_DAYS = 3650
# 825 days: the longest validity TLS clients commonly still accept for leaf certificates.
MAX_DAYS = 825
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
ORGANIZATION = "EHDS SPE federation"
# Certificates start a little in the past, so a peer whose clock lags still accepts them.
BACKDATE = dt.timedelta(minutes=5)
# A DNS name (labels of letters, digits and inner hyphens): names are CNs, SANs and file names.
_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
                   r"(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_HINT = ("make it with `spe pki request` and `spe pki install` (or `spe pki init --out DIR "
         "--node NAME` for a single-host federation)")


class PkiError(SPEError):
    """The PKI folder is missing, incomplete or unreadable, or init was refused."""

    # A server that cannot load its certificates is misconfigured, not refusing a caller.
    status_code = 500
    error = "pki_error"


@dataclass(frozen=True)
class Issued:
    """One certificate written by `init_pki`."""

    name: str
    cert: Path
    key: Path
    sans: tuple[str, ...]
    not_after: dt.datetime


@dataclass
class PkiPaths:
    """What `init_pki` found and wrote in the PKI folder."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    ca_created: bool
    ca_not_after: dt.datetime
    issued: list[Issued] = field(default_factory=list)
    # Names asked for whose certificates already existed and were left as they were.
    kept: list[str] = field(default_factory=list)
    # `force` replaced an existing CA: every certificate issued must be redistributed.
    ca_replaced: bool = False

    def cert(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}.key"


def init_pki(
    out_dir: Path,
    *,
    nodes: Sequence[str],
    hub: str | None = "hub",
    days: int = MAX_DAYS,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    force: bool = False,
) -> PkiPaths:
    """Create the federation CA and a certificate for the hub and each node in `out_dir`.

    With an existing CA, only names without a certificate yet are issued (how an operator
    adds an institution); existing certificates are never overwritten. Nothing new to issue
    is refused, as is a replaced CA unless `force`: then every certificate in the folder is
    re-issued by the new CA too (the old CA's stop being trusted) and must be redistributed.
    """
    out_dir = Path(out_dir)
    # hub None: the CA alone (members then enrol with `spe pki request` / `sign`).
    names = _check_names([hub, *nodes] if hub else list(nodes))
    common, per_name = _split_hosts(hosts, names)
    if not 1 <= days <= MAX_DAYS:
        raise PkiError(f"--days must be between 1 and {MAX_DAYS}, not {days}")
    _make_private_dir(out_dir)
    ca_crt, ca_key_path = out_dir / "ca.crt", out_dir / "ca.key"
    now = dt.datetime.now(dt.UTC)

    existing_ca = ca_crt.exists() or ca_key_path.exists()
    if existing_ca and not force:
        ca_cert, ca_key = _load_ca(ca_crt, ca_key_path, now)
        todo = [n for n in names if not _exists(out_dir, n)]
        kept = [n for n in names if n not in todo]
        if not todo:
            raise PkiError(
                f"{out_dir} already has a federation CA and certificates for "
                f"{', '.join(kept)}; name a new --node to add an institution, or give "
                f"--force to replace the CA (re-issues every certificate in the folder; the "
                f"old ones stop working)")
        ca_created = False
    else:
        if existing_ca:
            # No certificate of the replaced CA is left behind looking valid.
            names += sorted(p.stem for p in out_dir.glob("*.crt")
                            if p.stem not in names and p.stem != "ca" and _NAME.match(p.stem))
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_certificate(ca_key, now)
        _write(ca_key_path, _key_pem(ca_key), 0o600)
        _write(ca_crt, ca_cert.public_bytes(serialization.Encoding.PEM), 0o600)
        todo, kept, ca_created = names, [], True

    result = PkiPaths(out_dir, ca_crt, ca_key_path, ca_created, ca_cert.not_valid_after_utc,
                      kept=kept, ca_replaced=ca_created and existing_ca)
    for name in todo:
        key = ec.generate_private_key(ec.SECP256R1())
        # A certificate never outlives the CA that signed it.
        not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
        sans_extra = tuple(dict.fromkeys((*common, *per_name.get(name, ()))))
        cert = _leaf_certificate(name, key.public_key(), sans_extra, ca_cert, ca_key, now,
                                 not_after)
        _write(result.key(name), _key_pem(key), 0o600)
        _write(result.cert(name), cert.public_bytes(serialization.Encoding.PEM), 0o600)
        result.issued.append(Issued(name, result.cert(name), result.key(name),
                                    tuple(dict.fromkeys((name, *sans_extra))), not_after))
    # The CA's index of what it issued, and its (empty at first) revocation list: what
    # `spe pki revoke` adds to (spe/pki/revocation.py).
    from spe.pki.index import record_issued, write_index
    from spe.pki.revocation import CRL_FILE, write_crl

    if ca_created:
        write_index(out_dir, [])
        (out_dir / CRL_FILE).unlink(missing_ok=True)  # the replaced CA's
    for issued in result.issued:
        record_issued(out_dir, issued.cert, "hub" if issued.name == hub else "node")
    if ca_created or not (out_dir / CRL_FILE).exists():
        write_crl(out_dir)
    return result


def server_ssl_options(pki_dir: Path, name: str,
                       clients: Sequence[str] | None = None) -> dict:
    """uvicorn keyword arguments for a server that accepts only the named client certificates.

    `clients` are certificate names in the PKI folder; by default the hub's and the
    server's own (which its operator, who holds its key, uses for its admin routes). They
    are pinned: the handshake accepts exactly those certificates, not any the CA signed, so
    another member of the federation (a compromised node, say) is refused before HTTP. Each
    request's scope names the certificate it came with (spe.peer), for the routes' doors.

    Nothing needs a restart: each handshake first checks whether a file changed (a rotated
    certificate or key, a new hub.crt) and then uses a context built from the current
    files, and every connection's certificate is checked against the folder's current
    revocation list (spe.pki.revocation.RevocationWatch).
    """
    pki_dir = Path(pki_dir)
    cert, key = _need(pki_dir / f"{name}.crt"), _need(pki_dir / f"{name}.key")
    _need(pki_dir / "ca.crt")  # a folder without its CA is not a federation's
    pinned = [_need(pki_dir / f"{c}.crt") for c in dict.fromkeys(clients or ("hub", name))]

    def build() -> ssl.SSLContext:
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(cert), str(key))
            for path in pinned:
                ctx.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise PkiError(f"cannot load the TLS files of {name!r} in {pki_dir}: {exc}; "
                           f"{_HINT}") from exc
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        # A pinned certificate is its own trust anchor: OpenSSL then accepts exactly it
        # (compared whole), and nothing else its CA signed.
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return ctx

    files = [cert, key, *pinned]

    def context(_config: object, _default: object) -> ssl.SSLContext:
        reloading = _Reloading(files, build, what=name)
        front = build()
        # OpenSSL calls this on every ClientHello (with or without SNI); switching the
        # connection's context there switches its certificate and its trust store.
        front.sni_callback = reloading.switch
        return front

    from spe.peer import PeerCertProtocol
    from spe.pki.revocation import RevocationWatch

    watch = RevocationWatch(pki_dir)
    protocol = type("RevocationCheckedProtocol", (PeerCertProtocol,),
                    {"revoked": staticmethod(watch.is_revoked)})
    return {"ssl_context_factory": context, "http": protocol}


class _Reloading:
    """The context built from the current files, rebuilt when one of them changes; a
    rebuild that fails (a key and certificate caught between the two renames of a
    rotation, say) keeps the previous context and is tried again on the next handshake."""

    def __init__(self, files: Sequence[Path], build, *, what: str) -> None:
        self.files, self.build, self.what = list(files), build, what
        self._stamp = self._stamps()
        self._ctx: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def _stamps(self) -> tuple:
        out = []
        for path in self.files:
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def current(self) -> ssl.SSLContext | None:
        stamp = self._stamps()
        if stamp != self._stamp or self._ctx is None:
            with self._lock:
                if stamp != self._stamp or self._ctx is None:
                    try:
                        self._ctx = self.build()
                        self._stamp = stamp
                    except PkiError as exc:
                        logging.getLogger("spe.pki").warning(
                            "kept the TLS files of %s loaded before: %s", self.what,
                            exc.detail)
        return self._ctx

    def switch(self, ssl_object: ssl.SSLObject, _server_name: str | None,
               _ctx: ssl.SSLContext) -> None:
        ctx = self.current()
        if ctx is not None:
            ssl_object.context = ctx


def check_node_files(pki_dir: Path, node_id: str) -> None:
    """One line naming every file a node's PKI folder lacks (PkiError), before anything
    loads them."""
    pki_dir = Path(pki_dir)
    need = {f"{node_id}.crt": "its own certificate", f"{node_id}.key": "its own key",
            "ca.crt": "the federation CA's certificate", "hub.crt": "the hub's certificate"}
    missing = [f for f in need if not (pki_dir / f).is_file()]
    if missing:
        raise PkiError(
            f"SPE_PKI_DIR {pki_dir} lacks {', '.join(missing)}: a node needs {node_id}.crt "
            f"and {node_id}.key (made there by `spe pki request --name {node_id}` and "
            f"`spe pki install`), ca.crt and hub.crt (public, from the federation's CA "
            f"operator: `spe pki install CERT --dir DIR --ca-cert ca.crt --hub-cert hub.crt`)")


def certificate_fingerprint(cert_path: Path) -> str:
    """The SHA-256 (hex) of a certificate's DER: how a server recognises a pinned peer."""
    from spe.peer import fingerprint

    return fingerprint(_read_cert(Path(cert_path)).public_bytes(serialization.Encoding.DER))


def client_ssl_context(pki_dir: Path, name: str) -> ssl.SSLContext:
    """An SSL context for `httpx.AsyncClient(verify=...)` presenting `<name>.crt`.

    Only the federation CA is trusted, not the system store: a certificate from a public CA
    must not pass for an institution node. Hostnames are checked against the SANs. With a
    revocation list (`crl.pem`) in the folder, a revoked server certificate fails the
    handshake (`ClientTLS` rebuilds the context when a file changes).
    """
    pki_dir = Path(pki_dir)
    cert, key, ca = (_need(pki_dir / f"{name}.crt"), _need(pki_dir / f"{name}.key"),
                     _need(pki_dir / "ca.crt"))
    crl = pki_dir / "crl.pem"
    try:
        # With a cafile, create_default_context loads that file and not the system store.
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
        ctx.load_cert_chain(str(cert), str(key))
        if crl.is_file():
            ctx.load_verify_locations(cafile=str(crl))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    except (OSError, ssl.SSLError) as exc:
        raise PkiError(f"cannot load the TLS files of {name!r} in {pki_dir}: {exc}; "
                       f"{_HINT}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class ClientTLS:
    """`client_ssl_context`, rebuilt when the certificate, key, CA or revocation list in the
    folder changes: `context()` is the current one, and `generation` counts rebuilds so a
    client pool can drop connections made under an older list (gateway/hub/fanout.py)."""

    def __init__(self, pki_dir: Path, name: str) -> None:
        pki_dir = Path(pki_dir)
        self._reloading = _Reloading(
            [pki_dir / f"{name}.crt", pki_dir / f"{name}.key", pki_dir / "ca.crt",
             pki_dir / "crl.pem"],
            lambda: client_ssl_context(pki_dir, name), what=name)
        first = self._reloading.current()
        if first is None:  # the first load's error, as client_ssl_context raises it
            client_ssl_context(pki_dir, name)
        self._last: ssl.SSLContext | None = first
        self.generation = 0

    def context(self) -> ssl.SSLContext:
        ctx = self._reloading.current()
        assert ctx is not None  # the first one loaded, and a failed rebuild keeps it
        if ctx is not self._last:
            self._last = ctx
            self.generation += 1
        return ctx


def public_key_of(cert_path: Path) -> ec.EllipticCurvePublicKey:
    """The public key in a certificate (nodes verify the hub's signatures with hub.crt's)."""
    return _read_cert(Path(cert_path)).public_key()  # type: ignore[return-value]


def private_key_of(key_path: Path) -> ec.EllipticCurvePrivateKey:
    """The private key in an (unencrypted) PEM key file."""
    path = _need(Path(key_path))
    try:
        return serialization.load_pem_private_key(path.read_bytes(),  # type: ignore[return-value]
                                                  password=None)
    except OSError as exc:
        raise PkiError(f"cannot read the private key {path}: {exc.strerror or exc}") from exc
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{path} is not an unencrypted PEM private key ({exc}); "
                       f"{_HINT}") from exc


def common_name(cert_path: Path) -> str:
    """The subject CN of a certificate: the federation name of the hub or node."""
    cert = _read_cert(Path(cert_path))
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        raise PkiError(f"{cert_path} has no common name in its subject")
    return str(attrs[0].value)


# -- internals -------------------------------------------------------------------------------


def _check_names(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if not _NAME.match(name) or name == "ca":
            raise PkiError(
                f"invalid name {name!r}: use a DNS name in lower case (letters, digits, "
                f"hyphens, dots), not 'ca'; it becomes the certificate's CN and file name")
        if name not in out:
            out.append(name)
    return out


def _split_hosts(hosts: Sequence[str], names: Sequence[str]
                 ) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """`HOST` (in every certificate: one machine serves them all) and `NAME=HOST` (in
    NAME's only) -> (common, {name: hosts})."""
    common: list[str] = []
    per_name: dict[str, list[str]] = {}
    for entry in hosts:
        if "=" in entry:
            name, host = (part.strip() for part in entry.split("=", 1))
            if name not in names:
                raise PkiError(f"--host {entry!r} names {name!r}, which is not the hub or a "
                               f"--node of this command ({', '.join(names)})")
            per_name.setdefault(name, []).append(host)
        else:
            common.append(entry)
    return _host_names(common), {n: _host_names(h) for n, h in per_name.items()}


def _host_names(hosts: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for host in hosts:
        host = host.strip()
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            host = host.lower()
            if not _NAME.match(host):
                raise PkiError(f"invalid --host {host!r}: give an IP address or a DNS "
                               f"name") from None
        if host not in out:
            out.append(host)
    return tuple(out)


def _san(entries: Sequence[str]) -> x509.SubjectAlternativeName:
    general: list[x509.GeneralName] = []
    for entry in dict.fromkeys(entries):
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            general.append(x509.DNSName(entry))
    return x509.SubjectAlternativeName(general)


def _ca_certificate(key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    # A random suffix tells two federations' CAs apart in logs and error messages.
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, f"SPE federation CA {secrets.token_hex(4)}"),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        # pathlen 0: the CA signs service certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf_certificate(name: str, public_key: ec.EllipticCurvePublicKey,
                      hosts: Sequence[str], ca_cert: x509.Certificate,
                      ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime,
                      not_after: dt.datetime) -> x509.Certificate:
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        # Both: the hub is a client of the nodes and serves the API; nodes serve the hub.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(_san([name, *hosts]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _load_ca(cert_path: Path, key_path: Path,
             now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = _read_cert(cert_path)
    key = private_key_of(key_path)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path} is not an EC private key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise PkiError(f"{key_path} does not belong to {cert_path}; restore the CA's key or "
                       f"replace the CA with `spe pki init --force`")
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PkiError(f"{cert_path} is not a self-signed CA certificate") from exc
    if cert.not_valid_after_utc <= now:
        raise PkiError(f"the federation CA {cert_path} expired on "
                       f"{cert.not_valid_after_utc:%Y-%m-%d}; replace it with "
                       f"`spe pki init --force` (which re-issues every certificate in the "
                       f"folder)")
    return cert, key


def _read_cert(path: Path) -> x509.Certificate:
    path = _need(path)
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise PkiError(f"cannot read the certificate {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM certificate ({exc}); {_HINT}") from exc


def _need(path: Path) -> Path:
    if not path.is_file():
        raise PkiError(f"{path} does not exist; {_HINT}")
    return path


def _exists(directory: Path, name: str) -> bool:
    return (directory / f"{name}.crt").exists() or (directory / f"{name}.key").exists()


def _make_private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(path))
        # It holds private keys: nobody but the owner lists or enters it.
        path.chmod(0o700)
    except OSError as exc:
        raise PkiError(f"cannot create the PKI folder {path}: "
                       f"{exc.strerror or exc}") from exc


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with `mode` from the start: a key is never readable by others."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise PkiError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:  # mkstemp creates the file 0600
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise PkiError(f"cannot write {path}: {exc.strerror or exc}") from exc


# Other services' keys and signed files are written the same way.
make_private_dir = _make_private_dir
write_atomic = _write
