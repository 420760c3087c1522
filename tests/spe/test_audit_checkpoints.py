"""Signed audit checkpoints from the outside: a service runs and signs its head, an attacker
with the database (SQLite file or PostgreSQL) rewrites an entry and recomputes every later
hash with the project's own code, and the real `spe audit verify` names the entry."""

from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from typer.testing import CliRunner

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from spe.app import create_central_app
from spe.audit import CentralAuditEntry, NodeAuditEntry
from spe.audit.checkpoints import checkpoint_file, key_id_of
from spe.audit.service import entry_hash
from spe.cli import app as cli
from spe.db import make_engine
from spe.db.migrate import upgrade
from spe.peer import FINGERPRINT_KEY, fingerprint
from spe.pki import init_pki, private_key_of
from spe.settings import Settings
from spe.wire.audit import CHECKPOINTS_PATH, WITNESS, WITNESS_ROLE, witness_query_hash
from spe.wire.context import ContextSigner

REQUESTS = 8  # each an audited refusal (no token): entries 1..8
EDITED = 4


@dataclass
class Service:
    kind: str  # "central" or "node"
    name: str  # its name in the PKI: the signer
    url: str
    settings: Settings

    @property
    def table_model(self):
        return CentralAuditEntry if self.kind == "central" else NodeAuditEntry

    def app(self):
        if self.kind == "central":
            return create_central_app(self.settings)
        return create_node_app(NodeConfig(self.name, self.name, self.url), self.settings)

    def run(self, requests: int = REQUESTS) -> TestClient:
        """Start the service (it signs its head), make audited requests, stop it (it signs
        again)."""
        with TestClient(self.app()) as client:
            for i in range(requests):
                assert client.get("/api/v1/audit", params={"after": i}).status_code == 401
        return client

    def env(self, **extra: str) -> dict[str, str]:
        return {"SPE_PKI_DIR": str(self.settings.pki_dir),
                "SPE_DATA_DIR": str(self.settings.data_dir), "SPE_NODE_ID": self.name,
                "COLUMNS": "250", **extra}

    def verify(self, *args: str, own: bool = False):
        """The real CLI; `own`: as the service's operator, on its configured database (the
        checkpoint file is checked too), else on the database URL alone."""
        base = ["audit", "verify", "--target", self.kind]
        if own:
            return CliRunner().invoke(cli, [*base, *args],
                                      env=self.env(SPE_DATABASE_URL=self.url))
        return CliRunner().invoke(cli, [*base, "--database-url", self.url, *args],
                                  env=self.env())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pki") / "federation"
    init_pki(out, nodes=["site-a"])
    return out


@pytest.fixture(params=["central", "node"])
def service(request, database_url: str, tmp_path: Path, pki: Path) -> Service:
    kind = request.param
    upgrade(database_url, kind)
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, pki_dir=pki,
                        oidc_issuer="http://central.test", node_workers=0,
                        environment="development")
    return Service(kind, "hub" if kind == "central" else "site-a", database_url, settings)


def rewrite(url: str, model, seq: int, actor: str = "someone-else") -> None:
    """The attack: edit entry `seq`, recompute its hash and every later one with the
    project's own hashing code, move the head row."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            rows = conn.execute(select(model.__table__).where(model.seq >= seq)
                                .order_by(model.seq)).mappings().all()
            assert rows, "nothing to rewrite"
            prev = rows[0]["prev_hash"]
            for row in rows:
                fields = {k: row[k] for k in ("seq", "at", "actor", "action", "object",
                                              "decision", "reason", "details")}
                if row["seq"] == seq:
                    fields["actor"] = actor
                digest = entry_hash(**fields, prev_hash=prev)
                conn.execute(text("UPDATE audit_log SET actor = :a, prev_hash = :p, hash = :h "
                                  "WHERE seq = :s"),
                             {"a": fields["actor"], "p": prev, "h": digest, "s": row["seq"]})
                prev = digest
            conn.execute(text("UPDATE audit_head SET last_hash = :h WHERE id = 1"), {"h": prev})
    finally:
        engine.dispose()


def execute(url: str, sql: str, **params) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()


def scalar(url: str, sql: str):
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar_one()
    finally:
        engine.dispose()


def forge_last_checkpoint(url: str) -> tuple[dict, dict]:
    """The last checkpoint row, and its body with the head the attacker made."""
    last = checkpoint_rows(url)[-1]
    body = json.loads(last["body"])
    body["hash"] = scalar(url, "SELECT last_hash FROM audit_head")
    return last, body


def checkpoint_rows(url: str) -> list[dict]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(
                "SELECT id, seq, body, signature FROM audit_checkpoint ORDER BY seq, id")
            ).mappings()]
    finally:
        engine.dispose()


def test_a_running_service_signs_its_head_and_the_log_verifies(service):
    service.run()
    rows = checkpoint_rows(service.url)
    assert [r["seq"] for r in rows] == [0, REQUESTS]  # at start (empty), and at stop
    assert json.loads(rows[-1]["body"])["service"] == service.name
    assert checkpoint_file(service.settings, service.name).stat().st_mode & 0o777 == 0o600
    result = service.verify(own=True)
    assert result.exit_code == 0, result.output
    assert f"{REQUESTS} entries verified, against" in result.output


def test_rewritten_entry_with_recomputed_hashes_is_named(service):
    service.run()
    rewrite(service.url, service.table_model, EDITED)
    # The chain alone is consistent again: what the old verify passed.
    result = service.verify()
    assert result.exit_code == 1, result.output
    assert f"first bad entry is entry {EDITED}:" in result.output
    assert "recomputed" in result.output


def test_rewrite_with_checkpoint_rows_deleted_is_caught_by_the_checkpoint_file(service):
    service.run()
    rewrite(service.url, service.table_model, EDITED)
    execute(service.url, "DELETE FROM audit_checkpoint")
    result = service.verify(own=True)
    assert result.exit_code == 1, result.output
    assert f"first bad entry is entry {EDITED}:" in result.output
    assert "missing from the database (checkpoint rows deleted)" in result.output


def test_checkpoint_with_a_forged_signature_is_named(service):
    service.run()
    rewrite(service.url, service.table_model, EDITED)
    # The attacker re-writes the last checkpoint's body to the new head, keeping the
    # old signature.
    last, body = forge_last_checkpoint(service.url)
    new_head = body["hash"]
    execute(service.url, "UPDATE audit_checkpoint SET body = :b, head_hash = :h WHERE id = :i",
            b=json.dumps(body, sort_keys=True, separators=(",", ":")), h=new_head,
            i=last["id"])
    result = service.verify()
    assert result.exit_code == 1, result.output
    assert f"entry {REQUESTS}: its checkpoint (checkpoint row {last['id']}) has a signature " \
           "that does not verify" in result.output


def test_checkpoint_signed_with_the_attackers_own_key_is_named(service):
    service.run()
    rewrite(service.url, service.table_model, EDITED)
    last, body = forge_last_checkpoint(service.url)
    new_head = body["hash"]
    mine = ec.generate_private_key(ec.SECP256R1())
    body["key_id"] = key_id_of(mine.public_key())
    text_ = json.dumps(body, sort_keys=True, separators=(",", ":"))
    signature = base64.b64encode(mine.sign(text_.encode(), ec.ECDSA(hashes.SHA256()))).decode()
    execute(service.url, "UPDATE audit_checkpoint SET body = :b, head_hash = :h, "
                         "signature = :s, key_id = :k WHERE id = :i",
            b=text_, h=new_head, s=signature, k=body["key_id"], i=last["id"])
    result = service.verify()
    assert result.exit_code == 1, result.output
    assert "which is not a trusted key" in result.output


def test_rewrite_with_every_checkpoint_deleted_says_checkpoints_are_missing(service):
    service.run()
    rewrite(service.url, service.table_model, EDITED)
    execute(service.url, "DELETE FROM audit_checkpoint")
    result = service.verify()  # the database alone, no checkpoint file
    assert result.exit_code == 1, result.output
    assert "no signed checkpoint covers it" in result.output


def test_checkpoints_without_a_key_to_check_them_fail(service):
    service.run()
    result = CliRunner().invoke(cli, ["audit", "verify", "--target", service.kind,
                                      "--database-url", service.url, "--name", service.name],
                                env={"SPE_DATA_DIR": str(service.settings.data_dir / "none"),
                                     "COLUMNS": "250"})
    assert result.exit_code == 2, result.output
    assert "no key of" in result.output


def test_deleted_tail_behind_a_signed_head_is_named(service):
    service.run()
    execute(service.url, "DELETE FROM audit_log WHERE seq > 5")
    # The head row too is moved back, as the attacker would.
    last = scalar(service.url, "SELECT hash FROM audit_log WHERE seq = 5")
    execute(service.url, "UPDATE audit_head SET last_seq = 5, last_hash = :h", h=last)
    result = service.verify()
    assert result.exit_code == 1, result.output
    assert "first bad entry is entry 6:" in result.output
    assert "entries deleted" in result.output


def test_a_rewrite_while_stopped_raises_the_alarm_at_start(service, caplog):
    service.run()
    rewrite(service.url, service.table_model, EDITED)
    execute(service.url, "DELETE FROM audit_checkpoint")
    caplog.set_level(logging.ERROR, logger="spe.audit")
    with TestClient(service.app()) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["audit_chain"]["status"] == "failed"
        assert not re.search(r"entry \d", json.dumps(ready.json()))  # details: the log's
        assert client.get("/health").status_code == 200  # alive: not restarted for it
    assert any("AUDIT CHAIN BROKEN" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)
    # Nothing was signed over the rewritten chain.
    assert checkpoint_rows(service.url) == []


def test_ready_while_the_chain_holds(service):
    with TestClient(service.app()) as client:
        assert client.get("/ready").json()["checks"]["audit_chain"] == {"status": "ok"}


# -- the node's door for the hub's witness ---------------------------------------------------


def as_peer(app, cert: Path):
    """`app` as spe.peer.PeerCertProtocol serves it to the holder of `cert` over mutual TLS
    (the real TLS path: tests/gateway/test_audit_witness.py, tests/gateway/test_node_trust.py)."""
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)

    async def served(scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            scope.setdefault("extensions", {})["tls"] = {FINGERPRINT_KEY: fingerprint(der)}
        await app(scope, receive, send)

    served.state = app.state
    return served


@pytest.fixture
def node_client(tmp_path: Path, pki: Path):
    url = f"sqlite:///{tmp_path / 'node.db'}"
    upgrade(url, "node")
    settings = Settings(data_dir=tmp_path, pki_dir=pki, node_workers=0,
                        oidc_issuer="http://central.test")
    app = create_node_app(NodeConfig("site-a", "A", url), settings)
    with TestClient(as_peer(app, pki / "hub.crt")) as client:  # the hub's certificate
        yield client


def test_node_gives_its_checkpoints_to_the_hubs_witness_only(node_client, pki):
    signer = ContextSigner(private_key_of(pki / "hub.key"))
    assert node_client.get(CHECKPOINTS_PATH).status_code == 401
    other = signer.sign(user="hub:airlock", roles=["airlock"], tier="permit",
                        query_hash=witness_query_hash(0), node_id="site-a")
    resp = node_client.get(CHECKPOINTS_PATH, headers={"X-SPE-Hub-Context": other})
    assert resp.status_code == 403
    wrong_after = signer.sign(user=WITNESS, roles=[WITNESS_ROLE], tier="statistics",
                              query_hash=witness_query_hash(5), node_id="site-a")
    assert node_client.get(CHECKPOINTS_PATH,
                           headers={"X-SPE-Hub-Context": wrong_after}).status_code == 401
    # The three refusals are audited; the next checkpoint signs them.
    signed = node_client.app.state.audit_checkpointer.checkpoint("entries")
    assert signed is not None
    good = signer.sign(user=WITNESS, roles=[WITNESS_ROLE], tier="statistics",
                       query_hash=witness_query_hash(0), node_id="site-a")
    resp = node_client.get(CHECKPOINTS_PATH, headers={"X-SPE-Hub-Context": good})
    assert resp.status_code == 200, resp.text
    assert resp.json()["node_id"] == "site-a"
    assert resp.json()["checkpoints"] == [signed.as_json()]
    assert json.loads(signed.body)["seq"] == 3


def test_the_services_verify_route_names_the_rewritten_entry(service):
    from spe.identity import DemoIssuer

    service.run()
    admin = DemoIssuer(service.settings.issuer_key_path, service.settings.oidc_issuer,
                       "spe").mint("root", ["admin"])
    def served():  # a node's audit routes are its operator's: the node's own certificate
        app = service.app()
        return app if service.kind == "central" else as_peer(app, service.settings.pki_dir
                                                             / "site-a.crt")

    with TestClient(served()) as client:
        clean = client.get("/api/v1/audit/verify", headers={"Authorization": f"Bearer {admin}"})
        assert clean.status_code == 200, clean.text
        assert clean.json()["ok"] is True
    rewrite(service.url, service.table_model, EDITED)
    with TestClient(served()) as client:
        resp = client.get("/api/v1/audit/verify", headers={"Authorization": f"Bearer {admin}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["ok"] is False
    assert resp.json()["first_bad"].startswith(f"entry {EDITED}: ")


def test_a_rewrite_while_running_raises_the_alarm_at_the_next_checkpoint(service, caplog):
    caplog.set_level(logging.ERROR, logger="spe.audit")
    with TestClient(service.app()) as client:
        for i in range(REQUESTS):
            client.get("/api/v1/audit", params={"after": i})
        checkpointer = client.app.state.audit_checkpointer
        assert checkpointer.checkpoint("entries") is not None  # what the schedule calls
        rewrite(service.url, service.table_model, EDITED)
        client.get("/api/v1/audit")  # the log goes on growing
        assert checkpointer.checkpoint("entries") is None
        ready = client.get("/ready")
        assert (ready.status_code, ready.json()["checks"]["audit_chain"]["status"]) == (
            503, "failed")
    assert any(f"entry {REQUESTS}: differs from the hash signed" in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR)
    assert max(r["seq"] for r in checkpoint_rows(service.url)) == REQUESTS  # no stop one


def test_checkpoints_signed_among_concurrent_writers_all_verify(database_url, tmp_path, pki):
    """Signing never blocks the writers nor takes their new entries for a broken chain."""
    import threading

    from spe.audit import CENTRAL_AUDIT
    from spe.audit.checkpoints import make_checkpoint, signing_key
    from spe.db import make_sessionmaker, session_scope

    upgrade(database_url, "central")
    settings = Settings(data_dir=tmp_path, pki_dir=pki)
    key = signing_key(settings, "hub")
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    errors: list[Exception] = []
    signed: list = []
    writing = threading.Event()

    def writer(n: int) -> None:
        for i in range(20):
            try:
                with session_scope(sessions) as session:
                    CENTRAL_AUDIT.record(session, actor=f"w{n}", action="test.concurrent",
                                         object=str(i), decision="info")
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    def signer() -> None:
        while writing.is_set():
            try:
                with session_scope(sessions) as session:
                    signed.append(make_checkpoint(session, CENTRAL_AUDIT, key, "entries"))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    writing.set()
    signing = threading.Thread(target=signer)
    signing.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    writing.clear()
    signing.join()
    try:
        assert errors == []
        with session_scope(sessions) as session:  # the last head, as at stop
            make_checkpoint(session, CENTRAL_AUDIT, key, "stop")
        assert [s for s in signed if s is not None], "nothing was signed while writing"
        service = Service("central", "hub", database_url, settings)
        result = service.verify()
        assert result.exit_code == 0, result.output
        assert f"{6 * 20} entries verified" in result.output
    finally:
        engine.dispose()


def test_without_a_pki_the_service_signs_with_its_own_audit_key(database_url, tmp_path):
    from spe.audit.checkpoints import dedicated_key_paths

    upgrade(database_url, "central")
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url,
                        oidc_issuer="http://central.test")
    service = Service("central", "hub", database_url, settings)
    with TestClient(service.app()) as client:
        for i in range(REQUESTS):
            client.get("/api/v1/audit", params={"after": i})
    key, pub = dedicated_key_paths(settings, "hub")
    assert (key.stat().st_mode & 0o777, key.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    rewrite(database_url, CentralAuditEntry, EDITED)
    env = {"SPE_DATA_DIR": str(settings.data_dir), "COLUMNS": "250"}
    result = CliRunner().invoke(cli, ["audit", "verify", "--database-url", database_url],
                                env=env)
    assert result.exit_code == 1, result.output
    assert f"first bad entry is entry {EDITED}:" in result.output
    # The public key kept elsewhere (say, after the data folder was lost) does as well.
    kept = tmp_path / "kept.pub"
    kept.write_bytes(pub.read_bytes())
    result = CliRunner().invoke(cli, ["audit", "verify", "--database-url", database_url,
                                      "--key", str(kept)],
                                env={"SPE_DATA_DIR": str(tmp_path / "elsewhere"),
                                     "COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert f"first bad entry is entry {EDITED}:" in result.output


def test_a_pruned_log_still_verifies_against_its_checkpoints(service):
    from datetime import UTC, datetime, timedelta

    from gateway.node.app import NODE_AUDIT
    from spe.audit import CENTRAL_AUDIT
    from spe.db import make_sessionmaker, session_scope

    service.run()
    log_ = CENTRAL_AUDIT if service.kind == "central" else NODE_AUDIT
    engine = make_engine(service.url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            log_.record(session, actor="late", action="a", object="o", decision="info",
                        at=datetime.now(UTC) + timedelta(days=400))
        with session_scope(make_sessionmaker(engine)) as session:
            assert log_.prune(session, retention_days=365,
                              now=datetime.now(UTC) + timedelta(days=380)) == REQUESTS
    finally:
        engine.dispose()
    service.run(requests=2)  # signs the pruned log at start and stop
    result = service.verify(own=True)
    assert result.exit_code == 0, result.output
    assert "3 entries verified" in result.output
