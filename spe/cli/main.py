"""`spe`: tokens, synthetic data, migrations, node syncs, audit checks, servers, the demo."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from spe.cli.catalogue import search as catalogue_search
from spe.cli.deid import deid_app
from spe.cli.failure import fail
from spe.cli.fed import fed_app
from spe.cli.federation import federation_app
from spe.cli.identity import identity_app
from spe.cli.job import job_app
from spe.cli.permit import permit_app
from spe.cli.pki import register as _register_pki
from spe.cli.progress import (
    console,
    harvest_ticks,
    sync_ticks,
    synth_ticks,
    tracker,
)
from spe.cli.query import query as query_command
from spe.cli.sandbox import sandbox_app
from spe.cli.users import users_app
from spe.private_files import PRIVATE_UMASK
from spe.settings import InsecureConfiguration, Settings

app = typer.Typer(help="EHDS secure processing environment", no_args_is_help=True,
                  pretty_exceptions_enable=False)
node_app = typer.Typer(help="Institution node commands", no_args_is_help=True)
audit_app = typer.Typer(help="Audit log commands", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations", no_args_is_help=True)
policy_app = typer.Typer(help="Policy commands", no_args_is_help=True)
catalogue_app = typer.Typer(help="Dataset catalogue commands", no_args_is_help=True)
pki_app = typer.Typer(help="The federation's CA and mutual-TLS certificates",
                      no_args_is_help=True)
app.add_typer(node_app, name="node")
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")
app.add_typer(policy_app, name="policy")
app.add_typer(deid_app, name="deid")
app.add_typer(catalogue_app, name="catalogue")
catalogue_app.command("search")(catalogue_search)
app.add_typer(pki_app, name="pki")
_register_pki(pki_app)
app.add_typer(federation_app, name="federation")
app.add_typer(permit_app, name="permit")
app.add_typer(fed_app, name="fed")
app.add_typer(job_app, name="job")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(users_app, name="users")
app.add_typer(identity_app, name="identity")
app.command("query")(query_command)


# Every file a service writes holds data or keys (databases and their -wal/-shm, staged
# extracts, job folders, outputs, staging reports, the airlock, keys): created 0600 in 0700
# folders, whatever the shell's umask. Commands that run as services or write for them
# (serve, node worker, node sync, db upgrade, demo) all start here. The sandbox's per-job
# folders are chowned to the job's user after they are made, which a umask does not stop.
@app.callback()
def _private_files() -> None:
    os.umask(PRIVATE_UMASK)




def load_settings() -> Settings:
    try:
        return Settings()
    except InsecureConfiguration as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:  # pydantic's ValidationError
        raise fail(f"invalid SPE_* configuration: {exc}") from None


def existing_database(url: str, settings: Settings, *, flag: str = "--database-url") -> str:
    """`url`, refused when it names a SQLite file that is not there: opening it would
    leave an empty database behind and fail on its first table."""
    from spe.cli.demo_env import source_hint

    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not Path(path).exists():
            where = ("the URL given" if url != settings.resolved_database_url
                     else "SPE_DATABASE_URL" if settings.database_url
                     else f"SPE_DATABASE_URL is unset, so $SPE_DATA_DIR/central.db with "
                          f"SPE_DATA_DIR={settings.data_dir}")
            raise fail(f"no database at {Path(path).absolute()} ({where}); "
                       f"give {flag} URL or set SPE_DATABASE_URL or SPE_DATA_DIR; "
                       f"{source_hint()}")
    return url


@contextlib.contextmanager
def database_errors(url: str):
    """A database that cannot be read (unreachable, not migrated, not SPE's) ends the
    command with its reason, not a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise fail(f"cannot read the database {_redact(url)}: {reason} (is it an SPE "
                   "database at the latest migration? `spe db upgrade`)", 1) from None


def _redact(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as its scheme only
        return url.split(":", 1)[0] + ":..."


@app.command()
def token(
    user: Annotated[str, typer.Option(help="The user's subject (unique id)")],
    role: Annotated[list[str], typer.Option(help="Role; repeat for several")],
    institution: Annotated[str | None, typer.Option(help="Institution (for approvers)")] = None,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds")] = 3600,
) -> None:
    """Mint a token from the demo issuer (development only): signed with the key the
    running demo publishes ($SPE_DATA_DIR/keys), for its issuer URL; never makes a key."""
    from spe.cli.demo_env import ENV_FILE_NAME, read_env_file, source_hint
    from spe.identity import IssuerKeyMissing, demo_issuer
    from spe.identity.issuer import check_claims

    try:  # the arguments first: a wrong role is the user's to fix whatever the key
        check_claims(role, institution)
    except ValueError as exc:
        raise fail(str(exc)) from None
    settings = load_settings()
    if settings.oidc_jwks_url:
        raise fail("tokens come from the identity provider at SPE_OIDC_ISSUER, not from spe")
    if "oidc_issuer" not in settings.model_fields_set:
        # The demo's data folder names its issuer (the URL it serves at) in its spe.env.
        demo_url = read_env_file(settings.data_dir / ENV_FILE_NAME).get("SPE_OIDC_ISSUER")
        if demo_url:
            settings = settings.model_copy(update={"oidc_issuer": demo_url})
    try:
        issuer = demo_issuer(settings, create=False)
    except IssuerKeyMissing as exc:
        raise fail(f"{exc}: `spe token` signs with the key the running demo (or `spe serve "
                   f"central` in development) publishes, found by SPE_DATA_DIR (now "
                   f"{settings.data_dir}); {source_hint()}") from None
    try:
        typer.echo(issuer.mint(user, role, institution=institution, ttl_seconds=ttl))
    except ValueError as exc:
        raise fail(str(exc)) from None


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Output folder")],
    institutions: Annotated[int, typer.Option(min=1, max=26)] = 3,
    patients: Annotated[int, typer.Option(min=1, help="Patients per institution")] = 300,
    seed: int = 1,
) -> None:
    """Write a synthetic federation: FHIR NDJSON and DICOM per institution."""
    from spe.synth import generate

    try:
        with tracker() as track:
            summary = generate(out, institutions=institutions, patients=patients, seed=seed,
                               progress=synth_ticks(track))
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    typer.echo(summary.to_json())


@db_app.command("upgrade")
def db_upgrade(
    target: Annotated[str, typer.Option(help="central or node")] = "central",
    url: Annotated[str | None, typer.Option(help="Database URL (default: SPE_DATABASE_URL)")]
    = None,
) -> None:
    """Apply the Alembic migrations (SQLite or PostgreSQL)."""
    from spe.db.migrate import upgrade

    if target not in ("central", "node"):
        raise fail("--target must be central or node")
    settings = load_settings()
    upgrade(url or settings.resolved_database_url, target)  # type: ignore[arg-type]
    console.print(f"{target} database is at the latest migration")


@node_app.command("sync")
def node_sync(
    database_url: Annotated[str | None, typer.Option(help="Node database URL")] = None,
    dicom: Annotated[str | None, typer.Option(
        help="folder:PATH | dimse://AET@HOST:PORT | dicomweb:URL (default SPE_NODE_DICOM)")]
    = None,
    fhir: Annotated[str | None, typer.Option(
        help="ndjson:PATH | bundle:PATH (default SPE_NODE_FHIR)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Rebuild this node's index from its DICOM and FHIR stores."""
    from gateway.node.service import NodeSyncError, run_sync

    settings = load_settings()
    url = database_url or settings.database_url
    if not url:
        raise fail("give --database-url or set SPE_DATABASE_URL for the node database")
    secret = None
    if settings.node_id or settings.node_cellkey_secret is not None:
        from gateway.node.query.perturb import node_secret

        secret = node_secret(settings, settings.node_id)
    try:
        with tracker() as track:
            report = run_sync(url, dicom=dicom if dicom is not None else settings.node_dicom,
                              fhir=fhir if fhir is not None else settings.node_fhir,
                              actor="cli", progress=sync_ticks(track), cellkey_secret=secret)
    except NodeSyncError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    print_sync_report(report)


@node_app.command("worker")
def node_worker(
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Jobs run at once")] = 1,
    name: Annotated[str, typer.Option(help="This worker's name in the jobs and the audit")]
    = "cli",
) -> None:
    """Run this node's jobs on this machine until Ctrl-C (configured by SPE_* like `spe
    serve node`). On PostgreSQL the jobs come through procrastinate, so any number of
    machines can run this; on SQLite it polls the job table (one machine)."""
    import threading
    import time

    from gateway.node.app import NODE_AUDIT
    from gateway.node.config import NodeConfig, code_registry
    from gateway.node.jobs import dispatch
    from gateway.node.jobs.runtime import make_worker
    from gateway.node.source_probe import job_counts
    from spe.cli.startup import serve_metrics, start_service
    from spe.db import make_engine, make_sessionmaker
    from spe.db.migrate import upgrade
    from spe.observability import ServiceMetrics
    from spe.policy import make_policy_service

    settings = load_settings()
    if not (settings.node_id and settings.database_url):
        raise fail("a node worker needs SPE_NODE_ID and SPE_DATABASE_URL")
    start_service(settings, settings.database_url)  # the log format, the database
    metrics = ServiceMetrics("worker")
    upgrade(settings.database_url, "node")
    config = NodeConfig(node_id=settings.node_id, name=settings.node_name or settings.node_id,
                        database_url=settings.database_url, dicom=settings.node_dicom,
                        fhir=settings.node_fhir, code_review=settings.node_code_review,
                        code_registry=code_registry(settings.node_code_registry))
    sessions = make_sessionmaker(make_engine(settings.database_url))
    metrics.collect_gauge("spe_job_queue_depth", "This node's jobs by state.", ["state"],
                          job_counts(sessions))
    # Served once every gauge is registered: a scrape never sees a worker without its queue.
    serve_metrics(settings, metrics.registry)
    policy = make_policy_service(settings)
    worker = make_worker(config, settings, policy, sessions, NODE_AUDIT, name, metrics=metrics)
    console.print(f"worker {worker.worker_id}: {concurrency} job(s) at once; Ctrl-C stops")
    if dispatch.uses_task_queue(settings.database_url):
        dispatch.run_task_workers_blocking(settings.database_url, worker, concurrency,
                                           worker.stale_after / 2)
        return
    stop = threading.Event()
    loops = [threading.Thread(target=make_worker(config, settings, policy, sessions, NODE_AUDIT,
                                                 f"{name}-{i}", metrics=metrics).run_forever,
                              args=(stop,), daemon=True) for i in range(concurrency)]
    for loop in loops:
        loop.start()
    try:
        while any(loop.is_alive() for loop in loops):
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping: running jobs end at their next heartbeat elsewhere")
        stop.set()


def print_sync_report(report, title: str = "sync") -> None:
    table = Table(title=title)
    table.add_column("indexed")
    table.add_column("count", justify="right")
    for name in ("patients", "studies", "series", "instances", "conditions", "observations"):
        table.add_row(name, str(getattr(report, name)))
    table.add_row("skipped", str(report.skipped))
    console.print(table)
    for item in report.skipped_examples[:10]:
        console.print(f"  [yellow]skipped[/yellow] {item['where']}: {item['reason']}")
    if report.skipped > 10:
        console.print(f"  ... and {report.skipped - 10} more (see the sync report)")


@catalogue_app.command("harvest")
def catalogue_harvest(
    node: Annotated[list[str] | None, typer.Option(
        help="A node's base URL; repeat for several (default: SPE_CATALOGUE_NODES, which "
             "the demo's spe.env sets)")] = None,
    token: Annotated[str | None, typer.Option(
        help="Bearer token with the hdab role (default: one of the central service's client "
             "SPE_OIDC_CLIENT_ID by client credentials; in development without it, minted "
             "by the demo issuer)")] = None,
    database_url: Annotated[str | None, typer.Option(
        help="Central database URL (default: SPE_DATABASE_URL)")] = None,
) -> None:
    """Harvest the nodes' dataset descriptors into the catalogue. Exit 1 if any node failed."""
    from catalogue.harvester import run_harvest
    from spe.cli.demo_env import source_hint
    from spe.identity import IssuerKeyMissing, demo_issuer, machine_token
    from spe.policy import make_policy_service

    settings = load_settings()
    nodes = node or settings.catalogue_nodes
    if not nodes:
        raise fail(f"give --node URL (repeat for several) or SPE_CATALOGUE_NODES; "
                   f"{source_hint()}")
    url = database_url or settings.resolved_database_url  # migrated here if new
    source = None
    if token is None:
        # The central service's own client (client credentials), as the schedule uses.
        try:
            issuer = None if settings.oidc_jwks_url else demo_issuer(settings, create=False)
        except IssuerKeyMissing as exc:
            raise fail(f"{exc}: give --token (role hdab), or SPE_DATA_DIR of the central "
                       f"service whose issuer the nodes trust; {source_hint()}") from None
        source = machine_token(settings, issuer)
        if source is None:
            raise fail("give --token, or SPE_OIDC_CLIENT_ID and SPE_OIDC_CLIENT_SECRET (the "
                       "central service's client of the identity provider): tokens come "
                       "from the identity provider outside development")
    tls = None
    if settings.pki_dir is not None:
        from spe.pki import client_ssl_context

        tls = client_ssl_context(settings.pki_dir, "hub")
    with database_errors(url), tracker() as track:
        outcomes = run_harvest(url, nodes, token if source is None else source,
                               actor="cli:catalogue-harvester", tls=tls,
                               policy=make_policy_service(settings),
                               progress=harvest_ticks(track))
    failed = 0
    for outcome in outcomes:
        if outcome.error:
            failed += 1
            console.print(f"[red]failed[/red] {escape(outcome.error)}", soft_wrap=True)
            if tls is None and "CERTIFICATE_VERIFY_FAILED" in outcome.error:
                console.print(
                    "  the nodes speak mutual TLS with the federation's certificates: set "
                    "SPE_PKI_DIR to the PKI folder holding ca.crt, hub.crt and hub.key "
                    f"(the demo's is <data-dir>/pki); {source_hint()}", soft_wrap=True)
        else:
            verb = "created" if outcome.created else "updated"
            console.print(f"[green]{verb}[/green] {outcome.identifier} from {outcome.node}")
    if failed:
        raise typer.Exit(1)


@pki_app.command("init")
def pki_init(
    out: Annotated[Path, typer.Option(help="The PKI folder (created 0700)")],
    node: Annotated[list[str] | None, typer.Option(
        help="An institution node's name (its CN and file name); repeat for several")] = None,
    hub: Annotated[str, typer.Option(help="The hub's name")] = "hub",
    host: Annotated[list[str] | None, typer.Option(
        help="NAME=HOST: a SAN (IP address or DNS name) in NAME's certificate only; a bare "
             "HOST goes in every certificate (one machine serving them all); repeat for "
             "several [default: 127.0.0.1, localhost in every certificate]")] = None,
    days: Annotated[int, typer.Option(help="Validity of the certificates (at most 825)")] = 825,
    force: Annotated[bool, typer.Option(
        help="Replace an existing CA and re-issue every certificate in the folder")]
    = False,
    ca_only: Annotated[bool, typer.Option(
        help="Only the CA (ca.crt, ca.key, its index and revocation list): every member, "
             "the hub too, then makes its own key (`spe pki request`)")] = False,
) -> None:
    """Create the federation CA and certificates for the hub and each node (mutual TLS),
    every key made here: for a demo or a single host. Across hosts, each service makes its
    own key (`spe pki request`) and the CA signs it (`spe pki sign`).

    Run again with a new --node to add an institution: the existing CA signs its certificate
    and existing certificates are left alone.
    """
    from spe.pki import DEFAULT_HOSTS, PkiError, init_pki

    try:
        if ca_only and node:
            raise PkiError("--ca-only makes no certificate: leave out --node")
        result = init_pki(out, nodes=node or [], hub=None if ca_only else hub, days=days,
                          hosts=host or list(DEFAULT_HOSTS), force=force)
    except PkiError as exc:
        raise fail(exc.detail) from None
    table = Table(title=f"pki {out}")
    for column in ("file", "what", "expires"):
        table.add_column(column)
    if result.ca_created:
        table.add_row(str(result.ca_cert), "federation CA certificate (public)",
                      f"{result.ca_not_after:%Y-%m-%d}")
        table.add_row(str(result.ca_key), "[red]CA private key (secret; keep offline)[/red]",
                      "")
    for issued in result.issued:
        table.add_row(str(issued.cert), f"{issued.name} certificate, SAN "
                      f"{', '.join(issued.sans)}", f"{issued.not_after:%Y-%m-%d}")
        table.add_row(str(issued.key), f"[red]{issued.name} private key (secret)[/red]", "")
    console.print(table)
    if result.kept:
        console.print(f"kept the existing certificates of {', '.join(result.kept)}")
    if result.ca_replaced:
        console.print("[yellow]new CA: every certificate above replaces the old one; "
                      "redistribute them all[/yellow]")
    console.print("give each service its own .crt and .key and everyone ca.crt; ca.key stays "
                  "with the operator")


@audit_app.command("verify")
def audit_verify(
    database_url: Annotated[str | None, typer.Option(
        help="Database URL (default: the service's own, whose checkpoint file is checked "
             "too)")] = None,
    target: Annotated[str, typer.Option(help="central or node")] = "central",
    name: Annotated[str | None, typer.Option(
        help="The signer's name in the PKI (default: hub, or SPE_NODE_ID)")] = None,
    key: Annotated[list[Path] | None, typer.Option(
        help="Another trusted certificate or public key (PEM) of the signer, e.g. a "
             "rotated one; repeat for several")] = None,
    checkpoint_file: Annotated[Path | None, typer.Option(
        help="The service's latest signed checkpoint (default with the service's own "
             "database: $SPE_DATA_DIR/keys/audit-NAME.checkpoint.json)")] = None,
    witness: Annotated[Path | None, typer.Option(
        help="Checkpoints the hub witnessed for this node (`spe audit witness --node`)")] = None,
    node: Annotated[str | None, typer.Option(
        help="At the centre: check the hub's witness of this node's checkpoints (with "
             "--node-database-url, the node's log against them)")] = None,
    node_database_url: Annotated[str | None, typer.Option(
        help="With --node: the node's database")] = None,
) -> None:
    """Walk the hash chain and check it against the signed checkpoints (their signatures
    with keys from outside the database); name the first bad entry. Exit 1 if tampered."""
    from spe.audit import verify as audit_verify_

    settings = load_settings()
    url = existing_database(database_url or settings.resolved_database_url, settings)
    if node_database_url is not None:
        existing_database(node_database_url, settings, flag="--node-database-url")
    try:
        with database_errors(url):
            if node is not None:
                outcome = audit_verify_.witness_of(
                    settings, central_url=url, node_id=node, node_url=node_database_url,
                    keys=key or [])
            else:
                signer = name or ("hub" if target == "central" else settings.node_id)
                outcome = audit_verify_.own_log(
                    settings, target=target, url=url, name=signer, keys=key or [],
                    file=checkpoint_file or (audit_verify_.checkpoint_file(settings, signer)
                                             if database_url is None and signer else None),
                    witness=witness)
    except (audit_verify_.VerifyError, ValueError) as exc:
        raise fail(str(exc)) from None
    for note in outcome.notes:
        console.print(note)
    if outcome.ok:
        console.print(f"[green]audit log intact[/green]: {outcome.summary}")
        return
    console.print(f"[red]audit log tampered[/red]: first bad entry is {outcome.breaks[0]}")
    for brk in outcome.breaks[1:20]:
        console.print(f"  also: {brk}")
    raise typer.Exit(1)


@audit_app.command("witness")
def audit_witness(
    node: Annotated[str, typer.Option(help="The node whose witnessed checkpoints to export")],
    database_url: Annotated[str | None, typer.Option(help="The central database URL")] = None,
    out: Annotated[Path | None, typer.Option(help="Write here (default: standard output)")] = None,
) -> None:
    """Export the checkpoints the hub witnessed for a node, for `spe audit verify --witness`
    at that node."""
    from spe.audit import verify as audit_verify_

    settings = load_settings()
    url = existing_database(database_url or settings.resolved_database_url, settings)
    with database_errors(url):
        text = json.dumps(audit_verify_.export_witness(url, node), indent=1)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text)
        console.print(f"{node}: witnessed checkpoints written to {out}")


@audit_app.command("prune")
def audit_prune(
    database_url: Annotated[str | None, typer.Option(help="Database URL")] = None,
    target: Annotated[str, typer.Option(help="central or node")] = "central",
) -> None:
    """Delete entries older than SPE_AUDIT_RETENTION_DAYS (at least 365), keeping the chain."""
    from spe.audit import AuditLog, CentralAuditEntry, CentralAuditHead, NodeAuditEntry
    from spe.audit.models import NodeAuditHead
    from spe.db import make_engine, make_sessionmaker, session_scope

    settings = load_settings()
    log = (AuditLog(CentralAuditEntry, CentralAuditHead) if target == "central"
           else AuditLog(NodeAuditEntry, NodeAuditHead))
    url = existing_database(database_url or settings.resolved_database_url, settings)
    engine = make_engine(url)
    with database_errors(url), session_scope(make_sessionmaker(engine)) as session:
        removed = log.prune(session, retention_days=settings.audit_retention_days)
    console.print(f"removed {removed} entries older than {settings.audit_retention_days} days")


@policy_app.command("test")
def policy_test(
    policy_dir: Annotated[Path | None, typer.Option(help="Folder of .rego files")] = None,
) -> None:
    """Run the Rego tests (`*_test.rego`) with the embedded engine."""
    from spe.policy import run_rego_tests

    results = run_rego_tests(policy_dir or load_settings().policy_dir)
    failed = [r for r in results if not r.passed]
    for r in failed:
        console.print(f"[red]FAIL[/red] {r.file}::{r.name} {r.message}")
    console.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed or not results:
        raise typer.Exit(1)


@app.command()
def serve(
    what: Annotated[str, typer.Argument(help="central or node")],
    host: str = "127.0.0.1",
    port: int = 8000,
    tls_cert: Annotated[Path | None, typer.Option(
        help="central: serve HTTPS with this certificate (PEM, chain included; default "
             "SPE_TLS_CERT_FILE)")] = None,
    tls_key: Annotated[Path | None, typer.Option(
        help="central: the certificate's private key (PEM; default SPE_TLS_KEY_FILE)")]
    = None,
) -> None:
    """Run the central service or one node (configured by SPE_* variables). Production
    serves the centre off loopback only over HTTPS (its own certificate, or a trusted
    TLS proxy: deploy/RUNBOOK.md); a node always serves mutual TLS (SPE_PKI_DIR)."""
    import uvicorn

    from spe.cli.startup import start_service
    from spe.pki import PkiError

    settings = load_settings()
    start_service(settings)  # the log format; the database is waited for in _service
    listen: dict = {}
    if what == "central":
        from spe.web.https import central_listen_options

        try:  # before the database is touched: a refusal writes nothing
            listen = central_listen_options(settings, host, tls_cert=tls_cert,
                                            tls_key=tls_key)
        except InsecureConfiguration as exc:
            raise fail(str(exc)) from None
    elif tls_cert or tls_key:
        raise fail("a node serves mutual TLS with its certificate in SPE_PKI_DIR; "
                   "--tls-cert and --tls-key are the central service's")
    try:
        application, tls = _service(what, settings)
    except PkiError as exc:  # certificates missing or unreadable: a reason, not a traceback
        raise fail(exc.detail) from None
    # log_config=None: uvicorn keeps the logging start_service set up; its access log
    # (raw paths, query strings) gives way to spe.access's (spe/observability).
    # loop and http "auto": uvloop and httptools (dependencies, pyproject.toml) when
    # installed, asyncio's loop and h11 otherwise. A node's mutual TLS brings its own
    # protocol (spe.peer, h11 reading the peer's certificate), which wins.
    options = {"loop": "auto", "http": "auto", **listen, **tls}
    uvicorn.run(application, host=host, port=port, log_level="info", log_config=None,
                access_log=False, **options)


def _service(what: str, settings: Settings):
    """(the ASGI app, uvicorn's TLS options) of `spe serve WHAT`; a node's certificates are
    loaded before its database is touched."""
    if what == "central":
        from spe.app import create_central_app
        from spe.cli.startup import wait_for_database_or_exit
        from spe.db.migrate import upgrade

        wait_for_database_or_exit(settings, settings.resolved_database_url)
        upgrade(settings.resolved_database_url, "central")
        return create_central_app(settings), {}
    if what != "node":
        raise fail("serve central or serve node")
    from gateway.node.app import create_node_app
    from gateway.node.config import NodeConfig, code_registry
    from spe.db.migrate import upgrade

    if not (settings.node_id and settings.database_url):
        raise fail("a node needs SPE_NODE_ID and SPE_DATABASE_URL")
    tls = {}
    if settings.pki_dir is not None:
        from spe.pki import check_node_files, server_ssl_options

        check_node_files(settings.pki_dir, settings.node_id)
        # Nodes speak only mutual TLS with the federation's certificates.
        tls = server_ssl_options(settings.pki_dir, settings.node_id)
    from spe.cli.startup import wait_for_database_or_exit

    wait_for_database_or_exit(settings, settings.database_url)  # after the certificates
    upgrade(settings.database_url, "node")
    return create_node_app(NodeConfig(
        node_id=settings.node_id, name=settings.node_name or settings.node_id,
        database_url=settings.database_url, dicom=settings.node_dicom,
        fhir=settings.node_fhir, code_review=settings.node_code_review,
        code_registry=code_registry(settings.node_code_registry)), settings), tls


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its files")]
    = Path("var/demo"),
    institutions: Annotated[int, typer.Option(min=1, max=26)] = 3,
    patients: Annotated[int, typer.Option(min=1, help="Patients per institution")] = 300,
    seed: int = 1,
    port: Annotated[int, typer.Option(help="Central port; nodes take the next ones")] = 8000,
    orthanc: Annotated[bool, typer.Option(
        help="Serve the last site's images from a local Orthanc (over DIMSE)")] = False,
) -> None:
    """Start the demo federation: central services and one node per institution."""
    from spe.cli.demo import DemoError, run_demo

    try:
        run_demo(data_dir=data_dir, institutions=institutions, patients=patients, seed=seed,
                 port=port, orthanc=orthanc)
    except DemoError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        # Ctrl-C before the servers took over the signal (generating, syncing, starting):
        # what had started (Orthanc) was stopped on the way out.
        console.print("interrupted: demo stopped")
        raise typer.Exit(130) from None


@app.command()
def risk(
    extract: Annotated[Path, typer.Argument(
        help="Folder of FHIR NDJSON (Patient.ndjson, ...), or a site or staged extract holding "
             "fhir/ and/or dicom/")],
    k: Annotated[int, typer.Option("--k", min=1, help="Smallest class size wanted")] = 5,
    max_risk: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Highest prosecutor risk wanted (0.09 asks for k 12)")] = None,
    max_suppression: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of records --reduce may suppress")] = 0.05,
    do_reduce: Annotated[bool, typer.Option(
        "--reduce", help="Generalise and suppress until the threshold holds")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", help="With --reduce: write the reduced extract here (fhir/, dicom/; a new "
                      "folder); without it the reduction is written to a temporary copy, "
                      "measured and thrown away")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Re-identification risk (k, prosecutor risk) of an extract's quasi-identifiers.

    Age is read from birth dates of any precision (FHIR "1961", "1961-04",
    "1961-04-12"; DICOM PatientBirthDate, PatientAge), as node staging reads them.
    With --reduce the figures after are the reduced files', not the plan's.
    """
    from rich.console import Console

    from spe.anonymize.extract import ExtractError, extract_folders, load_records
    from spe.anonymize.risk import k_for, measure

    if out is not None and not do_reduce:
        raise fail("--out needs --reduce")
    try:
        fhir_dir, dicom_dir = extract_folders(extract)
        records = load_records(fhir_dir, dicom_dir)
        k_min = k_for(k, max_risk)
    except (ExtractError, ValueError) as exc:
        raise fail(str(exc)) from None
    threshold = max_risk if max_risk is not None else 1 / k_min
    rounds = None
    if not do_reduce:
        report, steps = measure(records, threshold=threshold), None
        report.k_min = k_min
    else:
        report, steps, rounds = _reduce_copy(
            fhir_dir, dicom_dir, records, out, k_min=k_min, max_risk=max_risk,
            max_suppression=max_suppression, threshold=threshold)
    if as_json:
        result = report.to_dict()
        if steps is not None:
            result["steps"] = [s.to_dict() for s in steps]
            result["suppression_rounds"] = rounds
            result["written"] = str(out) if out is not None else None
        typer.echo(json.dumps(result, indent=2))
        return
    # The report is the command's result, so stdout; `console` (stderr) is for progress/errors.
    stdout = Console()
    print_risk_report(stdout, report, steps)
    if steps is not None:
        stdout.print(f"reduced extract written to {out}" if out is not None else
                     "measured on a temporary copy, not kept: --out DIR writes it")


def _reduce_copy(fhir_dir: Path | None, dicom_dir: Path | None, records: list[dict],
                 out: Path | None, *, k_min: int, max_risk: float | None,
                 max_suppression: float, threshold: float):
    """`risk_apply.reduce_files` on a copy of the extract (in `out`, else a temporary
    folder): the report after is the copy's files measured again, with the plan's levels."""
    import shutil
    import tempfile

    from spe.anonymize.risk import measure
    from spe.anonymize.risk_apply import reduce_files

    if out is not None:
        if out.exists():
            raise fail(f"--out {out} exists; give a new folder")
        real = out.resolve()
        for source in (fhir_dir, dicom_dir):
            if source is not None and (real == source.resolve()
                                       or source.resolve() in real.parents):
                raise fail(f"--out {out} must not be inside the extract it reduces")
    with tempfile.TemporaryDirectory(prefix="spe-risk-") as tmp:
        target = out if out is not None else Path(tmp) / "reduced"
        try:
            target.mkdir(parents=True)
            if fhir_dir is not None:
                shutil.copytree(fhir_dir, target / "fhir")
            else:
                (target / "fhir").mkdir()
            if dicom_dir is not None:
                shutil.copytree(dicom_dir, target / "dicom")
        except OSError as exc:
            raise fail(f"cannot write {target}: {exc.strerror or exc}", 1) from None
        done = reduce_files(target / "fhir", target / "dicom" if dicom_dir else None,
                            records, k_min=k_min, max_risk=max_risk,
                            max_suppression=max_suppression)
    if done.records is None:
        raise fail(f"the reduced extract could not be measured: {done.error}", 1)
    report = measure(done.records, threshold=threshold)
    report.k_min = k_min
    report.levels = dict(done.planned.levels)
    report.suppressed = len(records) - len(done.records)
    report.before = done.planned.before
    return report, done.steps, done.rounds


def print_risk_report(out, report, steps) -> None:
    first = report.before or report
    table = Table(title="quasi-identifiers")
    table.add_column("QI")
    table.add_column("distinct", justify="right")
    if steps is not None:
        table.add_column("level", justify="right")
        table.add_column("distinct after", justify="right")
    for qi in report.qis:
        row = [qi, str(first.distinct[qi])]
        if steps is not None:
            row += [str(report.levels[qi]), str(report.distinct[qi])]
        table.add_row(*row)
    out.print(table)

    def figures(r) -> str:
        return (f"records {r.records}, k {r.k}, max prosecutor risk {r.max_risk:.4f}, "
                f"average prosecutor risk {r.average_risk:.4f}, "
                f"records at risk (> {r.threshold:.4g}) {r.at_risk}")

    out.print(("before: " if steps is not None else "") + figures(first))
    if steps is None:
        return
    for n, step in enumerate(steps, 1):
        out.print(f"  step {n}: {step.qi} -> level {step.level} ({step.distinct_before} -> "
                  f"{step.distinct_after} distinct, {step.too_small_after} records in classes "
                  f"under k {report.k_min})")
    out.print(f"after: {figures(report)}, suppressed {report.suppressed}")
    if report.k < (report.k_min or 0):
        out.print(f"[red]k {report.k_min} not reached[/red]")


def main() -> None:
    app()
