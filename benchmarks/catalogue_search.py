"""Catalogue search latency through the HTTP API, on SQLite and on PostgreSQL.

Loads N generated datasets (default 10,000: 2,000 institutions x 5 collections, with
curated titles, descriptions and keywords drawn from a clinical vocabulary, and harvested
modalities, body parts, ICD-10 categories and age ranges) through the catalogue's own
harvest and curation, serves the central app with `spe serve central` in a separate
process, and sends a mix of typical searches over one keep-alive HTTP connection: the
landing page, one and two words, a facet, text plus facets, an age range, a deep page.
Prints p50 and p95 per backend and per kind, and the ratio of the search p95 to the p95 of
`GET /health` on the same server (the HTTP stack's floor), measured in the same run.

    python benchmarks/catalogue_search.py [--datasets 10000] [--rounds 20] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import psycopg

from catalogue import service
from catalogue.schemas import CurationIn
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade
from spe.wire.descriptors import DatasetDescriptor, ValueCount

POSTGRES_URL = os.environ.get("SPE_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
COLLECTIONS = ("imaging", "oncology-registry", "cardiology", "neuro", "paediatrics")
TOPICS = {
    "glioma": ("C71", ["MR"], ["BRAIN"]), "multiple sclerosis": ("G35", ["MR"], ["BRAIN"]),
    "breast cancer": ("C50", ["MG", "US"], ["BREAST"]), "lung cancer": ("C34", ["CT", "PT"],
                                                                       ["CHEST"]),
    "myocardial infarction": ("I21", ["CT", "US"], ["HEART"]),
    "COPD": ("J44", ["CT", "DX"], ["CHEST"]), "asthma": ("J45", ["DX"], ["CHEST"]),
    "stroke": ("I63", ["CT", "MR"], ["HEAD"]), "colorectal cancer": ("C18", ["CT"],
                                                                    ["ABDOMEN"]),
    "diabetes": ("E11", ["US"], ["ABDOMEN"]), "dementia": ("F03", ["MR", "PT"], ["BRAIN"]),
    "prostate cancer": ("C61", ["MR"], ["PELVIS"]),
}
WORDS = ("cohort registry follow-up outcomes screening longitudinal population treatment "
         "biobank trial imaging radiology pathology prognosis survival paediatric adult "
         "elderly regional national hospital network").split()
CITIES = ("Lyon Porto Gent Graz Turku Brno Cork Bergen Torino Utrecht Kaunas Split Varna "
          "Lund Aarhus Bilbao Leipzig Poznan Cluj Tartu").split()


def generate(n: int, seed: int = 7) -> list[tuple[DatasetDescriptor, CurationIn]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        node = f"inst-{i // len(COLLECTIONS):04d}"
        topics = rng.sample(sorted(TOPICS), rng.randint(1, 3))
        modalities = sorted({m for t in topics for m in TOPICS[t][1]} | {rng.choice(
            ["CT", "MR", "DX", "US"])})
        parts = sorted({b for t in topics for b in TOPICS[t][2]})
        lo = rng.choice([0, 0, 18, 18, 30, 40, 50])
        hi = lo + rng.randint(10, 70)
        patients = rng.choice([None, rng.randint(10, 50_000)])
        city = rng.choice(CITIES)
        d = DatasetDescriptor(
            node_id=node, node_name=f"{city} {rng.choice(['University', 'General'])} "
                                    f"Hospital {i // len(COLLECTIONS)}",
            collection=COLLECTIONS[i % len(COLLECTIONS)], generated_at=datetime.now(UTC),
            suppression_threshold=10, patients=patients,
            studies=patients and patients * 3, min_age=lo, max_age=hi,
            temporal_start=date(rng.randint(2000, 2018), 1, 1), temporal_end=date(2024, 1, 1),
            modalities=[ValueCount(value=m, count=rng.randint(10, 900)) for m in modalities],
            body_parts=[ValueCount(value=b, count=rng.randint(10, 900)) for b in parts],
            conditions=[ValueCount(value=TOPICS[t][0], count=rng.randint(10, 500))
                        for t in topics],
            coding_systems=["http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10"],
        )
        title = f"{' and '.join(topics).capitalize()} {rng.choice(WORDS)} of {city}"
        description = (f"{rng.choice(WORDS).capitalize()} data on {', '.join(topics)} "
                       f"from {city}: " + " ".join(rng.choices(WORDS, k=25)) + ".")
        keywords = [*topics, *rng.sample(WORDS, 3)]
        out.append((d, CurationIn(title=title, description=description, keywords=keywords)))
    return out


def load(url: str, datasets) -> float:
    start = time.perf_counter()
    upgrade(url, "central")
    engine = make_engine(url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            for i in range(0, len(datasets), 500):
                batch = datasets[i:i + 500]
                service.harvest(session, [d for d, _ in batch], actor="bench")
                for d, curation in batch:
                    service.curate(session, d.identifier, curation, actor="bench")
                session.flush()
    finally:
        engine.dispose()
    return time.perf_counter() - start


def searches(rng: random.Random) -> list[tuple[str, dict]]:
    topic = rng.choice(sorted(TOPICS))
    word = topic.split()[0]
    code, mods, parts = TOPICS[topic]
    return [
        ("landing", {}),
        ("one word", {"q": word}),
        ("two words", {"q": f"{word} {rng.choice(WORDS)}"}),
        ("prefix", {"q": word[:4]}),
        ("facet", {"modality": rng.choice(mods)}),
        ("text+facets", {"q": word, "body_part": parts[0], "condition": code}),
        ("age range", {"age_min": rng.randint(0, 60), "age_max": rng.randint(61, 90)}),
        ("deep page", {"page": rng.randint(10, 50), "sort": "title"}),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(url: str, data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "SPE_DATABASE_URL": url, "SPE_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "spe.cli", "serve", "central", "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(base + "/health").status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the central service did not start")


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(
        values) > 1 else values[0]


def measure(url: str, data_dir: Path, rounds: int) -> dict[str, list[float]]:
    proc, base = serve(url, data_dir)
    times: dict[str, list[float]] = defaultdict(list)
    rng = random.Random(11)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for _kind, params in searches(rng):  # warm-up: caches, plans, connections
                client.get("/api/v1/catalogue/search", params=params).raise_for_status()
            for _ in range(rounds):
                for kind, params in searches(rng):
                    t = time.perf_counter()
                    resp = client.get("/api/v1/catalogue/search", params=params)
                    times[kind].append((time.perf_counter() - t) * 1000)
                    resp.raise_for_status()
                    t = time.perf_counter()
                    client.get("/health").raise_for_status()
                    times["health"].append((time.perf_counter() - t) * 1000)
    finally:
        proc.terminate()
        proc.wait(10)
    return times


def report(name: str, times: dict[str, list[float]]) -> None:
    every = [t for kind, ts in times.items() if kind != "health" for t in ts]
    print(f"{name}: {len(every)} searches")
    for kind, ts in times.items():
        if kind != "health":
            print(f"  {kind:<12} p50 {pct(ts, 50):6.1f} ms   p95 {pct(ts, 95):6.1f} ms")
    p95, floor = pct(every, 95), pct(times["health"], 95)
    print(f"  all searches p50 {pct(every, 50):6.1f} ms   p95 {p95:6.1f} ms  "
          f"(target p95 <= 30 ms: {'met' if p95 <= 30 else 'MISSED'})")
    print(f"  baseline GET /health p95 {floor:.1f} ms; ratio search p95 / health p95: "
          f"{p95 / floor:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    datasets = generate(args.datasets)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        url = f"sqlite:///{work / 'catalogue.db'}"
        print(f"loaded {args.datasets} datasets into SQLite in {load(url, datasets):.0f} s")
        report("SQLite (FTS5)", measure(url, work, args.rounds))
        if args.sqlite_only:
            return
        name = f"spe_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        pg = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
        try:
            print(f"loaded {args.datasets} datasets into PostgreSQL in "
                  f"{load(pg, datasets):.0f} s")
            with psycopg.connect(pg, autocommit=True) as conn:
                conn.execute("ANALYZE")
            report("PostgreSQL (tsvector + GIN)", measure(pg, work, args.rounds))
        finally:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
