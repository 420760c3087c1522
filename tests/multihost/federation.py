"""The federation across hosts: the services of `spe` started as their operators would, each
in its own network namespace of `tests/multihost/netns.py`.

    host      address      runs
    root      10.18.0.1    the tests; the machine's PostgreSQL, reached through a TCP
                           forwarder on this address (the hosts' database server)
    central   10.18.0.10   `spe serve central` (plain HTTP, development: the demo issuer)
    site-a    10.18.0.11   `spe serve node`, images from a folder
    site-b    10.18.0.12   `spe serve node`, images from its Orthanc over DICOMweb
    site-c    10.18.0.13   `spe serve node`, images from its Orthanc over DIMSE
    worker    10.18.0.20   `spe node worker` for each node, on the node's database and data
                           folder (a folder of this machine stands in for a shared filesystem)

Every node serves mutual TLS on port 8443 with a certificate naming its own address
(`spe pki init --node N --host ADDRESS`), and its packet filter accepts that port from the
central's address only: the tests themselves, the worker host and the other nodes are
dropped. A node's Orthanc listens on its loopback (the node's AE title calls from
127.0.0.1); a relay on the node's address, open to the worker host only, lets the worker
reach it too. Each node has its own PostgreSQL database; the nodes run no job worker of
their own (`SPE_NODE_WORKERS=0`), so every job runs on the worker host.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from tests.multihost.netns import Network

PREFIX = "spemh"  # names of namespaces and links (and of leftovers to clean up)
NODE_PORT = 8443
CENTRAL_PORT = 8000
SITES = {"site-a": 11, "site-b": 12, "site-c": 13}
KINDS = {"site-a": "folder", "site-b": "dicomweb", "site-c": "dimse"}
RELAY_PORT = 9104  # a node's Orthanc, on its address, for the worker host
APPROVERS = {"site-a": "bob", "site-b": "bea", "site-c": "cem"}
DB_PREFIX = "multihost_"


def spe_command() -> list[str]:
    """The `spe` of the interpreter running the tests (its venv's entry point)."""
    entry = Path(sys.executable).with_name("spe")
    return [str(entry)] if entry.exists() else [sys.executable, "-m", "spe.cli"]


@dataclass
class Service:
    """A process started in a namespace, its output in a log file."""

    name: str
    host: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None

    def start(self, net: Network) -> Service:
        out = open(self.log, "ab")  # noqa: SIM115 - kept by the child
        out.write(f"\n--- start {time.strftime('%H:%M:%S')} ---\n".encode())
        out.flush()
        self.process = net.popen(self.host, self.argv, env=self.env, stdout=out,
                                 stderr=subprocess.STDOUT)
        out.close()
        return self

    def kill(self) -> None:
        """SIGKILL its whole process group (the service and what it started)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        self.terminate()
        self.wait_stopped()

    def terminate(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def wait_stopped(self, seconds: float = 10) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return f"--- {self.name} ---\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class Federation:
    net: Network
    root: Path
    pki: Path
    database_urls: dict[str, str]  # "central" and each site -> URL as the hosts use it
    admin_urls: dict[str, str]  # the same from this (root) namespace
    central: Service
    nodes: dict[str, Service]
    workers: dict[str, Service]  # site -> its worker on the worker host
    helpers: list[Service] = field(default_factory=list)  # forwarders and relays
    orthancs: dict[str, object] = field(default_factory=dict)

    @property
    def central_url(self) -> str:
        return f"http://{self.net.hosts['central'].address}:{CENTRAL_PORT}"

    def node_url(self, site: str) -> str:
        return f"https://{self.net.hosts[site].address}:{NODE_PORT}"

    def issuer(self):
        from spe.identity import DemoIssuer

        return DemoIssuer(self.root / "central" / "keys" / "issuer.jwk.json", self.central_url,
                          "spe")

    def headers(self, user: str, role: str, institution: str | None = None) -> dict:
        token = self.issuer().mint(user, [role], institution=institution)
        return {"Authorization": f"Bearer {token}"}

    def hub(self, timeout: float = 60.0) -> httpx.Client:
        """A client of the central service, from this namespace (a researcher's laptop)."""
        return httpx.Client(base_url=self.central_url, timeout=timeout)

    def logs(self) -> str:
        services = [self.central, *self.nodes.values(), *self.workers.values()]
        return "\n".join(s.tail() for s in services)

    # --- starting and stopping ---------------------------------------------------------
    def start_central(self) -> None:
        self.central.start(self.net)
        wait_for(lambda: _ok(f"{self.central_url}/health"), 90, "the central service",
                 self)

    def start_node(self, site: str) -> None:
        self.nodes[site].start(self.net)
        url = f"{self.node_url(site)}/health"
        wait_for(lambda: self.net.inside("central", lambda: _ok(url, self._hub_tls())), 90,
                 f"node {site}", self)

    def _hub_tls(self):
        from spe.pki import client_ssl_context

        return client_ssl_context(self.root / "pki-central", "hub")

    def stop_all(self) -> None:
        services = [*self.workers.values(), *self.nodes.values(), self.central]
        for service in services:  # all at once: each waits for its own connections
            service.terminate()
        for service in services:
            service.wait_stopped()
        for helper in self.helpers:  # the database forwarder last: they shut down on it
            helper.stop()
        for pacs in self.orthancs.values():
            pacs.stop()  # type: ignore[attr-defined]


def _ok(url: str, verify=True) -> bool:
    try:
        return httpx.get(url, timeout=2, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(check, seconds: float, what: str, fed: Federation | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} not ready within {seconds:.0f} s\n"
                         + (fed.logs() if fed else ""))


# --- building it ---------------------------------------------------------------------------
def drop_databases(admin_url: str) -> None:
    """Drop the databases `multihost_*` (this run's, or a killed run's)."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        old = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                            (DB_PREFIX.replace("_", r"\_") + "%",)).fetchall()
        for (name,) in old:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _databases(admin_url: str) -> None:
    """Fresh databases `multihost_*` (an earlier run's are dropped first)."""
    drop_databases(admin_url)
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        for name in ("central", *SITES):
            admin.execute(f'CREATE DATABASE "{DB_PREFIX}{name.replace("-", "_")}"')


def _pki(root: Path, net: Network) -> Path:
    """`spe pki init` as the operator runs it: the CA and the hub's certificate naming the
    central's address, then each node's naming its own; each service gets its own folder
    with its certificate and key, the CA's and the hub's certificate."""
    pki = root / "pki"
    spe = spe_command()

    def init(*args: str) -> None:
        done = subprocess.run([*spe, "pki", "init", "--out", str(pki), *args],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    init("--host", net.hosts["central"].address)
    for site in SITES:
        init("--node", site, "--host", net.hosts[site].address)
    central = root / "pki-central"  # the hub knows every member's certificate
    central.mkdir(mode=0o700)
    for item in pki.iterdir():
        if item.name != "ca.key" and (item.suffix == ".crt" or item.name == "hub.key"):
            _copy(item, central / item.name)
    for site in SITES:
        own = root / f"pki-{site}"
        own.mkdir(mode=0o700)
        for name in ("ca.crt", "hub.crt", f"{site}.crt", f"{site}.key"):
            _copy(pki / name, own / name)
    return pki


def _copy(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())
    dst.chmod(0o600)


def build(root: Path, *, patients: int, admin_url: str) -> Federation:
    """The network, databases, PKI, data and every service, started; `Federation.stop_all`
    and `Network.teardown` undo it (the caller's finalizer)."""
    from spe.synth import generate

    net = Network(PREFIX).build()
    fed: Federation | None = None
    try:
        net.add_host("central", 10)
        for site, octet in SITES.items():
            net.add_host(site, octet)
        net.add_host("worker", 20)
        for site in SITES:  # the institution's firewall: the hub only
            net.only_from(site, NODE_PORT, "central")

        _databases(admin_url)
        pg = psycopg.conninfo.conninfo_to_dict(admin_url)
        forward = Service("postgres-forwarder", "", [
            "socat", f"TCP-LISTEN:{pg.get('port', 5432)},bind={net.root_address},fork,"
            "reuseaddr", f"TCP:{pg.get('host', '127.0.0.1')}:{pg.get('port', 5432)}"],
            dict(os.environ), root / "forwarder.log")
        _kill_exactly(forward.argv)  # a killed run's, which would hold the address
        forward.process = subprocess.Popen(forward.argv, start_new_session=True,
                                           stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
        user = pg.get("user", "postgres")

        def db(name: str, host: str) -> str:
            return (f"postgresql+psycopg://{user}@{host}:{pg.get('port', 5432)}/"
                    f"{DB_PREFIX}{name.replace('-', '_')}")

        names = ("central", *SITES)
        database_urls = {n: db(n, net.root_address) for n in names}
        admin_urls = {n: db(n, pg.get("host", "127.0.0.1")) for n in names}

        pki = _pki(root, net)
        generate(root / "synth", institutions=len(SITES), patients=patients, seed=18)

        env_base = {k: v for k, v in os.environ.items() if not k.startswith("SPE_")}
        env_base.update({
            "SPE_ENVIRONMENT": "development",
            "SPE_OIDC_ISSUER": f"http://{net.hosts['central'].address}:{CENTRAL_PORT}",
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "200",
        })
        for name in ("SPE_SANDBOX_PYTHON", "SPE_ANALYSIS_ENVIRONMENTS"):  # as `make` set
            if os.environ.get(name):
                env_base[name] = os.environ[name]
        spe = spe_command()
        nodes_json = json.dumps({s: f"https://{net.hosts[s].address}:{NODE_PORT}"
                                 for s in SITES})
        central_env = {
            **env_base,
            "SPE_DATA_DIR": str(root / "central"),
            "SPE_DATABASE_URL": database_urls["central"],
            "SPE_PKI_DIR": str(root / "pki-central"),
            "SPE_FEDERATION_NODES": nodes_json,
            "SPE_QUERY_TIMEOUT_SECONDS": "4",
            "SPE_JOB_COLLECT_INTERVAL_SECONDS": "1",
            "SPE_AUDIT_WITNESS_INTERVAL_SECONDS": "5",
            "SPE_SUSPENSION_PUSH_INTERVAL_SECONDS": "2",
        }
        central = Service("central", "central", [
            *spe, "serve", "central", "--host", net.hosts["central"].address,
            "--port", str(CENTRAL_PORT)], central_env, root / "central.log")
        fed = Federation(net, root, pki, database_urls, admin_urls, central, {}, {},
                         [forward])
        (root / "central").mkdir(mode=0o700)

        sources = _sources(fed, root)
        for site in SITES:
            data = root / site
            data.mkdir(mode=0o700, exist_ok=True)
            node_env = {
                **env_base,
                "SPE_DATA_DIR": str(data),
                "SPE_DATABASE_URL": database_urls[site],
                "SPE_PKI_DIR": str(root / f"pki-{site}"),
                "SPE_NODE_ID": site,
                "SPE_NODE_NAME": f"{site} ({KINDS[site]})",
                "SPE_NODE_DICOM": sources[site]["node"],
                "SPE_NODE_FHIR": f"ndjson:{root / 'synth' / site / 'fhir'}",
                "SPE_NODE_WORKERS": "0",
                # Tokens are checked against the central issuer's keys, over the network.
                "SPE_OIDC_JWKS_URL": f"{fed.central_url}/.well-known/jwks.json",
                "SPE_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "2",
            }
            # The node's index is built by its operator, in the node's namespace.
            synced = fed.net.exec(site, *spe, "node", "sync", "--json", check=False,
                                  env=node_env)
            if synced.returncode:
                raise AssertionError(f"spe node sync at {site}: {synced.stdout}"
                                     f"{synced.stderr}")
            fed.nodes[site] = Service(site, site, [
                *spe, "serve", "node", "--host", net.hosts[site].address,
                "--port", str(NODE_PORT)], node_env, root / f"{site}.log")
            worker_env = {**node_env, "SPE_NODE_DICOM": sources[site]["worker"]}
            fed.workers[site] = Service(f"worker-{site}", "worker", [
                *spe, "node", "worker", "--name", f"worker-host-{site}"], worker_env,
                root / f"worker-{site}.log")
        fed.start_central()
        for site in SITES:
            fed.start_node(site)
        for worker in fed.workers.values():
            worker.start(net)
        return fed
    except BaseException:
        if fed is not None:
            fed.stop_all()
        net.teardown()
        raise


def _kill_exactly(argv: list[str]) -> None:
    """Kill the processes whose command line is exactly `argv` (what the root namespace
    may keep of a killed run: its database forwarder)."""
    wanted = ("\0".join(argv) + "\0").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cmdline").read_bytes() == wanted:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def _sources(fed: Federation, root: Path) -> dict[str, dict[str, str]]:
    """Each node's DICOM source spec, as the node and as the worker host name it: site-a
    reads a folder; site-b and site-c an Orthanc started in their namespace with their
    images uploaded, over DICOMweb and DIMSE."""
    from tests.orthanc import orthanc_server

    net = fed.net
    folder = root / "synth"
    out = {"site-a": {"node": f"folder:{folder / 'site-a' / 'dicom'}"}}
    out["site-a"]["worker"] = out["site-a"]["node"]
    for site in ("site-b", "site-c"):
        files = sorted((folder / site / "dicom").rglob("*.dcm"))
        manager = orthanc_server(root / f"orthanc-{site}")

        def start(manager=manager, files=files):
            pacs = manager.__enter__()
            pacs.upload(files)
            return pacs

        pacs = net.inside(site, start)
        fed.orthancs[site] = _Stopper(manager)
        address = net.hosts[site].address
        inner = pacs.http_port if site == "site-b" else pacs.dicom_port
        relay = Service(f"relay-{site}", site, [
            "socat", f"TCP-LISTEN:{RELAY_PORT},bind={address},fork,reuseaddr",
            f"TCP:127.0.0.1:{inner}"], dict(os.environ), root / f"relay-{site}.log").start(net)
        fed.helpers.append(relay)
        net.only_from(site, RELAY_PORT, "worker")
        if site == "site-b":
            out[site] = {"node": f"dicomweb:{pacs.dicomweb_url}",
                         "worker": f"dicomweb:http://{address}:{RELAY_PORT}/dicom-web"}
        else:
            out[site] = {"node": f"dimse://{pacs.aet}@127.0.0.1:{pacs.dicom_port}",
                         "worker": f"dimse://{pacs.aet}@{address}:{RELAY_PORT}"}
    return out


@dataclass
class _Stopper:
    manager: object

    def stop(self) -> None:
        self.manager.__exit__(None, None, None)  # type: ignore[attr-defined]
