"""Fan-out to many institutions: the hub against 10, 50 and 100 nodes, latency and memory.

Starts N real institution nodes (`gateway.node`'s app, each on its own port under uvicorn
with mutual TLS from one fresh federation PKI, `spe.pki.init_pki`: the same hub door,
context verification, policy, disclosure control and audit as a deployed node) but many
per process: a few "node host" processes (default 2, one per core here) each run their
share of the node apps as `uvicorn.Server`s in one event loop. Each node answers from a
small index of its own (default 300 patients; copies of three generated indexes, the
sites of `federated_query.py`, so every node has its own database file and audit). The
nodes share their process's policy engine (the demo nodes all run the repo's Rego) and
thread pool; nothing that a node writes is shared.

For each N (default 10, 50, 100) a fresh hub (the central service, its own process) is
started knowing the first N nodes (`SPE_FEDERATION_NODES`), and measured in the same run:

1. a federated count query through the hub, sequentially over one keep-alive connection:
   p50 / p95, and the hub's CPU time per query (from /proc, so the hub's own cost per node
   is seen apart from the nodes' on this shared machine);
2. the baseline, interleaved with 1. round by round: the same query sent straight to all N
   nodes at once (contexts signed beforehand as the hub signs them, one aiohttp session
   with the hub's certificate, as the hub sends them): p50. The figure is the ratio hub
   p50 / direct p50;
3. 10 concurrent clients through the hub for a few seconds: p50 / p95 and queries/s;
4. the hub's memory (VmRSS and its peak VmHWM from /proc/<pid>/status) after 3., its
   open file descriptors (most are its pooled connections to the nodes) and the size of
   its answer.

Timings are printed, never asserted. On 2 cores the nodes' work (N requests per query,
each a policy decision, a few SQL queries and an audit row) dominates both the hub's and
the direct latency; the hub's CPU per query is what grows with N at the centre itself.

    python benchmarks/fanout_scale.py [--nodes 10,50,100] [--patients 300] [--rounds 20]
        [--clients 10] [--duration 8] [--node-procs 2] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_federation import CACHE, ROOT, Federation, free_port, pct  # noqa: E402
from federated_query import (  # noqa: E402
    FILL_VERSION,
    SITES,
    USER_QUERIES,
    HubCaller,
    fill_index,
    users,
)
from report import Figure, print_table  # noqa: E402

NODE_IDS_FORMAT = "node-{:03d}"
# A count every small index answers (women with hypertension: 30 to 60 of 300 patients),
# so that "answered by every node" is a property of the hub, not of the data.
COUNT_QUERY = {"where": {"type": "and", "of": [
    {"type": "patient", "sex": "female"},
    {"type": "condition", "system": "icd-10", "code": "I10"}]},
    "answer": {"kind": "count"}}


# ------------------------------------------------------------------------- /proc


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads of a process."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ------------------------------------------------------------------------- the nodes


def template_indexes(patients: int, seed: int, cache: Path = CACHE) -> list[Path]:
    """Three small filled node indexes (the sites of federated_query.py), cached."""
    from spe.db.migrate import upgrade

    folder = cache / f"fanout-{patients}-seed{seed}-v{FILL_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    dbs = []
    for site in SITES:
        db = folder / f"{site}.db"
        if db.exists():
            upgrade(f"sqlite:///{db}", "node")  # a cache made by older code
        else:
            fill_index(db, site, patients, seed)
        dbs.append(db)
    return dbs


def host_nodes(spec_file: str) -> None:
    """A node host process: every node of the spec as a uvicorn.Server in one loop."""
    import uvicorn

    from gateway.node.app import create_node_app
    from gateway.node.config import NodeConfig
    from spe.pki import server_ssl_options
    from spe.policy import make_policy_service
    from spe.settings import Settings

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # one handler for all the servers: main() below
            yield

    spec = json.loads(Path(spec_file).read_text())
    settings = Settings()  # SPE_* from the parent: PKI, data dir, no job workers
    policy = make_policy_service(settings)
    servers, sockets, ports = [], [], {}
    for node in spec["nodes"]:
        app = create_node_app(NodeConfig(node_id=node["id"], name=node["id"],
                                         database_url=f"sqlite:///{node['db']}"),
                              settings, policy=policy)
        # Bound here, on a port the system picks: ports chosen by the parent beforehand
        # were taken by other programs in the minute 100 nodes need to start.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports[node["id"]] = sock.getsockname()[1]
        servers.append(Server(uvicorn.Config(
            app, log_level="warning", **server_ssl_options(settings.pki_dir, node["id"]))))
    ports_file = Path(spec_file).with_suffix(".ports")
    ports_file.with_suffix(".tmp").write_text(json.dumps(ports))
    ports_file.with_suffix(".tmp").replace(ports_file)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: [setattr(s, "should_exit", True)
                                                  for s in servers])
        await asyncio.gather(*(s.serve(sockets=[sock])
                               for s, sock in zip(servers, sockets, strict=True)))

    asyncio.run(main())


class NodeFarm:
    """The nodes of every measured federation, started once: `node_urls` by node id."""

    def __init__(self, work: Path, nodes: int, templates: list[Path], procs: int) -> None:
        from spe.pki import client_ssl_context, init_pki

        self.work = work
        self.pki = work / "pki"
        self.ids = [NODE_IDS_FORMAT.format(i) for i in range(1, nodes + 1)]
        start = time.perf_counter()
        init_pki(self.pki, nodes=self.ids)
        self.pki_s = time.perf_counter() - start
        self.tls = client_ssl_context(self.pki, "hub")
        self.node_urls: dict[str, str] = {}
        self.hosts: list[subprocess.Popen] = []
        self.specs: list[list[dict]] = [[] for _ in range(min(procs, nodes))]
        (work / "nodes").mkdir()
        for i, node_id in enumerate(self.ids):
            db = work / "nodes" / f"{node_id}.db"
            shutil.copyfile(templates[i % len(templates)], db)  # its own: audit, history
            self.specs[i % len(self.specs)].append({"id": node_id, "db": str(db)})

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPE_")}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
        return env | {"SPE_ENVIRONMENT": "development", "SPE_PKI_DIR": str(self.pki),
                      "SPE_DATA_DIR": str(self.work / "nodes"), "SPE_NODE_WORKERS": "0"}

    def __enter__(self) -> NodeFarm:
        start = time.perf_counter()
        try:
            for k, spec in enumerate(self.specs):
                spec_file = self.work / f"host-{k}.json"
                spec_file.write_text(json.dumps({"nodes": spec}))
                with open(self.work / f"host-{k}.log", "wb") as log:
                    self.hosts.append(subprocess.Popen(
                        [sys.executable, str(Path(__file__).resolve()), "--host-nodes",
                         str(spec_file)], env=self.env(), cwd=self.work, stdout=log,
                        stderr=subprocess.STDOUT))
            self._ports()
            self._wait()
        except BaseException:
            self.stop()
            raise
        self.start_s = time.perf_counter() - start
        return self

    def _ports(self) -> None:
        """Each node's URL, once its host has bound the node's socket."""
        deadline = time.monotonic() + 120
        files = [self.work / f"host-{k}.ports" for k in range(len(self.hosts))]
        while not all(f.exists() for f in files):
            if time.monotonic() > deadline or any(h.poll() is not None for h in self.hosts):
                raise SystemExit("the node hosts did not start:\n" + self._tails())
            time.sleep(0.2)
        for f in files:
            for node_id, port in json.loads(f.read_text()).items():
                self.node_urls[node_id] = f"https://127.0.0.1:{port}"
        self.node_urls = {n: self.node_urls[n] for n in self.ids}  # in node order

    def _tails(self) -> str:
        return "\n".join((self.work / f"host-{k}.log").read_text(errors="replace")[-3000:]
                         for k in range(len(self.hosts)))

    def _wait(self) -> None:
        waiting = dict(self.node_urls)
        deadline = time.monotonic() + 30 + 2 * len(waiting)
        with httpx.Client(timeout=2, verify=self.tls) as c:
            while waiting and time.monotonic() < deadline:
                dead = [k for k, h in enumerate(self.hosts) if h.poll() is not None]
                if dead:
                    break
                for node_id, url in list(waiting.items()):
                    try:
                        if c.get(url + "/health").status_code == 200:
                            del waiting[node_id]
                    except httpx.HTTPError:
                        pass
                if waiting:
                    time.sleep(0.3)
        if waiting:
            raise SystemExit(f"{len(waiting)} nodes did not start:\n{self._tails()}")

    def settle(self, limit: float = 60.0) -> float:
        """Wait until the nodes are idle again (a query the hub gave up on still runs at
        its node): seconds waited."""
        start = time.monotonic()
        busy = sum(cpu_seconds(h.pid) for h in self.hosts)
        while time.monotonic() - start < limit:
            time.sleep(0.5)
            now = sum(cpu_seconds(h.pid) for h in self.hosts)
            if now - busy < 0.05:
                break
            busy = now
        return time.monotonic() - start

    def memory_kb(self) -> list[int]:
        return [proc_status(h.pid)["VmRSS"] for h in self.hosts]

    def stop(self) -> None:
        for h in self.hosts:
            if h.poll() is None:
                h.terminate()
        for h in self.hosts:
            try:
                h.wait(30)
            except subprocess.TimeoutExpired:
                h.kill()
                h.wait(5)

    def __exit__(self, *exc) -> None:
        self.stop()


class Hub(Federation):
    """The central service with its hub, knowing the first `n` nodes of the farm (the
    `Federation` of bench_federation.py without nodes of its own)."""

    def __init__(self, work: Path, farm: NodeFarm, n: int, timeout: float) -> None:
        self.work = work
        self.timeout = timeout
        self.sites = farm.ids[:n]
        self.pki = farm.pki
        self.tls = farm.tls
        self.procs: dict[str, subprocess.Popen] = {}
        self.node_urls = {s: farm.node_urls[s] for s in self.sites}
        self.hub_port = free_port()
        self.hub_url = f"http://127.0.0.1:{self.hub_port}"
        self.hub_dir = work / f"hub-{n}"

    def __enter__(self) -> Hub:
        from spe.identity import demo_issuer
        from spe.settings import Settings

        try:
            self.issuer = demo_issuer(Settings(environment="development",
                                               data_dir=self.hub_dir, oidc_issuer=self.hub_url))
            self._start("hub", self.hub_port, {
                "SPE_ENVIRONMENT": "development", "SPE_PKI_DIR": str(self.pki),
                "SPE_DATA_DIR": str(self.hub_dir),
                "SPE_DATABASE_URL": f"sqlite:///{self.hub_dir / 'central.db'}",
                "SPE_OIDC_ISSUER": self.hub_url,
                "SPE_QUERY_TIMEOUT_SECONDS": str(self.timeout),
                "SPE_FEDERATION_NODES": json.dumps(self.node_urls)})
            self._wait("hub", self.hub_url)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        return self.procs["hub"].pid


# ------------------------------------------------------------------------- measuring


class Direct:
    """The count query straight to every node of `hub` at once, as the hub sends it: one
    aiohttp session with the hub's certificate, each node's context signed beforehand."""

    def __init__(self, hub: Hub, prefix: str, timeout: float) -> None:
        from spe.pki import private_key_of
        from spe.wire.context import ContextSigner
        from spe.wire.query import Query

        self.nodes = hub.node_urls
        self.signer = ContextSigner(private_key_of(hub.pki / "hub.key"))
        self.tls = hub.tls
        self.users = users(prefix)
        self.query_hash = Query.model_validate(COUNT_QUERY).digest()
        self.body = json.dumps({"query": COUNT_QUERY}).encode()
        self.timeout = timeout  # the hub's, so both give up on a straggler alike
        self.session = None
        self.statuses: Counter = Counter()

    async def ask(self) -> float:
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.tls, limit=0, keepalive_timeout=4),
                timeout=aiohttp.ClientTimeout(total=None))
        user = next(self.users)
        contexts = {n: self.signer.sign(user=user, roles=["researcher"], tier="statistics",
                                        node_id=n, query_hash=self.query_hash)
                    for n in self.nodes}

        async def one(node_id: str, url: str) -> int | str:
            try:  # a node's failure is counted, as the hub counts it, not raised
                async with asyncio.timeout(self.timeout), self.session.post(
                        url + "/api/v1/query", data=self.body,
                        headers={"X-SPE-Hub-Context": contexts[node_id],
                                 "Content-Type": "application/json"}) as resp:
                    await resp.read()
                    return resp.status
            except TimeoutError:
                return "timed_out"
            except (aiohttp.ClientError, OSError) as exc:
                return type(exc).__name__

        t = time.perf_counter()
        codes = await asyncio.gather(*(one(n, u) for n, u in self.nodes.items()))
        ms = (time.perf_counter() - t) * 1000
        self.statuses.update(codes)
        return ms

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()


async def load(hub: Hub, run: str, clients: int, duration: float):
    """`clients` researchers, each on its own connection, asking the count query through
    the hub as fast as answers come back for `duration` seconds (federated_query.py's load,
    with this benchmark's query): latencies of HTTP 200s, how many every node answered,
    the seconds until the last answer, client errors, node statuses."""
    latencies: list[float] = []
    complete = 0
    errors: Counter = Counter()
    statuses: Counter = Counter()
    tokens = [hub.token(f"load-{run}-{i:03d}") for i in range(clients)]
    start = time.perf_counter()
    deadline = start + duration

    async def client(token: str) -> None:
        nonlocal complete
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=hub.hub_url, timeout=120) as c:
            for _ in range(USER_QUERIES):  # never near the nodes' daily budget
                if time.perf_counter() >= deadline:
                    return
                t = time.perf_counter()
                try:
                    resp = await c.post("/api/v1/query", json=COUNT_QUERY, headers=headers)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                ms = (time.perf_counter() - t) * 1000
                if resp.status_code != 200:
                    errors[f"HTTP {resp.status_code}"] += 1
                    continue
                node_statuses = [n["status"] for n in resp.json()["nodes"]]
                statuses.update(node_statuses)
                latencies.append(ms)
                complete += all(s == "answered" for s in node_statuses)

    await asyncio.gather(*(client(t) for t in tokens))
    return latencies, complete, time.perf_counter() - start, errors, statuses


def measure(hub: Hub, farm: NodeFarm, run: str, *, rounds: int, warmup: int,
            clients: int, duration: float, timeout: float) -> dict:
    n = len(hub.sites)
    caller = HubCaller(hub, f"fan-{n}-hub-{run}")
    direct = Direct(hub, f"fan-{n}-direct-{run}", timeout)
    times: dict[str, list[float]] = {"hub": [], "direct": [], "waits": []}
    loop = asyncio.new_event_loop()
    cpu = 0.0
    last: dict = {}
    statuses: Counter = Counter()  # of the measured rounds
    warm: Counter = Counter()  # of the warm-up rounds (a fresh hub's first connections)
    try:
        for i in range(warmup + rounds):
            c0 = cpu_seconds(hub.pid)
            ms, last = caller.ask(COUNT_QUERY)
            c1 = cpu_seconds(hub.pid)
            direct_ms = loop.run_until_complete(direct.ask())
            (statuses if i >= warmup else warm).update(r["status"] for r in last["nodes"])
            if i >= warmup:
                cpu += c1 - c0
                times["hub"].append(ms)
                times["direct"].append(direct_ms)
                times["waits"].append(max(r["ms"] for r in last["nodes"]))
    finally:
        loop.run_until_complete(direct.aclose())
        loop.close()
    answer_bytes = len(json.dumps(last))
    after_seq = proc_status(hub.pid)
    fds_idle = open_fds(hub.pid)
    lat, complete, elapsed, errors, load_statuses = asyncio.run(
        load(hub, run + f"-{n}", clients, duration))
    after_load = proc_status(hub.pid)
    fds_load = open_fds(hub.pid)
    settled = farm.settle()
    return {
        "n": n, "hub": times["hub"], "direct": times["direct"], "waits": times["waits"],
        "hub_cpu_ms": cpu / rounds * 1000, "statuses": dict(statuses),
        "warm_statuses": dict(warm),
        "direct_statuses": dict(direct.statuses),
        "total": (last.get("total") or {}).get("value"), "answer_kb": answer_bytes / 1024,
        "load": lat, "load_rate": complete / elapsed, "load_errors": dict(errors),
        "load_statuses": dict(load_statuses),
        "rss_mb": after_load["VmRSS"] / 1024, "hwm_mb": after_load["VmHWM"] / 1024,
        "rss_seq_mb": after_seq["VmRSS"] / 1024, "threads": after_load["Threads"],
        "fds_idle": fds_idle, "fds_load": fds_load,
        "node_rss_mb": [kb / 1024 for kb in farm.memory_kb()],
        "loadavg": os.getloadavg()[0], "settled": settled,
    }


def slope(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (slope, intercept) of ys against xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return b, my - b * mx


# ------------------------------------------------------------------------- report


def figures(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="10,50,100", help="federation sizes, ascending")
    parser.add_argument("--patients", type=int, default=300, help="per node index")
    parser.add_argument("--rounds", type=int, default=20,
                        help="sequential rounds (hub, then all nodes directly) per size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load")
    parser.add_argument("--node-procs", type=int, default=2,
                        help="processes the nodes share (one per core here)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds the hub (and the direct baseline) waits for a node "
                             "(SPE_QUERY_TIMEOUT_SECONDS; 5 is the default)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true",
                        help="10 and 50 nodes, 10 rounds, 4 s of load")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.rounds, args.duration = "10,50", 10, 4.0
    sizes = sorted({int(s) for s in args.nodes.split(",")})

    run = uuid.uuid4().hex[:6]  # user names of this run: budgets never carry over
    points = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spe-bench-fanout-") as tmp:
        work = Path(tmp)
        templates = template_indexes(args.patients, args.seed)
        farm = NodeFarm(work, max(sizes), templates, args.node_procs)
        with farm:
            per_node = [len(s) for s in farm.specs]
            print(f"{max(sizes)} nodes ({args.patients} patients each) in {len(farm.hosts)} "
                  f"processes ({', '.join(map(str, per_node))} nodes), PKI in "
                  f"{farm.pki_s:.1f} s, started in {farm.start_s:.1f} s; node hosts "
                  f"{' + '.join(f'{m:.0f}' for m in (kb / 1024 for kb in farm.memory_kb()))}"
                  " MB RSS")
            for n in sizes:
                with Hub(work, farm, n, args.timeout) as hub:
                    t = time.perf_counter()
                    point = measure(hub, farm, run, rounds=args.rounds, warmup=args.warmup,
                                    clients=args.clients, duration=args.duration,
                                    timeout=args.timeout)
                point["seconds"] = time.perf_counter() - t
                point["procs"] = len(farm.hosts)
                points.append(point)
                print(detail(point, args))
    print(table(points, args))
    print(scaling(points))
    print(f"(whole run {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores)")
    return [Figure(f"hub / {p['n']} nodes at once, p50",
                   f"hub {pct(p['hub'], 50):.1f} ms",
                   f"{p['n']} nodes directly at once {pct(p['direct'], 50):.1f} ms",
                   pct(p["hub"], 50) / pct(p["direct"], 50), None, higher_is_better=False)
            for p in points]


def detail(p: dict, args) -> str:
    load_ = p["load"]
    return (
        f"\n{p['n']} nodes ({p['seconds']:.0f} s): hub p50 {pct(p['hub'], 50):.1f} ms, p95 "
        f"{pct(p['hub'], 95):.1f} ms (waiting on the slowest node p50 "
        f"{pct(p['waits'], 50):.1f} ms); all nodes directly at once p50 "
        f"{pct(p['direct'], 50):.1f} ms, p95 {pct(p['direct'], 95):.1f} ms\n"
        f"  hub CPU {p['hub_cpu_ms']:.1f} ms per query; node statuses via the hub "
        f"{p['statuses']} (warm-up {p['warm_statuses']}); direct HTTP "
        f"{p['direct_statuses']}; combined total {p['total']}; answer {p['answer_kb']:.1f} kB\n"
        f"  {args.clients} clients for {args.duration:g} s: {p['load_rate']:.1f} queries/s "
        f"answered by every node" + (f", p50 {pct(load_, 50):.0f} ms, p95 "
                                     f"{pct(load_, 95):.0f} ms" if load_ else "")
        + f"; node statuses {p['load_statuses']}; errors {p['load_errors'] or 'none'}\n"
        f"  hub memory: RSS {p['rss_seq_mb']:.0f} MB after the sequential queries, "
        f"{p['rss_mb']:.0f} MB after the load (peak {p['hwm_mb']:.0f} MB), {p['threads']} "
        f"threads; open files {p['fds_idle']} idle, {p['fds_load']} after the load; node "
        f"hosts {' + '.join(f'{m:.0f}' for m in p['node_rss_mb'])} MB; machine load "
        f"average {p['loadavg']:.1f} on {os.cpu_count()} cores; the nodes were busy "
        f"{p['settled']:.0f} s more after the load")


def table(points: list[dict], args) -> str:
    head = (f"\n{'nodes':>5} {'hub p50':>8} {'hub p95':>8} {'direct p50':>10} {'ratio':>6} "
            f"{'hub CPU/q':>9} {f'{args.clients}cl p50':>9} {f'{args.clients}cl p95':>9} "
            f"{'q/s':>5} {'hub RSS':>8} {'fds':>5} {'node procs':>10}")
    rows = [head, f"{'':>5} {'ms':>8} {'ms':>8} {'ms':>10} {'':>6} {'ms':>9} {'ms':>9} "
                  f"{'ms':>9} {'':>5} {'MB':>8}"]
    for p in points:
        lp50 = pct(p["load"], 50) if p["load"] else float("nan")
        lp95 = pct(p["load"], 95) if p["load"] else float("nan")
        rows.append(
            f"{p['n']:>5} {pct(p['hub'], 50):>8.1f} {pct(p['hub'], 95):>8.1f} "
            f"{pct(p['direct'], 50):>10.1f} {pct(p['hub'], 50) / pct(p['direct'], 50):>6.2f} "
            f"{p['hub_cpu_ms']:>9.1f} {lp50:>9.0f} {lp95:>9.0f} {p['load_rate']:>5.1f} "
            f"{p['rss_mb']:>8.0f} {p['fds_load']:>5} {p['procs']:>10}")
    return "\n".join(rows)


def scaling(points: list[dict]) -> str:
    if len(points) < 2:
        return ""
    ns = [p["n"] for p in points]
    lines = ["\nper node (least squares over the sizes measured):"]
    for label, ys, unit in (
            ("hub p50", [pct(p["hub"], 50) for p in points], "ms"),
            ("direct p50", [pct(p["direct"], 50) for p in points], "ms"),
            ("hub p50 - direct p50", [pct(p["hub"], 50) - pct(p["direct"], 50)
                                      for p in points], "ms"),
            ("hub CPU per query", [p["hub_cpu_ms"] for p in points], "ms"),
            ("hub RSS after load", [p["rss_mb"] for p in points], "MB"),
            ("hub open files after load", [p["fds_load"] for p in points], ""),
            ("answer size", [p["answer_kb"] for p in points], "kB")):
        b, a = slope(ns, ys)
        lines.append(f"  {label:<26} {b:8.3f} {unit}/node  (+ {a:.1f} {unit} at 0 nodes)")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--host-nodes":
        host_nodes(sys.argv[2])
        return
    print_table(figures())


if __name__ == "__main__":
    main()
