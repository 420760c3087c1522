"""Back up and restore as deploy/RUNBOOK.md says, on the machine's PostgreSQL: the central
service and one node run (real uvicorn, mutual TLS, the hub witnessing the node's signed
audit head), with a catalogue and audit entries; they stop; the runbook's backup block runs
(pg_dump of each database, tar of the data folders with the audit checkpoint files and of
the PKI, the settings); everything is wiped (databases dropped, folders removed); the
runbook's restore block runs into fresh databases and folders (and runs `spe audit verify`
at the centre, at the node and over the hub's witness, exiting non-zero if any fails); the
restored centre then serves the same catalogue: the same dataset list, the same searches.

The blocks are read from the runbook itself, so what an operator copies is what ran here."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from gateway.hub.witness import witness_once
from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from spe.app import create_central_app
from spe.audit import AuditWitness, CentralAuditEntry, NodeAuditEntry
from spe.db import make_engine, make_sessionmaker
from spe.db.migrate import upgrade
from spe.pki import client_ssl_context, init_pki, server_ssl_options
from spe.settings import REPO_ROOT, Settings
from tests.central import catalogued_central
from tests.conftest import POSTGRES_URL, _postgres_admin
from tests.servers import bind, serve
from tests.spe.test_audit_checkpoints import rewrite

RUNBOOK = REPO_ROOT / "deploy" / "RUNBOOK.md"
NODE = "site-a"
SITES = ("site-a", "site-b", "site-c")
IDP = "https://idp.example/realms/spe"
SEARCHES = ({}, {"q": "site-b"}, {"modality": "MR"}, {"age_band": "65+"},
            {"institution": "site-c"})


def runbook_block(name: str) -> str:
    """The ```sh block after `<!-- tested: NAME -->` in the runbook."""
    text = RUNBOOK.read_text()
    found = re.search(rf"<!-- tested: {name} -->\s*```sh\n(.*?)```", text, re.S)
    assert found, f"no block '{name}' in {RUNBOOK}"
    return found.group(1)


@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    """Four fresh PostgreSQL databases (deploy_*), dropped afterwards: the running pair and
    the pair restored into."""
    tag = uuid.uuid4().hex[:8]
    names = {k: f"deploy_{k}_{tag}" for k in ("central", "node", "central_new", "node_new")}
    with _postgres_admin() as admin:
        for name in names.values():
            admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_URL.rsplit("/", 1)[0]
    try:
        yield {k: f"{base}/{name}" for k, name in names.items()}
    finally:
        with _postgres_admin() as admin:
            for name in names.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _settings(**fields) -> Settings:
    return Settings(environment="development", oidc_issuer=IDP, node_workers=0, **fields)


def _catalogue(client: httpx.Client, base: str) -> dict:
    """What a visitor sees: every dataset's id and title and each search's answer."""
    seen = {}
    for params in SEARCHES:
        response = client.get(f"{base}/api/v1/catalogue/search",
                              params={**params, "size": 100})
        assert response.status_code == 200, response.text
        body = response.json()
        seen[str(sorted(params.items()))] = (body["total"], [
            (hit["identifier"], hit["title"]) for hit in body["results"]], body["facets"])
    return seen


def _run_everything(db: dict[str, str], central_data: Path, node_data: Path,
                    central_pki: Path, node_pki: Path) -> dict:
    """The node and the centre under uvicorn: audited refusals at both, the hub's witness
    of the node's signed head, the catalogue read; both stopped. Returns what was read."""
    upgrade(db["node"], "node")
    catalogued_central(db["central"], SITES, patients=120)
    node_settings = _settings(data_dir=node_data, pki_dir=node_pki, node_id=NODE)
    node_sock = bind()
    node_url = f"https://127.0.0.1:{node_sock.getsockname()[1]}"
    def central_app():
        return create_central_app(_settings(
            data_dir=central_data, database_url=db["central"], pki_dir=central_pki,
            federation_nodes={NODE: node_url}))

    central = central_app()
    central_sock = bind()
    base = f"http://127.0.0.1:{central_sock.getsockname()[1]}"
    # The node runs once on its own (it signs its head on stop), then beside the centre.
    first = bind()
    with serve(create_node_app(NodeConfig(NODE, NODE, db["node"]), node_settings), first,
               **server_ssl_options(node_pki, NODE)), \
            httpx.Client(verify=client_ssl_context(node_pki, NODE)) as operator:
        for i in range(4):  # audited refusals at the node (no token)
            assert operator.get(f"https://127.0.0.1:{first.getsockname()[1]}/api/v1/audit",
                                params={"after": i}).status_code == 401
    node = create_node_app(NodeConfig(NODE, NODE, db["node"]), node_settings)
    with serve(node, node_sock, **server_ssl_options(node_pki, NODE)), \
            serve(central, central_sock), httpx.Client(timeout=30) as client:
        for _ in range(3):  # audited refusals at the centre
            assert client.get(f"{base}/api/v1/users").status_code == 401
        # A witness round (the served centre's own, on start, may have been first: its
        # client belongs to the server's event loop, so this one is another instance's).
        assert asyncio.run(_witness(central_app())) in ({NODE: 0}, {NODE: 1})
        assert _count(db["central"], AuditWitness) >= 1
        seen = _catalogue(client, base)
    return seen


async def _witness(central) -> dict[str, int]:
    try:
        return await witness_once(central.state.ctx, central.state.hub)
    finally:
        await central.state.hub.fanout.aclose()


def _count(url: str, model) -> int:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            return session.scalar(select(func.count()).select_from(model))
    finally:
        engine.dispose()


def _env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}='{v}'\n" for k, v in values.items()))
    path.chmod(0o600)
    return path


def _service_env(*, data: Path, db: str, pki: Path, node: bool) -> dict[str, str]:
    """Production settings of one service, as its environment file holds them."""
    values = {"SPE_ENVIRONMENT": "production", "SPE_SECRET_KEY": secrets.token_urlsafe(48),
              "SPE_DATA_DIR": str(data), "SPE_DATABASE_URL": db, "SPE_PKI_DIR": str(pki),
              "SPE_OIDC_ISSUER": IDP, "SPE_OIDC_JWKS_URL": f"{IDP}/certs"}
    if node:
        values["SPE_NODE_ID"] = NODE
    return values


def _shell(block: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    path = {k: v for k, v in os.environ.items() if not k.startswith("SPE_")}
    # The `spe` of this test run first (the runbook's commands name it so).
    path["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    path["COLUMNS"] = "250"
    return subprocess.run(["bash", "-c", block], env={**path, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_backup_wipe_restore_verifies_and_serves_the_same_catalogue(
        databases: dict[str, str], tmp_path: Path) -> None:
    for tool in ("pg_dump", "pg_restore", "sha256sum", "tar"):
        assert shutil.which(tool), f"{tool} is needed (Debian postgresql-client, coreutils)"
    old, new = tmp_path / "srv", tmp_path / "restored"
    central_data, node_data = old / "central", old / "node-site-a"
    # The federation's CA makes both; each service keeps only its own folder.
    ca = tmp_path / "ca"
    init_pki(ca, nodes=[NODE])
    central_pki, node_pki = old / "pki-central", old / "pki-node"
    for folder, files in ((central_pki, ("ca.crt", "hub.crt", "hub.key", f"{NODE}.crt")),
                          (node_pki, ("ca.crt", "hub.crt", f"{NODE}.crt", f"{NODE}.key"))):
        folder.mkdir(parents=True, mode=0o700)
        for name in files:
            shutil.copy2(ca / name, folder / name)

    before = _run_everything(databases, central_data, node_data, central_pki, node_pki)
    entries = (_count(databases["central"], CentralAuditEntry),
               _count(databases["node"], NodeAuditEntry))
    # The checks below are not vacuous: there is a chain to verify at both.
    assert entries[0] >= 3
    assert entries[1] >= 4
    assert before[str([])][0] == len(SITES)
    checkpoints = {p.name: p.read_bytes()
                   for p in (*central_data.glob("keys/*.checkpoint.json"),
                             *node_data.glob("keys/*.checkpoint.json"))}
    assert set(checkpoints) == {"audit-hub.checkpoint.json", f"audit-{NODE}.checkpoint.json"}

    central_env = _env_file(tmp_path / "central.env", _service_env(
        data=central_data, db=databases["central"], pki=central_pki, node=False))
    node_env = _env_file(tmp_path / "node.env", _service_env(
        data=node_data, db=databases["node"], pki=node_pki, node=True))
    backups = tmp_path / "backups"
    variables = {"SPE_BACKUP": str(backups), "NODE": NODE,
                 "CENTRAL_ENV": str(central_env), "NODE_ENV": str(node_env),
                 "CENTRAL_DB": databases["central"], "NODE_DB": databases["node"],
                 "CENTRAL_DATA": str(central_data), "NODE_DATA": str(node_data),
                 "CENTRAL_PKI": str(central_pki), "NODE_PKI": str(node_pki)}
    backup = _shell(runbook_block("backup"), variables, tmp_path)
    assert backup.returncode == 0, backup.stderr
    (stamp,) = [p.name for p in backups.iterdir()]
    assert oct((backups / stamp).stat().st_mode & 0o777) == "0o700"

    # Lost: both databases, every folder, the settings.
    with _postgres_admin() as admin:
        for key in ("central", "node"):
            admin.execute(f'DROP DATABASE "{databases[key].rsplit("/", 1)[1]}" WITH (FORCE)')
    shutil.rmtree(old)
    central_env.unlink()
    node_env.unlink()

    # Restored elsewhere: fresh databases and folders; each service's settings are its
    # backed-up ones with the new places (what the runbook tells the operator to edit).
    moved = {"CENTRAL_DB": databases["central_new"], "NODE_DB": databases["node_new"],
             "CENTRAL_DATA": str(new / "central"), "NODE_DATA": str(new / "node-site-a"),
             "CENTRAL_PKI": str(new / "pki-central"), "NODE_PKI": str(new / "pki-node"),
             "STAMP": stamp}
    restore = _shell(runbook_block("restore"), {**variables, **moved}, tmp_path)
    said = restore.stdout + restore.stderr  # rich's console writes to standard error
    assert restore.returncode == 0, said
    assert said.count("audit log intact") == 3, said  # centre, node, the hub's witness
    assert _count(databases["central_new"], CentralAuditEntry) == entries[0]
    assert _count(databases["node_new"], NodeAuditEntry) == entries[1]
    for name, data in checkpoints.items():
        folder = new / ("central" if "hub" in name else "node-site-a") / "keys"
        assert (folder / name).read_bytes() == data
        assert oct((folder / name).stat().st_mode & 0o777) == "0o600"

    # The restored centre serves the same catalogue.
    central = create_central_app(_settings(
        data_dir=new / "central", database_url=databases["central_new"],
        pki_dir=new / "pki-central"))
    sock = bind()
    with serve(central, sock), httpx.Client(timeout=30) as client:
        after = _catalogue(client, f"http://127.0.0.1:{sock.getsockname()[1]}")
    assert after == before


def test_a_restore_that_does_not_verify_stops_the_runbook(databases: dict[str, str],
                                                          tmp_path: Path) -> None:
    """The restore block fails (exit 1, the rewritten entry named) when the backed-up
    database was rewritten: its `spe audit verify` is a gate, not a report."""
    old = tmp_path / "srv"
    ca = tmp_path / "ca"
    init_pki(ca, nodes=[NODE])
    central_pki, node_pki = old / "pki-central", old / "pki-node"
    for folder in (central_pki, node_pki):
        shutil.copytree(ca, folder)
    _run_everything(databases, old / "central", old / "node-site-a", central_pki, node_pki)
    # Someone with the database's password rewrites entry 2 of the centre's log, every
    # later hash and the head before the backup: only the signed checkpoints see it.
    rewrite(databases["central"], CentralAuditEntry, 2)
    env = {k: _env_file(tmp_path / f"{k}.env", _service_env(
        data=old / d, db=databases[k], pki=p, node=k == "node"))
        for k, d, p in (("central", "central", central_pki),
                        ("node", "node-site-a", node_pki))}
    variables = {"SPE_BACKUP": str(tmp_path / "b"), "NODE": NODE,
                 "CENTRAL_ENV": str(env["central"]), "NODE_ENV": str(env["node"]),
                 "CENTRAL_DB": databases["central"], "NODE_DB": databases["node"],
                 "CENTRAL_DATA": str(old / "central"), "NODE_DATA": str(old / "node-site-a"),
                 "CENTRAL_PKI": str(central_pki), "NODE_PKI": str(node_pki)}
    assert _shell(runbook_block("backup"), variables, tmp_path).returncode == 0
    (stamp,) = [p.name for p in (tmp_path / "b").iterdir()]
    new = tmp_path / "restored"
    restore = _shell(runbook_block("restore"), {
        **variables, "CENTRAL_DB": databases["central_new"], "NODE_DB": databases["node_new"],
        "CENTRAL_DATA": str(new / "central"), "NODE_DATA": str(new / "node-site-a"),
        "CENTRAL_PKI": str(new / "pki-central"), "NODE_PKI": str(new / "pki-node"),
        "STAMP": stamp}, tmp_path)
    said = restore.stdout + restore.stderr
    assert restore.returncode == 1, said
    assert "audit log tampered: first bad entry is entry 2" in said, said
