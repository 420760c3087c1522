"""The hub as witness of a node's audit log, over real mutual TLS: the node signs its heads,
the hub pulls and keeps them, and a node whose database and checkpoint file are rewritten
(entry edited, later hashes recomputed, head moved, checkpoint rows deleted) is named by
`spe audit verify` at the centre and at the node."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from gateway.hub.witness import _store, witness_once
from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from spe.app import create_central_app
from spe.audit import AuditWitness, CentralAuditEntry, NodeAuditEntry
from spe.audit.checkpoints import checkpoint_file
from spe.audit.schedule import make_checkpointer
from spe.cli import app as cli
from spe.db import session_scope
from spe.db.migrate import upgrade
from spe.pki import client_ssl_context, server_ssl_options
from spe.settings import Settings
from spe.wire.audit import NodeCheckpoints, SignedCheckpoint
from tests.gateway.conftest import ISSUER
from tests.servers import bind, serve
from tests.spe.test_audit_checkpoints import EDITED, execute, rewrite

SITE = "site-a"
REFUSALS = 6


def run_node(settings: Settings, url: str, pki: Path, requests: int = 0) -> None:
    """The node under uvicorn with mutual TLS, from start (a checkpoint) to stop (another);
    `requests` calls without a token, each an audited refusal."""
    sock = bind()
    base = f"https://127.0.0.1:{sock.getsockname()[1]}"
    app = create_node_app(NodeConfig(SITE, SITE, url), settings)
    with serve(app, sock, lifespan="on", **server_ssl_options(pki, SITE)), \
            httpx.Client(verify=client_ssl_context(pki, SITE)) as client:  # its operator
        for i in range(requests):
            assert client.get(f"{base}/api/v1/audit", params={"after": i}).status_code == 401


async def pull(central) -> dict[str, int]:
    try:
        return await witness_once(central.state.ctx, central.state.hub)
    finally:
        await central.state.hub.fanout.aclose()


@pytest.fixture
def witnessed(database_url: str, pki: Path, tmp_path: Path):
    """A node (its database on SQLite or PostgreSQL) that ran and signed its head, and a
    central database holding the hub's witness of it."""
    upgrade(database_url, "node")
    node_settings = Settings(data_dir=tmp_path / "node", pki_dir=pki, node_workers=0,
                             oidc_issuer=ISSUER, environment="development")
    run_node(node_settings, database_url, pki, REFUSALS)
    central_url = f"sqlite:///{tmp_path / 'central.db'}"
    upgrade(central_url, "central")
    sock = bind()
    node_url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    central = create_central_app(Settings(
        data_dir=tmp_path / "central", database_url=central_url, pki_dir=pki,
        oidc_issuer=ISSUER, federation_nodes={SITE: node_url}, environment="development"))
    app = create_node_app(NodeConfig(SITE, SITE, database_url), node_settings)
    with serve(app, sock, lifespan="on", **server_ssl_options(pki, SITE)):
        stored = asyncio.run(pull(central))
        assert stored == {SITE: 1}
        assert asyncio.run(pull(central)) == {SITE: 0}  # nothing new: nothing twice
    return database_url, central_url, node_settings, central


def verify(*args: str, pki: Path, data_dir: Path):
    return CliRunner().invoke(cli, ["audit", "verify", *args],
                              env={"SPE_PKI_DIR": str(pki), "SPE_DATA_DIR": str(data_dir),
                                   "COLUMNS": "250"})


def attack(node_url: str, node_settings: Settings) -> None:
    """Everything at the node: the entry, the later hashes, the head, every checkpoint row
    and the checkpoint file."""
    rewrite(node_url, NodeAuditEntry, EDITED)
    execute(node_url, "DELETE FROM audit_checkpoint")
    checkpoint_file(node_settings, SITE).unlink()


def test_the_hub_witnesses_the_nodes_signed_head(witnessed, pki, tmp_path):
    node_url, central_url, _, central = witnessed
    with central.state.ctx.sessions() as session:
        rows = session.execute(select(AuditWitness)).scalars().all()
    assert [(r.node_id, r.seq) for r in rows] == [(SITE, REFUSALS)]
    result = verify("--node", SITE, "--database-url", central_url, pki=pki,
                    data_dir=tmp_path / "central")
    assert result.exit_code == 0, result.output
    result = verify("--node", SITE, "--database-url", central_url, "--node-database-url",
                    node_url, pki=pki, data_dir=tmp_path / "central")
    assert result.exit_code == 0, result.output
    assert f"{REFUSALS} entries verified" in result.output


def test_node_rewritten_with_its_checkpoints_deleted_is_named_at_the_centre(witnessed, pki,
                                                                             tmp_path):
    node_url, central_url, node_settings, _ = witnessed
    attack(node_url, node_settings)
    result = verify("--node", SITE, "--database-url", central_url, "--node-database-url",
                    node_url, pki=pki, data_dir=tmp_path / "central")
    assert result.exit_code == 1, result.output
    assert f"first bad entry is entry {EDITED}:" in result.output
    assert "the hub's witness" in result.output


def test_node_rewritten_is_named_at_the_node_with_the_hubs_export(witnessed, pki, tmp_path):
    node_url, central_url, node_settings, _ = witnessed
    attack(node_url, node_settings)
    export = tmp_path / "witness.json"
    result = CliRunner().invoke(cli, ["audit", "witness", "--node", SITE, "--database-url",
                                      central_url, "--out", str(export)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(export.read_text())) == 1
    # Without the witness, the database alone: the node signs, and nothing signed is left.
    alone = verify("--target", "node", "--name", SITE, "--database-url", node_url, pki=pki,
                   data_dir=tmp_path / "node")
    assert alone.exit_code == 1, alone.output
    assert "no signed checkpoint covers it" in alone.output
    result = verify("--target", "node", "--name", SITE, "--database-url", node_url,
                    "--witness", str(export), pki=pki, data_dir=tmp_path / "node")
    assert result.exit_code == 1, result.output
    assert f"first bad entry is entry {EDITED}:" in result.output
    assert "missing from the database (checkpoint rows deleted)" in result.output


def test_the_hub_refuses_a_checkpoint_the_node_did_not_sign(witnessed):
    _, _, _, central = witnessed
    ctx = central.state.ctx
    with ctx.sessions() as session:
        real = session.execute(select(AuditWitness)).scalar_one()
    body = json.loads(real.body)
    body.update(hash="f" * 64)  # a head the node never signed
    forged = SignedCheckpoint(body=json.dumps(body, sort_keys=True, separators=(",", ":")),
                              signature=real.signature, cert=real.cert)
    assert _store(ctx, SITE, NodeCheckpoints(node_id=SITE, checkpoints=[forged])) == 0
    with session_scope(ctx.sessions) as session:
        assert session.execute(select(func.count()).select_from(AuditWitness)).scalar() == 1
        denial = session.execute(select(CentralAuditEntry)
                                 .where(CentralAuditEntry.action == "audit.witness")
                                 ).scalar_one()
    assert denial.decision == "deny"
    assert "signature that does not verify" in denial.reason


def test_a_node_that_re_signs_a_rewritten_history_is_caught_as_a_fork(witnessed, pki,
                                                                      tmp_path, caplog):
    """A node rewritten with its key at hand: on its next start it signs the rewritten
    head, and its next checkpoint starts from a head that disagrees with the witnessed one."""
    node_url, central_url, node_settings, central = witnessed
    attack(node_url, node_settings)
    run_node(node_settings, node_url, pki, requests=2)
    sock = bind()
    # The node is back at another address: the membership the hub reads names it there.
    central.state.hub.fanout.membership.configured[SITE] = \
        f"https://127.0.0.1:{sock.getsockname()[1]}"
    central.state.hub.fanout.membership.invalidate()
    app = create_node_app(NodeConfig(SITE, SITE, node_url), node_settings)
    with serve(app, sock, lifespan="on", **server_ssl_options(pki, SITE)):
        assert asyncio.run(pull(central)) == {SITE: 1}  # kept, as evidence
    assert any("forked" in r.getMessage() for r in caplog.records)
    result = verify("--node", SITE, "--database-url", central_url, pki=pki,
                    data_dir=tmp_path / "central")
    assert result.exit_code == 1, result.output
    assert f"first bad entry is entry {REFUSALS}:" in result.output
    assert "the history was forked" in result.output


def test_deleted_witness_rows_are_named_from_the_hubs_own_log(witnessed, pki, tmp_path):
    _, central_url, _, central = witnessed
    execute(central_url, "DELETE FROM audit_witness")
    result = verify("--node", SITE, "--database-url", central_url, pki=pki,
                    data_dir=tmp_path / "central")
    assert result.exit_code == 1, result.output
    assert f"first bad entry is entry {REFUSALS}:" in result.output
    assert "witness rows deleted" in result.output
    # The hub's own log, with its witness entries, signed as the central service does at
    # stop, still verifies: the rows were the only thing touched.
    ctx = central.state.ctx
    make_checkpointer(ctx.settings, ctx.audit, ctx.sessions, "hub").checkpoint("stop")
    own = verify("--database-url", central_url, pki=pki, data_dir=tmp_path / "central")
    assert own.exit_code == 0, own.output
