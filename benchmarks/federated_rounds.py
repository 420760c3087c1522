"""Federated rounds: a round's overhead at a node, and a whole distributed ComBat run.

Generates three synthetic institutions with `spe synth` (N patients each, default 300),
syncs each into a node index, and starts the federation as `federated_query.py` does
(`bench_federation.Federation`: three nodes under uvicorn with mutual TLS, over their
synthetic DICOM folders and FHIR NDJSON, and the central service with its hub, each in its
own process on loopback). The hub's catalogue is harvested from the nodes' indexes; a
permit over the three sites is applied for, approved and issued through the hub's API.
Then, in the same run:

1. the time of a federated round against the same step run without the federation. A
   round is a `RoundRequest` (spe/wire/rounds.py) sent as the hub sends it (signed with the
   hub's key, mutual TLS) to site-a's `POST /api/v1/fed/rounds`: the node's policy, the
   permit's extract (staged once, then cached), the step in the sandbox, the gate. The
   baseline is the same step code run directly with `spe.sandbox.run` in this process over
   the same staged extract folder, with the same limits and interpreter, alternated with
   the rounds round by round (after one warm-up of each; the first round stages the
   permit's extract, then it is cached). Two steps: one that computes for
   about a second and writes a valid update with steplib (`--rounds` times, default 10),
   and ComBat's "moments" step (spe/federated/apps/combat/step.py, DX chest radiographs,
   COPD J44 as the diagnosis) over the real extract (`--combat-rounds`, default 5). Median
   seconds per round each way and their ratio (target at most 1.3 for rounds of a second
   or more);
2. once the other nodes have staged the extract too (one round each, timed), a whole
   distributed ComBat run through the hub (`POST /api/v1/fed/runs`, app "combat",
   three rounds at the three nodes), polled until it ends: the total seconds, each round's
   seconds from the run's record (and each node's step seconds as the nodes reported
   them), and the series harmonised (rows of each node's kept `harmonised.csv`).

Servers log at warning level. Timings are printed, never asserted.

    python benchmarks/federated_rounds.py [--patients 300] [--rounds 10]
        [--combat-rounds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_federation import ROOT, Federation  # noqa: E402

SITES = ("site-a", "site-b", "site-c")
SITE = "site-a"  # where the overhead rounds go
TARGET_RATIO = 1.3
APPS = ROOT / "spe" / "federated" / "apps"
# The limits of a round, as the federated tests give them (within policies/federated).
LIMITS = {"cpu_seconds": 120, "memory_mb": 2048, "processes": 64, "open_files": 256,
          "file_size_mb": 50, "output_mb": 50, "scratch_mb": 64, "wall_seconds": 120}
# ComBat as the CLI's and the /fed page's defaults: DX chest radiographs, COPD (J44).
COMBAT_CONFIG = {"covariates": {"age": "continuous", "sex": "categorical",
                                "diagnosis": "categorical"},
                 "diagnosis_codes": ["J44"], "modality": "DX", "body_part": "CHEST"}
SECOND_STEP = textwrap.dedent("""\
    import sys, time
    sys.path.insert(0, "/code")
    import numpy as np
    from steplib import EXTRACT, read_round, write_update

    meta, _ = read_round()
    lines = (EXTRACT / "fhir" / "Patient.ndjson").read_text().splitlines()
    n = sum(1 for line in lines if line.strip())
    # About a second of work: matrix products until a second has passed.
    rng = np.random.default_rng(meta["round"])
    a, w, steps = rng.standard_normal((200, 200)), np.zeros(3), 0
    start = time.perf_counter()
    while time.perf_counter() - start < 1.0:
        a = np.tanh(a @ a.T / 200.0)
        steps += 1
    w[:] = a[:3, 0]
    write_update({"w": w}, n, {"steps": steps})
    """)
SECOND_CONTRACT = {"arrays": {"w": {"shape": [3], "min": -10, "max": 10}},
                   "metrics": {"steps": {"min": 0, "max": 1e9}}}


def log(message: str) -> None:
    print(message, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ------------------------------------------------------------------------- the data


def make_sites(work: Path, patients: int, seed: int) -> tuple[dict[str, Path], Path, dict]:
    """({site: synced node database}, the synthetic stores' folder, facts)."""
    from gateway.node.service import run_sync
    from spe.synth import generate

    synth = work / "synth"
    log(f"generating 3 x {patients:,} patients with spe synth (seed {seed})")
    start = time.perf_counter()
    summary = generate(synth, institutions=3, patients=patients, seed=seed)
    generated = time.perf_counter() - start
    log(f"  {summary.patients:,} patients, {summary.instances:,} DICOM instances "
        f"in {generated:.0f} s")
    sites = [inst.id for inst in summary.institutions]
    if tuple(sites) != SITES:
        raise SystemExit(f"spe synth made {sites}, not {SITES}")
    dbs: dict[str, Path] = {}
    start = time.perf_counter()
    (work / "indexes").mkdir()
    for site in SITES:
        dbs[site] = work / "indexes" / f"{site}.db"
        report = run_sync(f"sqlite:///{dbs[site]}", dicom=f"folder:{synth / site / 'dicom'}",
                          fhir=f"ndjson:{synth / site / 'fhir'}", actor="benchmark")
        log(f"  synced {site}: {report.patients:,} patients, {report.series:,} series, "
            f"{report.instances:,} instances")
    synced = time.perf_counter() - start
    return dbs, synth, {"patients_per_site": patients, "seed": seed,
                        "instances": summary.instances, "generate_s": round(generated, 1),
                        "sync_s": round(synced, 1)}


def fill_catalogue(database_url: str, dbs: dict[str, Path]) -> None:
    """The hub's catalogue: each node's descriptor, harvested before the hub starts (as
    `spe demo` does), so that a permit can name the sites' datasets."""
    from catalogue import service as catalogue
    from gateway.node.descriptors import compute_descriptor, descriptor_threshold
    from spe.db import make_engine, make_sessionmaker, session_scope
    from spe.db.migrate import upgrade
    from spe.policy import make_policy_service
    from spe.settings import Settings

    upgrade(database_url, "central")
    threshold = descriptor_threshold(make_policy_service(Settings(environment="development")))
    descriptors = []
    for site, db in dbs.items():
        engine = make_engine(f"sqlite:///{db}")
        try:
            with make_sessionmaker(engine)() as session:
                descriptors.append(compute_descriptor(session, node_id=site, node_name=site,
                                                      threshold=threshold))
        finally:
            engine.dispose()
    engine = make_engine(database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            catalogue.harvest(session, descriptors, actor="benchmark")
    finally:
        engine.dispose()


def issue_permit(fed: Federation, researcher: str) -> str:
    """A permit over the three sites for `researcher`, applied for, approved by each
    site's approver and issued by the HDAB, through the hub's API (pushed to the nodes)."""
    from spe.wire.descriptors import DEFAULT_COLLECTION

    def as_(user: str, role: str, inst: str | None = None) -> dict[str, str]:
        return {"Authorization": "Bearer " + fed.issuer.mint(user, [role], institution=inst)}

    with httpx.Client(base_url=fed.hub_url, timeout=60) as hub:
        alice = as_("alice", "researcher")
        body = {"organisation": "Uni", "title": "Harmonised imaging features",
                "summary": "benchmark", "purpose": "scientific_research",
                "declaration": True, "start_date": str(date.today()),
                "end_date": str(date.today() + timedelta(days=90)),
                "members": [researcher], "datasets": [f"{s}/{DEFAULT_COLLECTION}"
                                                     for s in SITES]}

        def ok(resp: httpx.Response) -> dict:
            if resp.status_code not in (200, 201, 202):
                raise SystemExit(f"{resp.request.method} {resp.request.url.path}: HTTP "
                                 f"{resp.status_code} {resp.text[:500]}")
            return resp.json()

        pid = ok(hub.post("/api/v1/permits", json=body, headers=alice))["id"]
        ok(hub.post(f"/api/v1/permits/{pid}/submit", headers=alice))
        for site in SITES:
            ok(hub.post(f"/api/v1/permits/{pid}/reviews", json={"decision": "approve"},
                        headers=as_(f"approver-{site}", "approver", site)))
        issued = ok(hub.post(f"/api/v1/permits/{pid}/issue", json={"reason": "benchmark"},
                             headers=as_("hilde", "hdab")))
        pushed = issued.get("pushed") or {}
        log(f"permit {pid} issued; pushed: " + ", ".join(
            f"{n} {o}" for n, o in sorted(pushed.items())))
        return pid


# ------------------------------------------------------------------------- 1. overhead


def pack_step(folder: Path, files: dict[str, Path | str]) -> str:
    """base64 tar.gz of a step folder: {name: a file to copy, or its source}."""
    from spe.wire.code_archive import pack_code

    folder.mkdir(parents=True)
    for name, what in files.items():
        if isinstance(what, Path):
            shutil.copy(what, folder / name)
        else:
            (folder / name).write_text(what)
    return base64.b64encode(pack_code(folder)).decode()


class Node:
    """Rounds straight to one node, as the hub sends them, and the same step run here."""

    def __init__(self, fed: Federation, site: str, permit: str, researcher: str,
                 python: str) -> None:
        from spe.pki import private_key_of
        from spe.settings import Settings
        from spe.wire.context import ContextSigner

        self.fed, self.site, self.permit, self.researcher = fed, site, permit, researcher
        self.signer = ContextSigner(private_key_of(fed.pki / "hub.key"))
        self.client = httpx.Client(base_url=fed.node_urls[site], timeout=600,
                                   verify=fed.tls)
        self.python = python
        # The node's own settings, as far as the sandbox reads them.
        self.settings = Settings(environment="development", data_dir=fed.work / site,
                                 sandbox_python=python)
        self.work = fed.work / "baseline"
        self.count = 0

    def close(self) -> None:
        self.client.close()

    def round(self, body) -> tuple[float, dict]:
        from spe.wire.rounds import ROUNDS_PATH

        context = self.signer.sign(query_hash=body.digest(), user=self.researcher,
                                   roles=["researcher"], tier="permit", node_id=self.site,
                                   permit=self.permit)
        payload = body.model_dump(mode="json")
        start = time.perf_counter()
        resp = self.client.post(ROUNDS_PATH, json=payload,
                                headers={"X-SPE-Hub-Context": context})
        seconds = time.perf_counter() - start
        if resp.status_code != 200:
            raise SystemExit(f"round {body.kind} at {self.site}: HTTP {resp.status_code} "
                             f"{resp.text[:500]}")
        reply = resp.json()
        if reply["state"] != "accepted":
            raise SystemExit(f"round {body.kind} at {self.site}: {reply['state']}: "
                             f"{reply['reason']}\n{self.fed.log_tail(self.site, 30)}")
        return seconds, reply

    def extract(self) -> Path:
        """The permit's extract the node staged (and caches) for its rounds."""
        found = [p.parent for p in (self.fed.work / self.site / "extracts").rglob(
            "report.json") if (p.parent / "fhir").is_dir()]
        if len(found) != 1:
            raise SystemExit(f"expected one staged extract at {self.site}, found {found}")
        return found[0]

    def prepare(self, body) -> Path:
        """The round's code folder as the node lays it out (gateway/node/federated/
        step.py): the app's code and `_round/round.json` (and the input arrays)."""
        from spe.wire.code_archive import unpack_code
        from spe.wire.rounds import ROUND_DIR, ROUND_FILE

        self.count += 1
        code = self.work / f"code-{self.count}"
        unpack_code(base64.b64decode(body.code), code)
        (code / ROUND_DIR).mkdir(exist_ok=True)
        (code / ROUND_DIR / ROUND_FILE).write_text(json.dumps({
            "run": body.run, "round": body.round, "kind": body.kind, "node": self.site,
            "config": body.config}))
        return code

    def direct(self, body, code: Path, extract: Path) -> float:
        """The same step with `spe.sandbox.run`, same extract, limits and interpreter."""
        from spe.sandbox import Limits, run

        output = self.work / "output"
        shutil.rmtree(output, ignore_errors=True)
        output.mkdir(parents=True)
        limits = Limits(**body.limits)
        start = time.perf_counter()
        result = run(code, body.entry, extract, output, limits, python=self.python,
                     settings=self.settings)
        seconds = time.perf_counter() - start
        if result.state != "succeeded" or not (output / "update.json").exists():
            raise SystemExit(f"the direct step {body.kind} failed: {result.state} "
                             f"{result.limit}\n{result.stderr_tail}")
        shutil.rmtree(output, ignore_errors=True)
        return seconds


def overhead(node: Node, name: str, make_body, rounds: int) -> dict:
    """`rounds` federated rounds alternated with the step run directly, after a warm-up
    of each (the first round stages the permit's extract)."""
    first, _ = node.round(make_body(0))
    log(f"  {name}: warm-up round {first:.2f} s (the first stages the permit's extract)")
    extract = node.extract()
    code = node.prepare(make_body(0))
    node.direct(make_body(0), code, extract)  # warm-up
    fed, direct, step_s = [], [], []
    for i in range(1, rounds + 1):
        body = make_body(i)
        seconds, reply = node.round(body)
        fed.append(seconds)
        step_s.append(float(reply.get("seconds") or 0.0))
        code = node.prepare(body)
        direct.append(node.direct(body, code, extract))
        shutil.rmtree(code, ignore_errors=True)
        log(f"  {name} {i}/{rounds}: round {fed[-1]:.3f} s (node's step {step_s[-1]:.3f} s),"
            f" direct {direct[-1]:.3f} s")
    f, d = median(fed), median(direct)
    out = {"rounds": rounds, "warm_up_s": round(first, 2), "federated_median_s": round(f, 4),
           "direct_median_s": round(d, 4), "ratio": round(f / d, 3),
           "overhead_median_s": round(f - d, 4),
           "node_reported_step_median_s": round(median(step_s), 4),
           "federated_s": [round(x, 4) for x in fed], "direct_s": [round(x, 4) for x in direct],
           "target_ratio": TARGET_RATIO, "target_met": f / d <= TARGET_RATIO}
    log(f"  {name}: round median {f:.3f} s, direct median {d:.3f} s, ratio {f / d:.3f} "
        f"(+{(f - d) * 1000:.0f} ms; target at most {TARGET_RATIO}: "
        f"{'met' if out['target_met'] else 'MISSED'})")
    return out


def part_overhead(fed: Federation, permit: str, researcher: str, python: str,
                  rounds: int, combat_rounds: int) -> dict:
    from spe.federated import combat
    from spe.federated.apps.combat.features import FEATURES
    from spe.federated.apps.combat.site import width
    from spe.wire.rounds import Contract, RoundRequest

    node = Node(fed, SITE, permit, researcher, python)
    try:
        second_code = pack_step(fed.work / "steps" / "second", {
            "step.py": SECOND_STEP, "steplib.py": APPS / "steplib.py"})

        def second(i: int) -> RoundRequest:
            return RoundRequest(run="bench-second", round=i, kind="second", app="flower",
                                code=second_code, entry="step.py", config={},
                                contract=Contract.model_validate(SECOND_CONTRACT),
                                limits=LIMITS)

        combat_code = pack_step(fed.work / "steps" / "combat", {
            **{n: APPS / "combat" / n for n in ("step.py", "site.py", "features.py")},
            "steplib.py": APPS / "steplib.py"})
        config = {**COMBAT_CONFIG, "features": list(FEATURES), "batches": list(SITES)}
        p = width(len(SITES), COMBAT_CONFIG["covariates"])
        moments_contract = combat.moments_contract(p, len(FEATURES))

        def moments(i: int) -> RoundRequest:
            return RoundRequest(run="bench-moments", round=i, kind=combat.MOMENTS,
                                app="combat", code=combat_code, entry="step.py",
                                config=config, contract=moments_contract, limits=LIMITS)

        log(f"1. a round at {SITE} against the same step run directly with "
            f"spe.sandbox.run ({python})")
        out = {"site": SITE, "limits": LIMITS,
               "one_second_step": overhead(node, "1 s step", second, rounds)}
        if combat_rounds:
            out["combat_moments"] = overhead(node, "ComBat moments", moments, combat_rounds)
    finally:
        node.close()
    # The other nodes stage the permit's extract too (one round of the 1 s step each,
    # at once), so that the ComBat run below times its rounds, not a first staging.
    log("staging the permit's extract at the other nodes (a 1 s round each)")
    others = [Node(fed, site, permit, researcher, python) for site in SITES if site != SITE]
    try:
        with ThreadPoolExecutor(len(others)) as pool:
            staged = dict(zip([n.site for n in others], pool.map(
                lambda n: n.round(second(0))[0], others), strict=True))
    finally:
        for n in others:
            n.close()
    log("  " + ", ".join(f"{s} {t:.1f} s" for s, t in staged.items()))
    out["first_round_with_staging_s"] = {s: round(t, 2) for s, t in staged.items()}
    return out


# ------------------------------------------------------------------------- 2. ComBat


def part_combat(fed: Federation, permit: str, researcher: str) -> dict:
    user = researcher.split("@")[0]
    headers = {"Authorization": "Bearer " + fed.issuer.mint(user, ["researcher"])}
    log("2. a distributed ComBat run through the hub (POST /api/v1/fed/runs, app combat)")
    with httpx.Client(base_url=fed.hub_url, timeout=60, headers=headers) as hub:
        start = time.perf_counter()
        resp = hub.post("/api/v1/fed/runs", json={"permit": permit, "app": "combat",
                                                  "config": COMBAT_CONFIG})
        if resp.status_code != 202:
            raise SystemExit(f"POST /api/v1/fed/runs: HTTP {resp.status_code} {resp.text}")
        run_id = resp.json()["id"]
        seen = 0
        while True:
            run = hub.get(f"/api/v1/fed/runs/{run_id}").json()
            for r in run["rounds"][seen:]:
                log(f"  round {r['round']} ({r['kind']}) done at "
                    f"{time.perf_counter() - start:.1f} s: " + ", ".join(
                        f"{n} {s['state']} {s['seconds']:.2f} s"
                        for n, s in sorted(r["nodes"].items())))
            seen = len(run["rounds"])
            if run["state"] != "running":
                break
            if time.perf_counter() - start > 1800:
                raise SystemExit(f"the ComBat run {run_id} still runs after 30 minutes")
            time.sleep(0.2)
        total = time.perf_counter() - start
    if run["state"] != "succeeded":
        raise SystemExit(f"the ComBat run {run_id} {run['state']}: {run['reason']}\n"
                         + "\n".join(fed.log_tail(s, 15) for s in SITES))
    # Each round's seconds from the run's record: from the run's start (or the round
    # before) to the time the round was recorded.
    previous = datetime.fromisoformat(run["created_at"])
    rounds = []
    for r in run["rounds"]:
        at = datetime.fromisoformat(r["at"])
        if at.tzinfo is None and previous.tzinfo is not None:
            at = at.replace(tzinfo=previous.tzinfo)
        if previous.tzinfo is None and at.tzinfo is not None:
            previous = previous.replace(tzinfo=at.tzinfo)
        rounds.append({"round": r["round"], "kind": r["kind"],
                       "seconds": round((at - previous).total_seconds(), 3),
                       "node_step_s": {n: s["seconds"] for n, s in sorted(r["nodes"].items())},
                       "metrics": r.get("metrics") or {}})
        previous = at
    series = {}
    for site in SITES:
        [path] = (fed.work / site / "extracts").rglob(f"derived/{run_id}/harmonised.csv")
        series[site] = sum(1 for line in path.read_text().splitlines()[1:] if line.strip())
    out = {"run": run_id, "state": run["state"], "total_s": round(total, 2),
           "rounds": rounds, "series_harmonised": sum(series.values()),
           "series_per_site": series, "config": COMBAT_CONFIG}
    log(f"  ComBat: {total:.1f} s in all; rounds " + ", ".join(
        f"{r['kind']} {r['seconds']:.2f} s" for r in rounds)
        + f"; {out['series_harmonised']} series harmonised ("
        + ", ".join(f"{s} {n}" for s, n in series.items()) + ")")
    return out


# ------------------------------------------------------------------------- main


def sandbox_python() -> str:
    """The analysis environment's interpreter (SPE_SANDBOX_PYTHON, as `make` sets it;
    else the repository's var/analysis-env/statistics, else this one)."""
    from spe.sandbox.interpreter import configured_python

    given = os.environ.get("SPE_SANDBOX_PYTHON", "")
    default = ROOT / "var" / "analysis-env" / "statistics" / "bin" / "python"
    if not given and default.exists():
        given = str(default)
    return configured_python(given)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300, help="per site")
    parser.add_argument("--rounds", type=int, default=10,
                        help="rounds of the 1 s step (and as many run directly)")
    parser.add_argument("--combat-rounds", type=int, default=5,
                        help="rounds of ComBat's moments step (0: none)")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--covariates", default="age,sex,diagnosis",
                        help="ComBat's covariates (age continuous, the others categorical)")
    parser.add_argument("--series", default="DX:CHEST",
                        help="ComBat's series, MODALITY:BODYPART ('': every series). A few "
                             "dozen patients a site are too few for the default: staging "
                             "generalises their ages away and their DX chest radiographs "
                             "of COPD patients are too few for the node's gate")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", type=Path,
                        help="work in this (new) folder and keep it: the servers' logs, the "
                             "nodes' data and operator logs of the rounds")
    args = parser.parse_args()
    python = sandbox_python()
    covariates = {c: "continuous" if c == "age" else "categorical"
                  for c in filter(None, args.covariates.split(","))}
    modality, _, body_part = args.series.partition(":")
    COMBAT_CONFIG.update(covariates=covariates, modality=modality or None,
                         body_part=body_part or None)
    if "diagnosis" not in covariates:
        COMBAT_CONFIG["diagnosis_codes"] = []
    researcher_user = "carol"
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-rounds-") as tmp:
        work = Path(tmp)
        if args.keep:
            work = args.keep.resolve()
            work.mkdir(parents=True)
        dbs, synth, facts = make_sites(work, args.patients, args.seed)
        figures["setup"] = facts | {"sandbox_python": python}
        run_dir = work / "run"
        run_dir.mkdir()
        fed = Federation(run_dir, dbs, node_env={site: {
            "SPE_NODE_DICOM": f"folder:{synth / site / 'dicom'}",
            "SPE_NODE_FHIR": f"ndjson:{synth / site / 'fhir'}",
            "SPE_SANDBOX_PYTHON": python} for site in SITES})
        fed.hub_dir.mkdir(parents=True)
        fill_catalogue(f"sqlite:///{fed.hub_dir / 'central.db'}", fed.dbs)
        log("starting the hub and three nodes")
        with fed:
            researcher = f"{researcher_user}@{fed.hub_url}"
            permit = issue_permit(fed, researcher)
            figures["overhead"] = part_overhead(fed, permit, researcher, python,
                                                args.rounds, args.combat_rounds)
            figures["combat"] = part_combat(fed, permit, researcher)
    one = figures["overhead"]["one_second_step"]
    log("\nsummary")
    log(f"  1 s step: round {one['federated_median_s']:.3f} s, direct "
        f"{one['direct_median_s']:.3f} s, ratio {one['ratio']:.3f} (target <= {TARGET_RATIO})")
    if "combat_moments" in figures["overhead"]:
        m = figures["overhead"]["combat_moments"]
        log(f"  ComBat moments step: round {m['federated_median_s']:.3f} s, direct "
            f"{m['direct_median_s']:.3f} s, ratio {m['ratio']:.3f}")
    c = figures["combat"]
    log(f"  ComBat 3 x {args.patients}: {c['total_s']:.1f} s, rounds "
        + ", ".join(f"{r['kind']} {r['seconds']:.2f} s" for r in c["rounds"])
        + f"; {c['series_harmonised']} series harmonised")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
        log(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
