"""Shared set-up of the federation benchmarks: the hub and its nodes as local processes.

- `Federation(work, dbs)`: one institution node per database (`gateway.node` under uvicorn
  with mutual TLS from a fresh federation PKI, `spe.pki.init_pki`) and the central service
  with its hub, each in its own process on loopback; researchers' tokens from the hub's
  demo issuer (`Federation.token`). Every run works on fresh copies of the databases, so
  query history and budgets never carry over.
- `demo_indexes(...)`: the demo's own data (`spe.synth.generate`, what `spe demo` serves)
  synced into one node index per institution (`gateway.node.service.run_sync`), cached
  under `var/bench-cache/` by its parameters; the synthetic files are removed once synced.

Used by `federated_query.py`, `statistics_utility.py` and `federated_rounds.py`; run as a
script it serves one role (`--serve ROLE --port N`), which is how `Federation` starts its
processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "var" / "bench-cache"


# ------------------------------------------------------------------------- demo data


def demo_indexes(patients: int, seed: int = 1, institutions: int = 3, *,
                 cache: Path = CACHE, refresh: bool = False,
                 log=print) -> tuple[dict[str, Path], dict]:
    """{site id: synced node database} for the demo's synthetic federation, and facts
    about it (timings of generation and sync, counts). Cached by (generator, institutions,
    patients, seed); `refresh` rebuilds."""
    from spe.synth import GENERATOR

    key = f"demo-{institutions}x{patients}-seed{seed}-{GENERATOR.replace(' ', '')}"
    folder = cache / key
    marker = folder / "federation.json"
    if marker.exists() and not refresh:
        facts = json.loads(marker.read_text())
        dbs = {site: folder / f"{site}.db" for site in facts["sites"]}
        if all(db.exists() for db in dbs.values()):
            log(f"reusing the synced demo federation in {folder} (made in "
                f"{facts['generate_s'] + facts['sync_s']:.0f} s)")
            return dbs, facts | {"cached": True}
    from gateway.node.service import run_sync
    from spe.synth import generate

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    synth = folder / "synth"
    log(f"generating the demo federation: {institutions} x {patients:,} patients "
        f"(seed {seed}) in {synth}")
    start = time.perf_counter()
    summary = generate(synth, institutions=institutions, patients=patients, seed=seed)
    generated = time.perf_counter() - start
    log(f"  generated {summary.patients:,} patients, {summary.instances:,} DICOM instances "
        f"in {generated:.0f} s")
    dbs: dict[str, Path] = {}
    start = time.perf_counter()
    per_site = {}
    for inst in summary.institutions:
        db = folder / f"{inst.id}.db"
        t = time.perf_counter()
        report = run_sync(f"sqlite:///{db}", dicom=f"folder:{synth / inst.id / 'dicom'}",
                          fhir=f"ndjson:{synth / inst.id / 'fhir'}", actor="benchmark")
        per_site[inst.id] = {"patients": report.patients, "studies": report.studies,
                             "series": report.series, "instances": report.instances,
                             "conditions": report.conditions,
                             "seconds": round(time.perf_counter() - t, 1)}
        log(f"  synced {inst.id}: {report.patients:,} patients, {report.studies:,} studies, "
            f"{report.instances:,} instances in {per_site[inst.id]['seconds']:.0f} s")
        dbs[inst.id] = db
    synced = time.perf_counter() - start
    shutil.rmtree(synth)  # the indexes are what the nodes answer from
    facts = {"sites": list(dbs), "institutions": institutions, "patients": patients,
             "seed": seed, "generator": GENERATOR, "generate_s": round(generated, 1),
             "sync_s": round(synced, 1), "instances": summary.instances,
             "per_site": per_site}
    marker.write_text(json.dumps(facts, indent=2))
    return dbs, facts | {"cached": False}


# ------------------------------------------------------------------------- the servers


def serve_child(role: str, port: int) -> None:
    """Run one server in this process (`Federation` starts this file for each)."""
    import uvicorn

    from spe.settings import Settings

    settings = Settings()  # from the SPE_* variables the parent set
    tls: dict = {}
    if role == "hub":
        from spe.app import create_central_app
        from spe.db.migrate import upgrade

        upgrade(settings.resolved_database_url, "central")
        app = create_central_app(settings)
    else:
        from gateway.node.app import create_node_app
        from gateway.node.config import NodeConfig
        from spe.pki import server_ssl_options

        # The node's stores (SPE_NODE_DICOM, SPE_NODE_FHIR), where staging reads a permit's
        # extract; empty (none) for the query benchmarks, which read the index only.
        app = create_node_app(NodeConfig(node_id=role, name=role,
                                         database_url=settings.database_url,
                                         dicom=settings.node_dicom, fhir=settings.node_fhir),
                              settings)
        tls = server_ssl_options(settings.pki_dir, role)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", **tls)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Federation:
    """The hub and the nodes as subprocesses; stopped on exit, also on Ctrl-C. Each node's
    database is a fresh copy of the given one, migrated to the current schema."""

    def __init__(self, work: Path, dbs: dict[str, Path],
                 node_env: dict[str, dict[str, str]] | None = None) -> None:
        from spe.db.migrate import upgrade
        from spe.pki import client_ssl_context, init_pki

        self.work = work
        self.sites = list(dbs)
        self.pki = work / "pki"
        init_pki(self.pki, nodes=self.sites)
        self.tls = client_ssl_context(self.pki, "hub")
        self.procs: dict[str, subprocess.Popen] = {}
        self.node_urls: dict[str, str] = {}
        self.node_env = node_env or {}
        self.dbs = {}
        for site, db in dbs.items():
            self.dbs[site] = work / f"{site}.db"
            shutil.copyfile(db, self.dbs[site])  # fresh copies: no history carries over
            upgrade(f"sqlite:///{self.dbs[site]}", "node")  # a cache made by older code
        self.hub_port = free_port()
        self.hub_url = f"http://127.0.0.1:{self.hub_port}"
        self.hub_dir = work / "hub"

    def _start(self, role: str, port: int, env: dict[str, str]) -> None:
        args = [sys.executable, str(Path(__file__).resolve()), "--serve", role,
                "--port", str(port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPE_")} | env
        # The children import this checkout's packages, wherever they are started.
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
        with open(self.work / f"{role}.log", "wb") as log:  # the child's output
            # cwd: no stray .env of the caller's folder reaches the servers' settings.
            self.procs[role] = subprocess.Popen(args, env=env, cwd=self.work, stdout=log,
                                                stderr=subprocess.STDOUT)

    def _wait(self, role: str, url: str, **client) -> None:
        deadline = time.monotonic() + 180  # imports alone take 10 s or more on a loaded machine
        with httpx.Client(timeout=2, **client) as c:
            while time.monotonic() < deadline and self.procs[role].poll() is None:
                try:
                    if c.get(url + "/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    time.sleep(0.1)
        raise SystemExit(f"{role} did not start:\n{self.log_tail(role, 40)}")

    def log_tail(self, role: str, lines: int) -> str:
        text = (self.work / f"{role}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Federation:
        from spe.identity import demo_issuer
        from spe.settings import Settings

        try:
            base = {"SPE_ENVIRONMENT": "development", "SPE_PKI_DIR": str(self.pki)}
            for site in self.sites:
                port = free_port()
                self.node_urls[site] = f"https://127.0.0.1:{port}"
                self._start(site, port, base | {
                    "SPE_NODE_ID": site, "SPE_DATABASE_URL": f"sqlite:///{self.dbs[site]}",
                    "SPE_DATA_DIR": str(self.work / site)} | self.node_env.get(site, {}))
            # The hub is its own demo token issuer; its key is made here, before it starts.
            self.issuer = demo_issuer(Settings(environment="development",
                                               data_dir=self.hub_dir, oidc_issuer=self.hub_url))
            self._start("hub", self.hub_port, base | {
                "SPE_DATA_DIR": str(self.hub_dir),
                "SPE_DATABASE_URL": f"sqlite:///{self.hub_dir / 'central.db'}",
                "SPE_OIDC_ISSUER": self.hub_url,
                "SPE_FEDERATION_NODES": json.dumps(self.node_urls)})
            for site in self.sites:
                self._wait(site, self.node_urls[site], verify=self.tls)
            self._wait("hub", self.hub_url)
        except BaseException:
            self.stop()
            raise
        return self

    def token(self, user: str, roles: tuple[str, ...] = ("researcher",)) -> str:
        return self.issuer.mint(user, list(roles))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __exit__(self, *exc) -> None:
        self.stop()


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(
        values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description="serve one role of a benchmark federation")
    parser.add_argument("--serve", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve_child(args.serve, args.port)


if __name__ == "__main__":
    main()
