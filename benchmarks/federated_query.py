"""Federated query latency and throughput: the hub and three nodes over mutual TLS.

Starts three institution nodes (`gateway.node`, each under uvicorn with mutual TLS from a
fresh federation PKI, `spe.pki.init_pki`) and the central service with its hub, each in its
own process on loopback, and measures in the same run:

1. a count query through the hub (`POST /api/v1/query`), sent sequentially over one
   keep-alive connection after a warm-up: p50 and p95;
2. the baseline: the same query sent directly to each node (`POST /api/v1/query` with a
   hub context signed here with the hub's key, over mutual TLS with the hub's certificate),
   sequentially, interleaved with 1. round by round: p50 and p95 per node. The hub's
   overhead is the ratio of its p50 (and p95) to that of the slowest node (highest p50);
3. throughput with 50 concurrent clients (asyncio and aiohttp, one connection and one
   researcher each) straight to all three nodes at once (the baseline, a context signed
   per node as the hub does), then through the hub: queries per second, p50 / p95 under
   load, and the CPU time each server process spent per query (from /proc).

`figures()` gives two ratios for benchmarks/throughput.py, both against the nodes asked
directly in the same run (issue 22's targets): the hub's p95 under 50 clients over that of
all three nodes asked at once under the same load (with the absolute p95 against 250 ms),
and the hub's sequential p50 over that of all three nodes asked at once (at most 1.1).

A stratified query (by sex and age band) through the hub is timed as extra information.

Each node's index (the tables `gateway.node.index.models` that queries read) is filled
directly with N patients (default 10,000 per node: sex, birth date 1930-2020, 1-4 studies
of 2010-2024 with 1-3 series each, site-specific mixes of modality, body part and
manufacturer, conditions coded in ICD-10 and SNOMED CT with site-specific prevalences,
body weight and BMI observations), drawn with a seeded RNG and bulk-inserted. Generating
and syncing DICOM and FHIR for 30,000 patients would take far longer than the benchmark
and gives the query the same rows. `--data DIR` keeps the filled databases for later runs;
every run works on fresh copies, so query history never carries over.

Researchers call the hub over plain HTTP on loopback (TLS to the hub is a deployment's
reverse proxy); hub -> node and the direct baseline are mutual TLS. Users are rotated
(a new researcher every 100 queries) so that no one meets the nodes' daily budget of 200
queries (policies/query); repeating one query gives the same (perturbed) answer.
Servers log at warning level (no access log). Timings are printed, never asserted.

    python benchmarks/federated_query.py [--patients 10000] [--rounds 100] [--clients 50]
        [--duration 15] [--data DIR] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_federation import Federation, pct, serve_child  # noqa: E402
from report import Figure, print_table  # noqa: E402

SITES = ("site-a", "site-b", "site-c")
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
FILL_VERSION = 1  # bump when the generated data changes, so --data DIR is refilled
USER_QUERIES = 100  # queries per researcher before the next one takes over (budget 200)
#: Issue 22: hub p50 at most 1.1 x all nodes asked at once directly; p95 at most 250 ms
#: with 50 concurrent clients (the p95 figure's ratio is against the nodes asked directly
#: under the same load, with the same target).
TARGET_RATIO = 1.1
TARGET_LOAD_P95_MS = 250.0

COUNT_QUERY = {"where": {"type": "and", "of": [
    {"type": "patient", "sex": "female", "age": {"min": 40, "max": 70}},
    {"type": "condition", "system": "icd-10", "code": "C", "prefix": True}]},
    "answer": {"kind": "count"}}
STRATIFIED_QUERY = {"where": {"type": "or", "of": [
    {"type": "condition", "system": "icd-10", "code": "I21.9"},
    {"type": "condition", "system": "icd-10", "code": "E11.9"}]},
    "answer": {"kind": "stratified", "by": ["sex", "age_band"]}}

# ICD-10, SNOMED CT, the sex it (nearly) only occurs in, and the imaging it brings.
CONDITIONS = {
    "C71.9": ("428061005", None, [("MR", "BRAIN"), ("PT", "BRAIN")]),
    "C50.9": ("254837009", "female", [("MG", "BREAST"), ("US", "BREAST")]),
    "C34.9": ("93880001", None, [("CT", "CHEST"), ("PT", "WHOLEBODY")]),
    "C61": ("399068003", "male", [("MR", "PELVIS")]),
    "C18.9": ("363406005", None, [("CT", "ABDOMEN")]),
    "I21.9": ("22298006", None, [("CT", "HEART"), ("US", "HEART")]),
    "I63.9": ("422504002", None, [("CT", "HEAD"), ("MR", "BRAIN")]),
    "I10": ("38341003", None, []),
    "E11.9": ("44054006", None, [("US", "ABDOMEN")]),
    "J44.9": ("13645005", None, [("CT", "CHEST"), ("DX", "CHEST")]),
    "G35": ("24700007", None, [("MR", "BRAIN"), ("MR", "SPINE")]),
    "F03": ("52448006", None, [("MR", "BRAIN")]),
}
BODY_PARTS = {"MR": ["BRAIN", "SPINE", "KNEE", "PELVIS", "HEAD"],
              "CT": ["CHEST", "ABDOMEN", "HEAD", "PELVIS"], "US": ["ABDOMEN", "HEART", "NECK"],
              "DX": ["CHEST", "KNEE", "HAND", "SPINE"], "PT": ["WHOLEBODY"], "MG": ["BREAST"]}
# Per site: the mix of modalities, the scanners, and each condition's prevalence.
PROFILES = {
    "site-a": {  # university hospital: neuro-oncology
        "modalities": {"MR": 40, "CT": 25, "US": 10, "DX": 15, "PT": 7, "MG": 3},
        "manufacturers": ["SIEMENS", "GE MEDICAL SYSTEMS", "Philips"],
        "prevalence": {"C71.9": .04, "C50.9": .05, "C34.9": .03, "C61": .03, "C18.9": .02,
                       "I21.9": .04, "I63.9": .05, "I10": .25, "E11.9": .08, "J44.9": .05,
                       "G35": .03, "F03": .04}},
    "site-b": {  # general hospital: cardiology
        "modalities": {"MR": 15, "CT": 35, "US": 25, "DX": 20, "PT": 2, "MG": 3},
        "manufacturers": ["GE MEDICAL SYSTEMS", "Philips", "CANON_MEC"],
        "prevalence": {"C71.9": .01, "C50.9": .04, "C34.9": .03, "C61": .03, "C18.9": .03,
                       "I21.9": .10, "I63.9": .06, "I10": .35, "E11.9": .14, "J44.9": .08,
                       "G35": .01, "F03": .05}},
    "site-c": {  # regional cancer centre: breast and lung
        "modalities": {"MR": 20, "CT": 25, "US": 15, "DX": 10, "PT": 12, "MG": 18},
        "manufacturers": ["SIEMENS", "HOLOGIC", "FUJIFILM", "GE MEDICAL SYSTEMS"],
        "prevalence": {"C71.9": .01, "C50.9": .12, "C34.9": .08, "C61": .05, "C18.9": .04,
                       "I21.9": .03, "I63.9": .03, "I10": .22, "E11.9": .07, "J44.9": .09,
                       "G35": .01, "F03": .03}},
}
FIRST_STUDY, LAST_STUDY = date(2010, 1, 1), date(2024, 12, 31)


# ------------------------------------------------------------------------- the index


def _day_between(rng: random.Random, start: date, end: date) -> date:
    return start + timedelta(days=rng.randint(0, max(0, (end - start).days)))


def index_rows(site: str, patients: int, seed: int) -> dict[str, list[tuple]]:
    """Rows of the node's index tables, by table, with explicit ids."""
    rng = random.Random(f"{seed}-{site}")
    profile = PROFILES[site]
    mods, mod_weights = zip(*profile["modalities"].items(), strict=True)
    site_no = SITES.index(site) + 1
    rows: dict[str, list[tuple]] = {t: [] for t in ("patients", "studies", "series",
                                                     "conditions", "observations")}
    study_id = series_id = 0
    for pid in range(1, patients + 1):
        sex = rng.choices(["female", "male", "other", None], [51, 48, 0.5, 0.5])[0]
        born = _day_between(rng, date(1930, 1, 1), date(2020, 12, 31))
        rows["patients"].append((pid, f"MRN-{site_no}-{pid:07d}", f"pat-{pid}", sex, born))
        imaging: list[tuple[str, str]] = []
        for icd, (snomed, only, images) in CONDITIONS.items():
            p = profile["prevalence"][icd] * (2.0 if born.year < 1965 else 1.0)
            if only and sex != only:
                p *= 0.01
            if rng.random() < p:
                onset = _day_between(rng, max(born, date(2005, 1, 1)), LAST_STUDY)
                rows["conditions"].append((pid, ICD10, icd, onset))
                rows["conditions"].append((pid, SNOMED, snomed, onset))
                imaging += images
        first = max(born, FIRST_STUDY)
        for _ in range(rng.randint(1, 4)):
            study_id += 1
            day = _day_between(rng, first, LAST_STUDY)
            modalities = set()
            n_series = rng.randint(1, 3)
            for number in range(1, n_series + 1):
                series_id += 1
                if imaging and rng.random() < 0.6:
                    modality, part = rng.choice(imaging)
                else:
                    modality = rng.choices(mods, mod_weights)[0]
                    part = rng.choice(BODY_PARTS[modality])
                if modality == "MG" and sex == "male":
                    modality, part = "DX", "CHEST"
                modalities.add(modality)
                instances = rng.randint(1, 200)
                rows["series"].append((
                    series_id, f"1.2.826.0.1.3680043.10.{site_no}.2.{series_id}", study_id,
                    modality, part, rng.choice(profile["manufacturers"]), number, instances))
            rows["studies"].append((
                study_id, f"1.2.826.0.1.3680043.10.{site_no}.1.{study_id}", pid, day,
                "\\".join(sorted(modalities)), n_series, 0))
        for _ in range(rng.randint(1, 3)):
            if born.year > 2006:
                break
            day = _day_between(rng, first, LAST_STUDY)
            kg = round(max(40.0, rng.gauss(82 if sex == "male" else 70, 14)), 1)
            height = max(1.45, rng.gauss(1.78 if sex == "male" else 1.65, 0.07))
            rows["observations"].append((pid, LOINC, "29463-7", kg, "kg", day))
            rows["observations"].append((pid, LOINC, "39156-5", round(kg / height ** 2, 1),
                                         "kg/m2", day))
    return rows


def fill_index(db: Path, site: str, patients: int, seed: int) -> dict[str, int]:
    from spe.db.migrate import upgrade

    tmp = db.with_suffix(".filling")
    tmp.unlink(missing_ok=True)
    upgrade(f"sqlite:///{tmp}", "node")
    rows = index_rows(site, patients, seed)
    # Study instance counts as the sum over their series.
    per_study = Counter()
    for s in rows["series"]:
        per_study[s[2]] += s[7]
    rows["studies"] = [(*s[:6], per_study[s[0]]) for s in rows["studies"]]
    statements = {
        "patients": "INSERT INTO patients (id, patient_key, fhir_id, sex, birth_date) "
                    "VALUES (?, ?, ?, ?, ?)",
        "studies": "INSERT INTO studies (id, study_uid, patient_id, study_date, modalities, "
                   "series_count, instance_count) VALUES (?, ?, ?, ?, ?, ?, ?)",
        "series": "INSERT INTO series (id, series_uid, study_id, modality, body_part, "
                  "manufacturer, series_number, instance_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        "conditions": "INSERT INTO conditions (patient_id, system, code, onset_date) "
                      "VALUES (?, ?, ?, ?)",
        "observations": "INSERT INTO observations (patient_id, system, code, value, unit, "
                        "effective_date) VALUES (?, ?, ?, ?, ?, ?)",
    }
    conn = sqlite3.connect(tmp)
    try:
        with conn:
            for table, sql in statements.items():
                conn.executemany(sql, [tuple(v.isoformat() if isinstance(v, date) else v
                                             for v in row) for row in rows[table]])
    finally:
        conn.close()
    # Ages at study, as every sync computes them (gateway.node.index.repository).
    from gateway.node.index.repository import refresh_ages
    from spe.db import make_engine, make_sessionmaker, session_scope

    engine = make_engine(f"sqlite:///{tmp}")
    with session_scope(make_sessionmaker(engine)) as session:
        refresh_ages(session)
    engine.dispose()
    conn = sqlite3.connect(tmp)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    tmp.replace(db)
    return {table: len(r) for table, r in rows.items()}


def prepare_indexes(data: Path, patients: int, seed: int) -> dict[str, Path]:
    """The filled node databases in `data`, reused when they match the arguments."""
    data.mkdir(parents=True, exist_ok=True)
    marker = data / "federated_query.json"
    wanted = {"patients": patients, "seed": seed, "version": FILL_VERSION}
    dbs = {site: data / f"{site}.db" for site in SITES}
    if (marker.exists() and json.loads(marker.read_text()) == wanted
            and all(db.exists() for db in dbs.values())):
        print(f"reusing the node indexes in {data}")
        return dbs
    marker.unlink(missing_ok=True)
    for site, db in dbs.items():
        start = time.perf_counter()
        counts = fill_index(db, site, patients, seed)
        print(f"filled {site}: " + ", ".join(f"{n:,} {t}" for t, n in counts.items())
              + f" in {time.perf_counter() - start:.1f} s")
    marker.write_text(json.dumps(wanted))
    return dbs


# ------------------------------------------------------------------------- measuring


def users(prefix: str, per_user: int = USER_QUERIES) -> Iterator[str]:
    """One user name per query: a new researcher every `per_user` queries."""
    i = 0
    while True:
        for _ in range(per_user):
            yield f"{prefix}-{i:04d}"
        i += 1


class HubCaller:
    """Sequential queries through the hub over one keep-alive connection."""

    def __init__(self, fed: Federation, prefix: str) -> None:
        self.fed = fed
        self.client = httpx.Client(base_url=fed.hub_url, timeout=60)
        self.users = users(prefix)
        self.tokens: dict[str, str] = {}
        self.statuses: Counter = Counter()

    def ask(self, query: dict) -> tuple[float, dict]:
        user = next(self.users)
        if user not in self.tokens:
            self.tokens[user] = self.fed.token(user)
        t = time.perf_counter()
        resp = self.client.post("/api/v1/query", json=query,
                                headers={"Authorization": f"Bearer {self.tokens[user]}"})
        ms = (time.perf_counter() - t) * 1000
        resp.raise_for_status()
        body = resp.json()
        self.statuses.update(n["status"] for n in body["nodes"])
        return ms, body


class NodeCaller:
    """Queries straight to one node over mutual TLS with the hub's certificate, each with
    a context signed as the hub signs it (before the clock starts)."""

    def __init__(self, fed: Federation, site: str, prefix: str) -> None:
        from spe.pki import private_key_of
        from spe.wire.context import ContextSigner

        self.site = site
        self.url = fed.node_urls[site] + "/api/v1/query"
        self.signer = ContextSigner(private_key_of(fed.pki / "hub.key"))
        self.client = httpx.Client(verify=fed.tls, timeout=60)
        self.aclient = httpx.AsyncClient(verify=fed.tls, timeout=60)
        self.users = users(prefix)

    def _request(self, query: dict) -> tuple[dict, dict]:
        from spe.wire.query import Query

        context = self.signer.sign(user=next(self.users), roles=["researcher"],
                                   tier="statistics", node_id=self.site,
                                   query_hash=Query.model_validate(query).digest())
        return {"query": query}, {"X-SPE-Hub-Context": context}

    def ask(self, query: dict) -> tuple[float, dict]:
        body, headers = self._request(query)
        t = time.perf_counter()
        resp = self.client.post(self.url, json=body, headers=headers)
        ms = (time.perf_counter() - t) * 1000
        resp.raise_for_status()
        return ms, resp.json()

    async def aask(self, query: dict) -> float:
        body, headers = self._request(query)
        t = time.perf_counter()
        resp = await self.aclient.post(self.url, json=body, headers=headers)
        ms = (time.perf_counter() - t) * 1000
        resp.raise_for_status()
        return ms


class Sequential:
    """Round by round: the query through the hub, then straight to each node in turn,
    then straight to all three at once; each over its own keep-alive connection(s)."""

    def __init__(self, fed: Federation, run: str) -> None:
        self.hub = HubCaller(fed, f"seq-hub-{run}")
        self.nodes = {site: NodeCaller(fed, site, f"seq-{site}-{run}") for site in SITES}
        self.at_once = {site: NodeCaller(fed, site, f"all-{site}-{run}") for site in SITES}
        self.times: dict[str, list[float]] = {k: [] for k in (
            "hub", "hub waits", *SITES, "all three")}
        self.last: dict = {}

    async def _all_three(self) -> float:
        t = time.perf_counter()
        await asyncio.gather(*(c.aask(COUNT_QUERY) for c in self.at_once.values()))
        return (time.perf_counter() - t) * 1000

    def run(self, rounds: int, warmup: int) -> None:
        loop = asyncio.new_event_loop()
        try:
            for i in range(warmup + rounds):
                keep = i >= warmup
                ms, self.last = self.hub.ask(COUNT_QUERY)
                waited = max(n["ms"] for n in self.last["nodes"])  # the hub's own clock
                for site, caller in self.nodes.items():
                    node_ms, _ = caller.ask(COUNT_QUERY)
                    if keep:
                        self.times[site].append(node_ms)
                all_ms = loop.run_until_complete(self._all_three())
                if keep:
                    self.times["hub"].append(ms)
                    self.times["hub waits"].append(waited)
                    self.times["all three"].append(all_ms)
            for caller in self.at_once.values():
                loop.run_until_complete(caller.aclient.aclose())
        finally:
            loop.close()

    def agree(self) -> tuple[dict, dict]:
        """Each node's total as the hub showed it, and as the node answers directly."""
        via_hub = {n["node_id"]: (n["answer"] or {}).get("total") for n in self.last["nodes"]}
        direct = {site: c.ask(COUNT_QUERY)[1]["total"] for site, c in self.nodes.items()}
        return via_hub, direct


def stratified(fed: Federation, run: str, rounds: int) -> tuple[list[float], dict]:
    hub = HubCaller(fed, f"strat-{run}")
    hub.ask(STRATIFIED_QUERY)
    out = [hub.ask(STRATIFIED_QUERY) for _ in range(rounds)]
    return [ms for ms, _ in out], out[-1][1]


async def load(fed: Federation, run: str, clients: int, duration: float, *,
               direct: bool = False) -> Load:
    """`clients` researchers, each on its own connection(s), asking the count query as fast
    as answers come back, for `duration` seconds: through the hub, or (`direct`) straight to
    all three nodes at once, as the hub would (a context signed here per node, the three
    requests in parallel, the query done when the last answers). Requests still running
    at the deadline are waited for and counted too (throughput = over the whole time).
    Both use aiohttp, whose client costs the shared cores least."""
    import aiohttp

    out = Load()
    prefix = f"{'dload' if direct else 'load'}-{run}"
    tokens = [fed.token(f"{prefix}-{i:03d}") for i in range(clients)]
    callers = [{site: NodeCaller(fed, site, f"{prefix}-{i:03d}") for site in SITES}
               for i in range(clients)] if direct else []
    start = time.perf_counter()
    deadline = start + duration

    async def hub_query(session: aiohttp.ClientSession, i: int) -> list[str] | None:
        async with session.post(f"{fed.hub_url}/api/v1/query", json=COUNT_QUERY,
                                headers={"Authorization": f"Bearer {tokens[i]}"}) as resp:
            if resp.status != 200:
                out.errors[f"HTTP {resp.status}"] += 1
                return None
            return [n["status"] for n in (await resp.json())["nodes"]]

    async def direct_query(session: aiohttp.ClientSession, i: int,
                           signed: dict[str, tuple[dict, dict]]) -> list[str] | None:
        async def one(site: str) -> str:
            body, headers = signed[site]
            async with session.post(callers[i][site].url, json=body,
                                    headers=headers) as resp:
                await resp.read()
                return "answered" if resp.status == 200 else f"HTTP {resp.status}"
        statuses = await asyncio.gather(*(one(site) for site in SITES))
        for st in statuses:
            if st != "answered":
                out.errors[st] += 1
        return list(statuses)

    async def client(i: int) -> None:
        connector = aiohttp.TCPConnector(ssl=fed.tls) if direct else aiohttp.TCPConnector()
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=120)) as session:
            for _ in range(USER_QUERIES):  # never near the daily budget
                if time.perf_counter() >= deadline:
                    return
                # Contexts are signed before the clock starts, as NodeCaller does.
                signed = {site: c._request(COUNT_QUERY) for site, c in callers[i].items()
                          } if direct else {}
                t = time.perf_counter()
                try:
                    statuses = await (direct_query(session, i, signed) if direct
                                      else hub_query(session, i))
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    out.errors[type(exc).__name__] += 1
                    continue
                if statuses is None:
                    continue
                out.latencies.append((time.perf_counter() - t) * 1000)
                out.statuses.update(statuses)
                out.complete += all(st == "answered" for st in statuses)

    await asyncio.gather(*(client(i) for i in range(clients)))
    for per_client in callers:
        for c in per_client.values():
            c.client.close()
            await c.aclient.aclose()
    out.elapsed = time.perf_counter() - start
    return out


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User and system CPU time of each process so far (Linux /proc; empty elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {}
    for role, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return {}
        out[role] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def per_query(start: dict[str, float], end: dict[str, float], got: Load) -> dict[str, float]:
    if not start or not end or not got.complete:
        return {}
    return {role: (end[role] - start[role]) * 1000 / got.complete for role in start}


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)  # of every complete response
    complete: int = 0  # responses in which every node answered
    elapsed: float = 0.0
    errors: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)


def server_errors(text: str) -> Counter:
    """The exceptions a server logged, by their last line (type and message)."""
    return Counter(line[:160] for line in text.splitlines()
                   if re.match(r"^[A-Za-z_][\w.]*(Error|Exception): ", line)
                   and not line.startswith("sqlite3."))


# ------------------------------------------------------------------------- report


def line(name: str, values: list[float]) -> str:
    return (f"  {name:<30} p50 {pct(values, 50):7.1f} ms   p95 {pct(values, 95):7.1f} ms"
            f"   (n={len(values)})")


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def shown(total: dict | None) -> str:
    return "-" if total is None else "suppressed" if total["suppressed"] else str(
        total["value"])


def figures(argv: list[str] | None = None) -> list[Figure]:
    """Measure (printing the detail) and give the hub's figures, each against the nodes
    asked directly in the same run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000, help="per node")
    parser.add_argument("--rounds", type=int, default=100,
                        help="sequential rounds (hub, each node, all nodes) after warm-up")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=15.0,
                        help="seconds of load, through the hub and again directly")
    parser.add_argument("--stratified-rounds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, help="keep (and reuse) the filled node indexes")
    parser.add_argument("--quick", action="store_true",
                        help="2,000 patients, 40 rounds, 8 s of load each way")
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.rounds, args.warmup = 2000, 40, 5
        args.duration, args.stratified_rounds = 8.0, 5

    run = uuid.uuid4().hex[:6]  # user names of this run: budgets never carry over
    with tempfile.TemporaryDirectory(prefix="spe-bench-fq-") as tmp:
        work = Path(tmp)
        dbs = prepare_indexes(args.data or work / "data", args.patients, args.seed)
        with Federation(work, dbs) as fed:
            print(f"hub {fed.hub_url} (HTTP); nodes over mutual TLS: "
                  + ", ".join(f"{s} {u}" for s, u in fed.node_urls.items()))
            seq = Sequential(fed, run)
            seq.run(args.rounds, args.warmup)
            via_hub, direct = seq.agree()
            strat_times, strat = stratified(fed, run, args.stratified_rounds)
            # The same load straight to the nodes, then through the hub; the CPU each
            # server process used meanwhile, per query (a figure the other loads on the
            # shared cores hardly move).
            pids = {role: proc.pid for role, proc in fed.procs.items()}
            before = cpu_seconds(pids)
            loaded_direct = asyncio.run(load(fed, run, args.clients, args.duration,
                                             direct=True))
            middle = cpu_seconds(pids)
            loaded = asyncio.run(load(fed, run, args.clients, args.duration))
            after = cpu_seconds(pids)
            logged = {role: server_errors((work / f"{role}.log").read_text(errors="replace"))
                      for role in fed.procs}
    times = seq.times

    print(f"\ncount query: {json.dumps(COUNT_QUERY['where'])}")
    print("  per node through the hub: " + ", ".join(
        f"{s} {shown(t)}" for s, t in via_hub.items())
        + f"; combined {shown(seq.last.get('total'))}; direct answers "
        + ("agree" if via_hub == direct else f"DIFFER: {direct}")
        + f"; node statuses {dict(seq.hub.statuses)}")

    print(f"\nsequential, {args.rounds} rounds after {args.warmup} warm-up, one keep-alive "
          "connection per path:")
    print(line("hub -> 3 nodes (client: HTTP)", times["hub"]))
    print(line("  of which waiting on nodes", times["hub waits"]))
    for site in SITES:
        print(line(f"{site} direct (mTLS)", times[site]))
    print(line("all 3 nodes at once, direct", times["all three"]))
    slowest = max(SITES, key=lambda s: pct(times[s], 50))
    hub50, hub95 = pct(times["hub"], 50), pct(times["hub"], 95)
    node50, node95 = pct(times[slowest], 50), pct(times[slowest], 95)
    ratio50, ratio95 = hub50 / node50, hub95 / node95
    all50 = pct(times["all three"], 50)
    print(f"  slowest single node (highest p50): {slowest}")
    print(f"  overhead ratio hub / {slowest}: p50 {ratio50:.2f}, p95 {ratio95:.2f} "
          f"(the hub adds {hub50 - node50:.1f} ms at p50)")
    print(f"  hub / all 3 nodes at once: p50 {hub50 / all50:.2f} (on these cores three "
          f"parallel nodes take {all50 / node50:.2f} x one node)")

    print("\nstratified by sex and age_band through the hub (extra information):")
    print(line("hub stratified", strat_times))
    cells = strat.get("cells") or []
    print(f"  {len(cells)} combined cells, {sum(c['suppressed'] for c in cells)} suppressed")

    print(f"\nload: {args.clients} concurrent clients (one researcher and connection each) "
          f"for {args.duration:g} s each way:")
    for name, got in (("all 3 nodes at once, direct", loaded_direct),
                      ("through the hub", loaded)):
        print(f"  {name}: {len(got.latencies) / got.elapsed:.1f} responses/s, "
              f"{got.complete / got.elapsed:.1f} queries/s answered by all 3 nodes "
              f"({got.elapsed:.1f} s until the last answer); node statuses "
              f"{dict(got.statuses)}; client errors {dict(got.errors) or 'none'}")
        if got.latencies:
            print(line(name + " under load", got.latencies))
    cpu_direct = per_query(before, middle, loaded_direct)
    cpu_hub = per_query(middle, after, loaded)
    if cpu_hub:
        print("  CPU per query answered, by process (ms): "
              + "; ".join(f"{role} {cpu_direct.get(role, 0):.1f} direct, "
                          f"{cpu_hub[role]:.1f} through the hub" for role in cpu_hub))
    for role, found in logged.items():
        for message, n in found.most_common(3):
            print(f"  {role} logged {n} x {message}")

    load95 = pct(loaded.latencies, 95) if loaded.latencies else float("inf")
    direct95 = (pct(loaded_direct.latencies, 95) if loaded_direct.latencies
                else float("nan"))
    rate = loaded.complete / loaded.elapsed
    print(f"\nsummary ({os.cpu_count()} cores shared by the hub, three nodes and the "
          f"clients; {args.patients:,} patients per node; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}):")
    print(f"  count query through the hub p50 {hub50:.1f} ms, p95 {hub95:.1f} ms; "
          f"all 3 nodes at once p50 {all50:.1f} ms (target hub / all <= {TARGET_RATIO:g}: "
          f"{verdict(hub50 / all50 <= TARGET_RATIO)})")
    print(f"  overhead ratio hub p50 / slowest node p50 {ratio50:.2f}, p95 {ratio95:.2f}")
    print(f"  with {args.clients} concurrent clients: through the hub {rate:.1f} queries/s, "
          f"p95 {load95:.0f} ms (target <= {TARGET_LOAD_P95_MS:g} ms: "
          f"{verdict(load95 <= TARGET_LOAD_P95_MS)}); all 3 nodes at once directly "
          f"{loaded_direct.complete / loaded_direct.elapsed:.1f} queries/s, p95 "
          f"{direct95:.0f} ms")
    if cpu_hub:
        print(f"  the hub's own CPU per query: {cpu_hub['hub']:.1f} ms; the three nodes' "
              f"{sum(v for r, v in cpu_hub.items() if r != 'hub'):.1f} ms")
    return [
        Figure("hub p95, 50 clients" if args.clients == 50 else
               f"hub p95, {args.clients} clients",
               f"hub p95 {load95:.0f} ms under {args.clients} clients "
               f"({rate:.1f} q/s; target <= {TARGET_LOAD_P95_MS:g} ms)",
               f"all 3 nodes at once directly p95 {direct95:.0f} ms under the same load",
               load95 / direct95, TARGET_RATIO, higher_is_better=False),
        Figure("hub p50 / all nodes at once p50",
               f"hub p50 {hub50:.1f} ms (p95 {hub95:.1f})",
               f"all 3 nodes at once directly p50 {all50:.1f} ms "
               f"(p95 {pct(times['all three'], 95):.1f})",
               hub50 / all50, TARGET_RATIO, higher_is_better=False),
    ]


def main() -> None:
    if "--serve" in sys.argv:  # one of the server processes
        parser = argparse.ArgumentParser()
        parser.add_argument("--serve", required=True)
        parser.add_argument("--port", type=int, required=True)
        args = parser.parse_args()
        serve_child(args.serve, args.port)
        return
    print_table(figures())


if __name__ == "__main__":
    main()
