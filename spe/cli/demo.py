"""The demo federation: central services plus one node per institution, on one machine.

First start generates the synthetic data; every start migrates and syncs the nodes, then
serves the apps until Ctrl-C, which stops every server (and Orthanc) cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from rich.table import Table

from spe.cli.demo_env import ENV_FILE_NAME, read_env_file, write_env_file
from spe.cli.progress import console, say, sync_ticks, synth_ticks, tracker
from spe.settings import Settings

DEMO_USERS = (
    ("alice", "researcher", None),
    ("carol", "researcher", None),  # a team member on alice's applications
    ("bob", "approver", "site-a"),
    ("bea", "approver", "site-b"),
    ("cem", "approver", "site-c"),
    ("hilde", "hdab", None),
    ("olga", "output_checker", None),
    ("oscar", "output_checker", None),  # a release needs two different output checkers
    ("root", "admin", None),
)


class DemoError(Exception):
    pass


@dataclass
class DemoNode:
    node_id: str
    name: str
    database_url: str
    dicom: str
    fhir: str
    port: int


class _Server(uvicorn.Server):
    # One signal handler for all servers (installed below), not one per server.
    @contextlib.contextmanager
    def capture_signals(self):
        yield


def _synthesise(synth_dir: Path, institutions: int, patients: int, seed: int) -> dict:
    from spe.synth import generate

    manifest = synth_dir / "manifest.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        if data.get("seed") == seed and len(data.get("institutions", [])) == institutions \
                and data.get("patients_per_institution") == patients:
            console.print(f"synthetic data already in {synth_dir}")
            return data
        raise DemoError(f"{synth_dir} holds data made with other settings; remove it first")
    console.print(f"generating {institutions} x {patients} synthetic patients in {synth_dir}")
    with tracker() as track:
        generate(synth_dir, institutions=institutions, patients=patients, seed=seed,
                 progress=synth_ticks(track))
    return json.loads(manifest.read_text())


def run_demo(*, data_dir: Path, institutions: int, patients: int, seed: int, port: int,
             orthanc: bool) -> None:
    from gateway.node.query.perturb import node_secret
    from gateway.node.service import NodeSyncError, run_sync
    from spe.db.migrate import upgrade
    from spe.identity import demo_issuer

    data_dir = data_dir.resolve()
    settings = Settings(data_dir=data_dir, oidc_issuer=f"http://127.0.0.1:{port}",
                        environment="development")
    manifest = _synthesise(data_dir / "synth", institutions, patients, seed)
    site_ids = [inst["id"] for inst in manifest["institutions"]]
    names = {inst["id"]: inst.get("name", inst["id"]) for inst in manifest["institutions"]}

    say("central database: migrating")
    upgrade(settings.resolved_database_url, "central")
    nodes = [
        DemoNode(
            node_id=site,
            name=names[site],
            database_url=f"sqlite:///{data_dir / 'nodes' / site / 'node.db'}",
            dicom=f"folder:{data_dir / 'synth' / site / 'dicom'}",
            fhir=f"ndjson:{data_dir / 'synth' / site / 'fhir'}",
            port=port + 1 + i,
        )
        for i, site in enumerate(site_ids)
    ]
    pacs = None
    try:
        if orthanc:
            pacs = _start_orthanc(data_dir, nodes[-1])
        totals = {"patients": 0, "instances": 0}
        for node in nodes:
            try:
                say(f"{node.node_id}: migrating and syncing its index")
                with tracker() as track:
                    report = run_sync(node.database_url, dicom=node.dicom, fhir=node.fhir,
                                      actor="demo",
                                      progress=sync_ticks(track, f"sync {node.node_id}"),
                                      cellkey_secret=node_secret(settings, node.node_id))
            except NodeSyncError as exc:
                raise DemoError(f"{node.node_id}: {exc}") from exc
            totals["patients"] += report.patients
            totals["instances"] += report.instances
            console.print(
                f"{node.node_id}: {report.patients} patients, {report.studies} studies, "
                f"{report.series} series, {report.instances} instances, "
                f"{report.conditions} conditions, skipped {report.skipped}"
            )
        console.print(f"federation: {len(nodes)} nodes, {totals['patients']} patients, "
                      f"{totals['instances']} DICOM instances")
        fill_catalogue(settings, nodes)
        # From here on the nodes speak mutual TLS with the federation's certificates; the
        # hub asks them queries and the catalogue keeps fresh on its schedule.
        pki_dir = _pki(data_dir, [n.node_id for n in nodes])
        urls = {n.node_id: f"https://127.0.0.1:{n.port}" for n in nodes}
        settings = settings.model_copy(update={
            "pki_dir": pki_dir, "federation_nodes": urls,
            "catalogue_nodes": list(urls.values())})
        issuer = demo_issuer(settings)
        say(f"starting the central service and {len(nodes)} nodes")
        _print_access(settings, nodes, issuer)
        stopped = asyncio.run(_serve_all(settings, nodes, issuer))
    finally:
        if pacs is not None:
            pacs.stop()
    console.print("demo stopped" if stopped else "demo stopped before it served")


def fill_catalogue(settings: Settings, nodes: list, *, actor: str = "demo") -> None:
    """Harvest each node's descriptor into the catalogue, in-process (the nodes are not
    serving yet; `spe catalogue harvest --node URL` does the same over HTTP). `nodes` have
    `node_id`, `name` and `database_url`."""
    from catalogue import service as catalogue
    from gateway.node.descriptors import compute_descriptor, descriptor_threshold
    from spe.db import make_engine, make_sessionmaker, session_scope
    from spe.policy import make_policy_service

    threshold = descriptor_threshold(make_policy_service(settings))
    descriptors = []
    with tracker() as track:
        track.update("catalogue: describing the nodes", 0, len(nodes), unit="nodes")
        for done, node in enumerate(nodes, start=1):
            engine = make_engine(node.database_url)
            try:
                with make_sessionmaker(engine)() as session:
                    descriptors.append(compute_descriptor(
                        session, node_id=node.node_id, node_name=node.name,
                        threshold=threshold))
            finally:
                engine.dispose()
            track.update("catalogue: describing the nodes", done, len(nodes), unit="nodes",
                         note=node.node_id)
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            catalogue.harvest(session, descriptors, actor=actor)
    finally:
        engine.dispose()
    console.print(f"catalogue: {len(descriptors)} datasets harvested")


def _pki(data_dir: Path, node_ids: list[str]) -> Path:
    """The demo federation's CA and certificates, made on first run (spe pki init)."""
    from spe.pki import init_pki

    pki_dir = data_dir / "pki"
    missing = [n for n in ["hub", *node_ids] if not (pki_dir / f"{n}.crt").exists()]
    if missing:
        say("federation PKI: making the CA and the certificates")
        init_pki(pki_dir, nodes=node_ids)
        console.print(f"federation PKI: CA and certificates in {pki_dir}")
    return pki_dir


def _start_orthanc(data_dir: Path, node: DemoNode):
    from gateway.node.orthanc_process import OrthancError, OrthancProcess, orthanc_available

    if not orthanc_available():
        raise DemoError("--orthanc needs the Debian package `orthanc` (apt-get install orthanc "
                        "orthanc-dicomweb)")
    folder = Path(node.dicom.removeprefix("folder:"))
    pacs = OrthancProcess(data_dir / "orthanc")  # answers the node's AE title only
    try:
        pacs.start()
        files = sorted(folder.rglob("*.dcm"))
        if pacs.instance_count() < len(files):
            console.print(f"loading {len(files)} instances of {node.node_id} into Orthanc")
            pacs.upload(files)
    except OrthancError as exc:
        pacs.stop()
        raise DemoError(str(exc)) from exc
    node.dicom = f"dimse://{pacs.aet}@127.0.0.1:{pacs.dicom_port}"
    console.print(f"{node.node_id} reads its images from Orthanc: {pacs.http_url} "
                  f"(DIMSE port {pacs.dicom_port}; HTTP user {pacs.http_user}, its password "
                  f"in {pacs.workdir / 'orthanc.json'})")
    return pacs


def _print_access(settings: Settings, nodes: list[DemoNode], issuer) -> None:
    table = Table(title="demo federation")
    table.add_column("service")
    table.add_column("URL")
    central = settings.oidc_issuer
    table.add_row("central", f"{central}  (API docs: {central}/docs)")
    table.add_row("catalogue", f"{central}/catalogue")
    table.add_row("federated query", f"{central}/query  (API: POST {central}/api/v1/query)")
    table.add_row("data permits", f"{central}/permits")
    table.add_row("jobs", f"{central}/jobs  (code to the data, under a permit)")
    table.add_row("federated runs", f"{central}/fed  (ComBat, Flower: in rounds)")
    table.add_row("airlock", f"{central}/airlock  (output checkers)")
    for node in nodes:
        table.add_row(f"node {node.node_id}",
                      f"https://127.0.0.1:{node.port}  ({node.name}; mutual TLS)")
    console.print(table)
    tokens = {}
    for user, role, institution in DEMO_USERS:
        # One token per role; the role's later users under "role:user" (e.g. the approvers
        # of the other sites, a second researcher).
        key = role if role not in tokens else f"{role}:{user}"
        tokens[key] = issuer.mint(user, [role], institution=institution,
                                  ttl_seconds=12 * 3600)
    token_file = settings.data_dir / "tokens.json"
    token_file.write_text(json.dumps(tokens, indent=2))
    token_file.chmod(0o600)
    console.print(f"tokens for each role (valid 12 h), also in {token_file}:")
    for role, tok in tokens.items():
        console.print(f"[bold]{role}[/bold]: {tok}", soft_wrap=True)
    console.print(f'try: curl -H "Authorization: Bearer $(jq -r .admin {token_file})" '
                  f"{central}/api/v1/audit/verify")
    env_file = write_demo_env(settings, nodes)
    console.print(f"the CLI's settings for this demo, in {env_file}; in another shell:")
    activate = venv_activate()
    if activate:  # a new shell has no `spe` on its PATH until the venv is activated
        console.print(f"  . {activate}", soft_wrap=True, markup=False)
    console.print(f"  source {env_file}", soft_wrap=True)
    for name, value in read_env_file(env_file).items():
        console.print(f"  export {name}={shlex.quote(value)}", soft_wrap=True, markup=False)
    console.print("  export SPE_TOKEN=$(spe token --user alice --role researcher)",
                  markup=False)


def venv_activate() -> str | None:
    """The activate script of the virtualenv this demo runs from (relative to the working
    folder when under it, as `make demo`'s `.venv`), or None outside a virtualenv."""
    if sys.prefix == sys.base_prefix:
        return None
    script = Path(sys.prefix) / "bin" / "activate"
    if not script.is_file():
        return None
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def write_demo_env(settings: Settings, nodes: list[DemoNode]) -> Path:
    """`<data-dir>/spe.env`: what the CLI needs to talk to this demo (the hub's URL, the
    issuer whose key `spe token` signs with, the data folder with the central database,
    the federation's certificates for `spe catalogue harvest`)."""
    central = settings.oidc_issuer
    values = {
        "SPE_ENVIRONMENT": "development",
        "SPE_DATA_DIR": str(settings.data_dir),
        "SPE_OIDC_ISSUER": central,
        "SPE_HUB_URL": central,
        "SPE_PKI_DIR": str(settings.pki_dir),
        "SPE_CATALOGUE_NODES": json.dumps([f"https://127.0.0.1:{n.port}" for n in nodes]),
    }
    path = settings.data_dir / ENV_FILE_NAME
    write_env_file(path, values, [
        f"The demo federation at {central}: its settings for the spe CLI.",
        f"Written by `spe demo`; in a shell: source {path}",
        *([f"(the spe command: . {venv_activate()})"] if venv_activate() else []),
        "Then, e.g.: export SPE_TOKEN=$(spe token --user alice --role researcher)",
        "            spe catalogue harvest      (the nodes' mutual TLS: SPE_PKI_DIR)",
        "            spe audit verify           (the central database in SPE_DATA_DIR)",
    ])
    return path


async def _serve_all(settings: Settings, nodes: list[DemoNode], issuer) -> bool:
    """Serve every app until SIGINT or SIGTERM; False if one came before they served.

    The signal handlers go in first, then "press Ctrl-C to stop": a Ctrl-C while the apps
    are being built stops the demo then, rather than being lost."""
    servers: list[_Server] = []
    early_stop = asyncio.Event()

    def stop(*_: object) -> None:
        early_stop.set()
        for server in servers:
            if server.should_exit:
                server.force_exit = True
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    # Said only once the handlers are in: a Ctrl-C at once after it never lands in the
    # middle of the event loop's own set-up (a traceback from its __del__ at exit).
    console.print("press Ctrl-C to stop")
    try:
        return await _build_and_serve(settings, nodes, issuer, servers, early_stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _build_and_serve(settings: Settings, nodes: list[DemoNode], issuer,
                           servers: list[_Server], early_stop: asyncio.Event) -> bool:
    from gateway.node.app import create_node_app
    from gateway.node.config import NodeConfig
    from spe.app import create_central_app
    from spe.identity import make_verifier
    from spe.policy import make_policy_service

    verifier = make_verifier(settings, issuer)
    policy = make_policy_service(settings)
    apps = [("central", create_central_app(settings), int(settings.oidc_issuer.rsplit(":", 1)[1]))]
    for node in nodes:
        config = NodeConfig(node.node_id, node.name, node.database_url, node.dicom, node.fhir)
        apps.append((node.node_id,
                     create_node_app(config, settings, verifier=verifier, policy=policy),
                     node.port))
    from spe.pki import server_ssl_options

    await asyncio.sleep(0)  # a signal that came while the apps were built is handled here
    if early_stop.is_set():
        return False
    servers.extend([
        # Every service has background work: the catalogue's scheduled harvest and the
        # hub's connections at the centre, the job workers (SPE_NODE_WORKERS) at a node.
        _Server(uvicorn.Config(app, host="127.0.0.1", port=p, log_level="warning",
                               lifespan="on",
                               # A client that keeps a connection open must not hold up
                               # Ctrl-C for long.
                               timeout_graceful_shutdown=5,
                               **({} if name == "central"
                                  else server_ssl_options(settings.pki_dir, name))))
        for name, app, p in apps
    ])
    await asyncio.gather(*(s.serve() for s in servers))
    return True
