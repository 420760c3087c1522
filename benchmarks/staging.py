"""Staging a permit's extract at a node, against a plain pydicom round trip of the same files.

A synthetic site (`spe synth`: DICOM files and their FHIR NDJSON) is staged as the node's job
runner stages it (gateway.node.jobs.staging.stage: the anonymisation policy, both
de-identifiers with the permit's key, layer 3 measured and written into the files, the
report), in DICOM files per second, against `pydicom.dcmread(f).save_as(...)` of the same
files in the same run, one process. Each of `--rounds` rounds times the round trip, then
staging on one worker, then on all cores (SPE_STAGING_WORKERS's default) when there is more
than one; the best time of each is kept (the machine may be busy with other work).
`--reference` also times staging the two-pass way it was built before (deidentify_tree,
then layer 3 reading every file back and rewriting it), for a before/after in one run.

    python benchmarks/staging.py [--patients 150] [--rounds 2] [--reference] [--quick]

Nothing is asserted; the figures are printed (benchmarks/report.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # measure this tree, not an installed copy
    sys.path.insert(0, str(ROOT))

from benchmarks.report import Figure, print_table  # noqa: E402

TARGET_ONE_WORKER = 0.6


def _round_trip(files: list[Path], out: Path) -> float:
    import pydicom

    out.mkdir()
    started = time.perf_counter()
    for i, path in enumerate(files):
        pydicom.dcmread(path).save_as(out / f"rt-{i}.dcm")
    return time.perf_counter() - started


def _stage(site: Path, work: Path, workers: int) -> tuple[float, dict]:
    from gateway.node.config import NodeConfig
    from gateway.node.jobs.staging import stage
    from spe.policy import make_policy_service
    from spe.settings import Settings

    settings = Settings(data_dir=work)
    permit = SimpleNamespace(pid="P-bench", form="pseudonymised", status="issued",
                             start=date.today() - timedelta(days=1),
                             end=date.today() + timedelta(days=30))
    node = NodeConfig("site", "site", f"sqlite:///{work / 'n.db'}",
                      dicom=f"folder:{site / 'dicom'}", fhir=f"ndjson:{site / 'fhir'}")
    policy = make_policy_service(settings)
    started = time.perf_counter()
    staged = stage(permit, node=node, settings=settings, policy=policy,
                   cache_dir=work / "cache", data_version="v1", workers=workers)
    return time.perf_counter() - started, staged.report


def _two_pass(site: Path, work: Path) -> tuple[float, float]:
    """Staging's DICOM, FHIR and layer 3 steps as they were composed before: every file
    written, its headers read back to measure, then read and rewritten once more."""
    from gateway.node.jobs import staging
    from spe.anonymize.dicom.batch import deidentify_tree
    from spe.anonymize.fhir_batch import deidentify_ndjson
    from spe.anonymize.pseudonyms import PermitKey
    from spe.policy import make_policy_service
    from spe.settings import Settings

    settings = Settings(data_dir=work)
    permit = SimpleNamespace(pid="P-bench", form="pseudonymised", status="issued",
                             start=date.today() - timedelta(days=1),
                             end=date.today() + timedelta(days=30))
    started = time.perf_counter()
    decision = staging._decide(permit, make_policy_service(settings), date.today())
    key = PermitKey.derive(settings.secret_key.get_secret_value(), permit.pid)
    deidentify_tree(site / "dicom", work / "dicom", key, workers=1)
    fhir = deidentify_ndjson(site / "fhir", work / "fhir", key, workers=1).seconds
    staging._risk(work / "fhir", work / "dicom", decision)
    return time.perf_counter() - started, fhir


def figures(argv: list[str] | None = None) -> list[Figure]:
    from gateway.node.jobs.staging import staging_workers
    from spe.synth import generate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reference", action="store_true",
                        help="also time the two-pass staging it replaced")
    parser.add_argument("--quick", action="store_true", help="40 patients, one round")
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.rounds = 40, 1
    cores = staging_workers(0)
    with tempfile.TemporaryDirectory(prefix="spe-bench-staging-") as tmp:
        work = Path(tmp)
        generate(work / "synth", institutions=1, patients=args.patients, seed=5)
        site = next(p for p in sorted((work / "synth").iterdir()) if p.is_dir())
        files = sorted((site / "dicom").rglob("*.dcm"))
        times: dict[str, list[float]] = {"plain": [], "one": [], "all": [], "two-pass": []}
        # The same runs without their FHIR de-identification (spe.anonymize.fhir's own
        # figure, benchmarks/deid_fhir.py): what reading, writing and layer 3 cost.
        no_fhir: dict[str, list[float]] = {"one": [], "two-pass": []}
        report: dict = {}
        for number in range(max(1, args.rounds)):
            run = work / f"round-{number}"
            run.mkdir()
            times["plain"].append(_round_trip(files, run / "plain"))
            seconds, report = _stage(site, run / "one", 1)
            times["one"].append(seconds)
            no_fhir["one"].append(seconds - report["counts"]["fhir"]["seconds"])
            if cores > 1:
                times["all"].append(_stage(site, run / "all", cores)[0])
            if args.reference:
                seconds, fhir_seconds = _two_pass(site, run / "two-pass")
                times["two-pass"].append(seconds)
                no_fhir["two-pass"].append(seconds - fhir_seconds)
    best = {name: min(values) for name, values in times.items() if values}
    rate = {name: len(files) / seconds for name, seconds in best.items()}
    dicom, fhir, risk = report["counts"]["dicom"], report["counts"]["fhir"], report["risk"]
    print(f"staging: {len(files)} DICOM files and {fhir['resources_in']} FHIR resources of "
          f"{args.patients} patients; best of {max(1, args.rounds)} round(s)")
    print(f"  plain pydicom round trip        {rate['plain']:7.0f} files/s")
    print(f"  staged extract, one worker      {rate['one']:7.0f} files/s  (ratio "
          f"{rate['one'] / rate['plain']:.2f}; DICOM read+de-identify {dicom['seconds']:.1f} s, "
          f"FHIR {fhir['seconds']:.1f} s, layer 3 k = {risk.get('k')}, "
          f"{(risk.get('reduction') or {}).get('dicom_rewritten', 0)} files generalised)")
    if "all" in rate:
        print(f"  staged extract, {cores} workers      {rate['all']:7.0f} files/s  (ratio "
              f"{rate['all'] / rate['plain']:.2f}; SPE_STAGING_WORKERS=0: {cores})")
    if "two-pass" in rate:
        print(f"  two-pass staging (before)       {rate['two-pass']:7.0f} files/s  (ratio "
              f"{rate['two-pass'] / rate['plain']:.2f}; one worker)")
    for name, label in (("one", "one worker"), ("two-pass", "two-pass (before)")):
        if no_fhir[name]:
            rate_dicom = len(files) / min(no_fhir[name])
            print(f"  without the FHIR step, {label:18} {rate_dicom:7.0f} files/s  (ratio "
                  f"{rate_dicom / rate['plain']:.2f})")
    plain = f"{rate['plain']:.0f} files/s plain pydicom read+write"
    out = [Figure("staging a permit's extract, one worker", f"{rate['one']:.0f} files/s",
                  plain, rate["one"] / rate["plain"], TARGET_ONE_WORKER)]
    if "all" in rate:
        out.append(Figure(f"staging, all cores ({cores} workers)", f"{rate['all']:.0f} files/s",
                          plain, rate["all"] / rate["plain"]))
    return out


def main() -> None:
    print_table(figures())


if __name__ == "__main__":
    main()
