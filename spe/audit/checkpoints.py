"""Signed checkpoints of the audit chain: its head, signed with a key the database does not hold.

The hash chain alone shows edits only to someone who does not recompute: whoever can write
the database can edit an entry, recompute every later hash and move the head row. A
checkpoint is the service's signature over "entry `seq` has hash `hash`", made with its
PKI key (`<pki_dir>/<name>.key`: `hub` at the centre, the node id at a node) or, without a
PKI, a dedicated key `<data_dir>/keys/audit-<name>.key` (0600). A rewrite recomputes hashes
that no longer match a signed head, and it cannot sign new ones.

A checkpoint also carries the hash of the entry where its stretch starts (`from`,
`from_hash`: the previous checkpoint's head, so checkpoints chain too) and the first 16 hex
digits of each entry's hash since (`digests`), so the verifier names the first entry that
was rewritten, not just the stretch it lies in. The latest checkpoint is also written to
`<data_dir>/keys/audit-<name>.checkpoint.json` (0600), so deleting checkpoint rows is caught
too; a node's checkpoints are also pulled by the hub, which keeps them (`audit_witness`).

Signatures are verified with keys from outside the database being verified: the service's
certificate in the PKI folder (or `audit-<name>.pub`), keys given on the command line, or a
certificate stored beside the checkpoint that the federation CA on disk issued to `name`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from sqlalchemy.orm import Session

from spe.audit.models import AuditCheckpointMixin
from spe.audit.service import GENESIS, AuditLog, ChainBreak, _utc
from spe.pki import PkiError, make_private_dir, private_key_of, write_atomic
from spe.settings import Settings

log = logging.getLogger(__name__)

VERSION = 1
#: Hex digits kept per entry to locate a rewrite (the head's full hash is what proves it).
DIGEST_HEX = 16
#: At most this many entries' digests in one checkpoint (the first after an upgrade of a
#: long log); entries before them are covered by the head hash alone.
MAX_DIGESTS = 20_000
_FIELDS = ("v", "service", "seq", "hash", "at", "reason", "key_id", "from", "from_hash",
           "digests")


class CheckpointError(RuntimeError):
    """A checkpoint could not be made: the chain is broken since the last one."""

    def __init__(self, brk: ChainBreak) -> None:
        super().__init__(str(brk))
        self.brk = brk


@dataclass(frozen=True)
class Signed:
    """A checkpoint as signed: the canonical body, its signature and the signer's PEM."""

    body: str
    signature: str  # base64 of the DER ECDSA signature (SHA-256)
    cert: str  # the signer's certificate, or public key, in PEM

    def fields(self) -> dict[str, Any]:
        """The body's fields; ValueError when it is not a checkpoint body."""
        data = json.loads(self.body)
        if not isinstance(data, dict) or set(data) != set(_FIELDS) or data["v"] != VERSION:
            raise ValueError("not a checkpoint body")
        if not (isinstance(data["seq"], int) and isinstance(data["from"], int)
                and isinstance(data["digests"], str) and isinstance(data["hash"], str)
                and isinstance(data["from_hash"], str)
                and len(data["digests"]) == DIGEST_HEX * (data["seq"] - data["from"])):
            raise ValueError("malformed checkpoint body")
        return data

    def as_json(self) -> dict[str, str]:
        return {"body": self.body, "signature": self.signature, "cert": self.cert}


# -- keys ------------------------------------------------------------------------------------


def key_id_of(public_key: ec.EllipticCurvePublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class SigningKey:
    name: str
    private_key: ec.EllipticCurvePrivateKey
    cert: str  # PEM shown beside each checkpoint

    @property
    def key_id(self) -> str:
        return key_id_of(self.private_key.public_key())


def signer_name(service: str, name: str) -> str:
    """A service's name in the PKI: `hub` for the central service, else the node id."""
    return "hub" if service == "central" else name


def dedicated_key_paths(settings: Settings, name: str) -> tuple[Path, Path]:
    keys = settings.data_dir / "keys"
    return keys / f"audit-{name}.key", keys / f"audit-{name}.pub"


def checkpoint_file(settings: Settings, name: str) -> Path:
    return settings.data_dir / "keys" / f"audit-{name}.checkpoint.json"


def signing_key(settings: Settings, name: str) -> SigningKey:
    """The service's PKI key and certificate, or its dedicated audit key (made if missing)."""
    if settings.pki_dir is not None and (settings.pki_dir / f"{name}.key").is_file():
        key = private_key_of(settings.pki_dir / f"{name}.key")
        cert_path = settings.pki_dir / f"{name}.crt"
        try:
            cert = cert_path.read_text()
            cert_key = x509.load_pem_x509_certificate(cert.encode()).public_key()
        except (OSError, ValueError) as exc:
            raise PkiError(f"cannot read the certificate {cert_path}: {exc}") from exc
        if key_id_of(cert_key) != key_id_of(key.public_key()):  # type: ignore[arg-type]
            raise PkiError(f"{name}.key does not belong to {cert_path}")
        return SigningKey(name, key, cert)
    key_path, pub_path = dedicated_key_paths(settings, name)
    if not key_path.is_file():
        make_private_dir(key_path.parent)
        new = ec.generate_private_key(ec.SECP256R1())
        write_atomic(key_path, new.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()), 0o600)
        write_atomic(pub_path, _public_pem(new.public_key()).encode(), 0o644)
        log.info("made the audit signing key %s (public key %s)", key_path, pub_path)
    key = private_key_of(key_path)
    return SigningKey(name, key, _public_pem(key.public_key()))


def _public_pem(public_key) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass
class Trust:
    """The keys a service's checkpoints may be signed with, all read from outside the
    database: public keys by id, and the CA whose certificates for `name` count."""

    name: str
    keys: dict[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)
    ca: x509.Certificate | None = None

    def add_pem(self, pem: bytes, source: str) -> None:
        try:
            key = (x509.load_pem_x509_certificate(pem).public_key()
                   if b"CERTIFICATE" in pem else serialization.load_pem_public_key(pem))
        except ValueError as exc:
            raise PkiError(f"{source} is neither a PEM certificate nor a public key") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise PkiError(f"{source} holds no EC public key")
        self.keys[key_id_of(key)] = key

    @property
    def empty(self) -> bool:
        return not self.keys and self.ca is None

    def key_for(self, key_id: str, cert_pem: str) -> ec.EllipticCurvePublicKey | None:
        if key_id in self.keys:
            return self.keys[key_id]
        if self.ca is None or "CERTIFICATE" not in cert_pem:
            return None
        try:
            cert = x509.load_pem_x509_certificate(cert_pem.encode())
            cert.verify_directly_issued_by(self.ca)
        except (ValueError, TypeError, InvalidSignature):
            return None
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        key = cert.public_key()
        if (not names or names[0].value != self.name
                or not isinstance(key, ec.EllipticCurvePublicKey) or key_id_of(key) != key_id):
            return None
        return key


def trust_for(settings: Settings, name: str, extra: Iterable[Path] = ()) -> Trust:
    """What verifies `name`'s checkpoints: its certificate and the CA in the PKI folder,
    else its dedicated audit key's public half; and `extra` files (old or rotated keys).

    With a certificate in the PKI folder, no `.pub` beside the data is trusted: the data
    folder is easier to write than the PKI's."""
    extra = list(extra)
    trust = Trust(name)
    cert = settings.pki_dir / f"{name}.crt" if settings.pki_dir is not None else None
    own = cert if cert is not None and cert.is_file() else dedicated_key_paths(settings,
                                                                                name)[1]
    if settings.pki_dir is not None and (settings.pki_dir / "ca.crt").is_file():
        try:
            trust.ca = x509.load_pem_x509_certificate((settings.pki_dir / "ca.crt").read_bytes())
        except ValueError as exc:
            raise PkiError(f"{settings.pki_dir / 'ca.crt'} is not a PEM certificate") from exc
    for path in extra:
        if not path.is_file():
            raise PkiError(f"{path} does not exist")
        trust.add_pem(path.read_bytes(), str(path))
    if own.is_file():
        trust.add_pem(own.read_bytes(), str(own))
    return trust


# -- signing ---------------------------------------------------------------------------------


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sign(key: SigningKey, *, seq: int, head_hash: str, at: datetime, reason: str,
         start: tuple[int, str], digests: str) -> Signed:
    body = _canonical({"v": VERSION, "service": key.name, "seq": seq, "hash": head_hash,
                       "at": _utc(at).isoformat(timespec="microseconds"), "reason": reason,
                       "key_id": key.key_id, "from": start[0], "from_hash": start[1],
                       "digests": digests})
    signature = key.private_key.sign(body.encode(), ec.ECDSA(hashes.SHA256()))
    return Signed(body, base64.b64encode(signature).decode(), key.cert)


def check_signature(signed: Signed, trust: Trust) -> tuple[dict[str, Any] | None, str]:
    """(the body's fields, "") when `trust` vouches for the signature; else (None, why)."""
    try:
        data = signed.fields()
    except (ValueError, TypeError, KeyError):
        return None, "is not a well-formed checkpoint (altered)"
    if data["service"] != trust.name:
        return None, f"was signed for {data['service']!r}, not {trust.name!r}"
    key = trust.key_for(str(data["key_id"]), signed.cert)
    if key is None:
        return None, (f"is signed with key {str(data['key_id'])[:16]}, which is not a trusted "
                      f"key of {trust.name} (not its certificate, nor issued to it by the CA)")
    try:
        key.verify(base64.b64decode(signed.signature, validate=True), signed.body.encode(),
                   ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return None, "has a signature that does not verify (forged or altered)"
    return data, ""


def make_checkpoint(session: Session, log_: AuditLog, key: SigningKey, reason: str,
                    anchor: tuple[int, str] | None = None,
                    at: datetime | None = None) -> Signed | None:
    """Sign the chain's head (None: nothing new to sign), in the caller's transaction.

    The entries since `anchor` (a head signed before; default the latest checkpoint row)
    are verified first: a chain broken since then raises CheckpointError, never a
    signature. With nothing signed before (a new log, or one from before checkpoints), the
    last MAX_DIGESTS entries are taken as found: `spe audit verify` walks the whole chain.
    The head is read, not locked: the entries up to it are committed, and writers go on
    meanwhile; the next checkpoint covers theirs.
    """
    model = log_.checkpoint_model
    head = session.execute(select(log_.head_model).where(log_.head_model.id == 1)
                           ).scalar_one_or_none()
    if head is None:  # a new log: its empty head is signed too, so every log a service
        head = log_._head(session)  # has run on holds a checkpoint (verify relies on it)
    last_seq, last_hash = head.last_seq, head.last_hash
    base = (head.base_seq, head.base_hash)
    last = session.execute(select(model).order_by(model.seq.desc(), model.id.desc())
                           .limit(1)).scalar_one_or_none()
    if last is not None and (last.seq, last.head_hash) == (last_seq, last_hash):
        return None
    if anchor is None and last is not None:
        anchor = (last.seq, last.head_hash)
    if anchor is None or anchor[0] < base[0]:  # nothing signed, or pruned since
        anchor = _entry_at(session, log_, max(base[0], last_seq - MAX_DIGESTS), base)
    _check_since(session, log_, base, anchor, (last_seq, last_hash))
    start = _entry_at(session, log_, max(anchor[0], last_seq - MAX_DIGESTS), base)
    entry = log_.entry_model
    hashes_ = session.execute(select(entry.hash).where(entry.seq > start[0])
                              .where(entry.seq <= last_seq).order_by(entry.seq)).scalars()
    digests = "".join(h[:DIGEST_HEX] for h in hashes_)
    signed = sign(key, seq=last_seq, head_hash=last_hash, at=at or datetime.now(UTC),
                  reason=reason, start=start, digests=digests)
    session.add(model(seq=last_seq, head_hash=last_hash,
                      at=datetime.fromisoformat(signed.fields()["at"]), reason=reason,
                      key_id=key.key_id, body=signed.body, signature=signed.signature,
                      cert=signed.cert))
    session.flush()
    return signed


def _entry_at(session: Session, log_: AuditLog, seq: int,
              base: tuple[int, str]) -> tuple[int, str]:
    """(seq, the hash the chain has there): the base's at the base."""
    if seq == base[0]:
        return base
    entry = log_.entry_model
    found = session.execute(select(entry.hash).where(entry.seq == seq)).scalar_one_or_none()
    if found is None:
        raise CheckpointError(ChainBreak(seq, "is missing from the chain (entries deleted)"))
    return seq, found


def _check_since(session: Session, log_: AuditLog, base: tuple[int, str],
                 anchor: tuple[int, str], head: tuple[int, str]) -> None:
    seq, expected = anchor
    if seq == base[0]:
        if base[1] != expected:
            raise CheckpointError(ChainBreak(seq, "the chain's anchor differs from the one "
                                                  "signed (base rewritten)"))
    else:
        at_anchor = session.get(log_.entry_model, seq)
        if at_anchor is None:
            raise CheckpointError(ChainBreak(seq, "was signed in the last checkpoint but is "
                                                  "gone (entries deleted)"))
        if at_anchor.hash != expected:
            raise CheckpointError(ChainBreak(seq, "differs from the hash signed in the last "
                                                  "checkpoint (rewritten)"))
    report = log_.verify(session, start=(seq, expected), end=head)
    if not report.ok:
        raise CheckpointError(report.breaks[0])


# -- the checkpoint file ---------------------------------------------------------------------


def write_file(path: Path, signed: Signed) -> None:
    """Keep the latest checkpoint beside the keys (never an older one over a newer)."""
    current = read_file(path)
    try:
        if current is not None and current.fields()["seq"] > signed.fields()["seq"]:
            return
    except (ValueError, KeyError, TypeError):
        pass  # an unreadable file is replaced
    make_private_dir(path.parent)
    write_atomic(path, json.dumps(signed.as_json()).encode(), 0o600)


def read_file(path: Path) -> Signed | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return Signed(str(data["body"]), str(data["signature"]), str(data["cert"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PkiError(f"{path} is not a checkpoint file: {exc}") from exc


def rows(session: Session, model: type[AuditCheckpointMixin]) -> list[AuditCheckpointMixin]:
    return list(session.execute(select(model).order_by(model.seq, model.id)).scalars())


# -- verifying -------------------------------------------------------------------------------


@dataclass
class Source:
    """One signed checkpoint and where it came from ("checkpoint row 3", a file, the hub)."""

    where: str
    signed: Signed
    columns: dict[str, Any] | None = None  # a row's own columns, to compare with its body


@dataclass
class SignedHeads:
    """What the checkpoints that verified say: seq -> (hash, where), and the digests."""

    breaks: list[ChainBreak] = field(default_factory=list)
    full: dict[int, tuple[str, str]] = field(default_factory=dict)
    prefix: dict[int, tuple[str, str]] = field(default_factory=dict)
    verified: int = 0

    @property
    def latest(self) -> int | None:
        return max(self.full) if self.full else None


def signed_heads(sources: list[Source], trust: Trust) -> SignedHeads:
    """Check each checkpoint's signature (and a row against its body); collect the heads
    and digests of those that verify, and name the ones that do not."""
    heads = SignedHeads()
    for src in sources:
        data, problem = check_signature(src.signed, trust)
        if data is None:
            heads.breaks.append(ChainBreak(_claimed_seq(src), f"its checkpoint ({src.where}) "
                                                              f"{problem}"))
            continue
        heads.verified += 1
        if src.columns is not None and (src.columns["seq"] != data["seq"]
                                        or src.columns["head_hash"] != data["hash"]):
            heads.breaks.append(ChainBreak(data["seq"], f"its checkpoint ({src.where}) was "
                                                        "altered: the row differs from what "
                                                        "was signed"))
        for seq, signed_hash in ((data["from"], data["from_hash"]), (data["seq"], data["hash"])):
            seen = heads.full.setdefault(seq, (signed_hash, src.where))
            if seen[0] != signed_hash:
                heads.breaks.append(ChainBreak(seq, f"two signed hashes of it disagree "
                                                    f"({seen[1]} and {src.where}): the "
                                                    "history was forked"))
        digests = data["digests"]
        for i in range(data["seq"] - data["from"]):
            heads.prefix.setdefault(data["from"] + 1 + i,
                                    (digests[i * DIGEST_HEX:(i + 1) * DIGEST_HEX], src.where))
    return heads


def compare_chain(session: Session, log_: AuditLog, heads: SignedHeads) -> list[ChainBreak]:
    """The chain against every signed head and digest: names the first entry whose stored
    hash differs from a signed one (AuditLog.verify has checked each stored hash against
    its content), or the signed entries the chain no longer has."""
    head = session.execute(select(log_.head_model).where(log_.head_model.id == 1)
                           ).scalar_one_or_none()
    base_seq, base_hash = (head.base_seq, head.base_hash) if head else (0, GENESIS)
    if base_seq in heads.full and heads.full[base_seq][0] != base_hash:
        return [ChainBreak(base_seq, f"the chain's anchor differs from the hash signed in "
                                     f"{heads.full[base_seq][1]} (rewritten)")]
    last_seq = base_seq
    for entry in log_.entries(session):
        last_seq = entry.seq
        for expected, kind in ((heads.full.get(entry.seq), "hash"),
                               (heads.prefix.get(entry.seq), "digest")):
            if expected is not None and not entry.hash.startswith(expected[0]):
                return [ChainBreak(entry.seq, f"its {kind} differs from the one signed in "
                                              f"{expected[1]} (entry rewritten and later "
                                              "hashes recomputed)")]
    beyond = sorted(s for s in heads.full if s > last_seq)
    if beyond:
        return [ChainBreak(last_seq + 1, f"entry {beyond[-1]} was signed in "
                                         f"{heads.full[beyond[-1]][1]} but the chain ends at "
                                         f"entry {last_seq} (entries deleted)")]
    return []


def _claimed_seq(src: Source) -> int:
    if src.columns is not None:
        return int(src.columns["seq"])
    try:
        return int(json.loads(src.signed.body)["seq"])
    except (ValueError, KeyError, TypeError):
        return 0


def sources_of(session: Session, log_: AuditLog, file: Path | None) -> list[Source]:
    """The database's checkpoint rows, and the checkpoint file when there is one: a file
    checkpoint the rows do not hold means rows were deleted."""
    found = [Source(f"checkpoint row {r.id}", Signed(r.body, r.signature, r.cert),
                    {"seq": r.seq, "head_hash": r.head_hash})
             for r in rows(session, log_.checkpoint_model)]
    signed = read_file(file) if file is not None else None
    if signed is not None:
        found.append(Source(f"the checkpoint file {file}", signed))
    return found


def missing_from_rows(sources: list[Source]) -> list[ChainBreak]:
    """Checkpoints held outside the database (file, witness) that its rows lack."""
    in_rows = {s.signed.signature for s in sources if s.columns is not None}
    return [ChainBreak(_claimed_seq(s), f"its checkpoint ({s.where}) is missing from the "
                                        "database (checkpoint rows deleted)")
            for s in sources if s.columns is None and s.signed.signature not in in_rows]
