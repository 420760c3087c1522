"""Start-up overhead of the job sandbox.

Runs a no-op Python job (`pass`) through `spe.sandbox.run` (bubblewrap: namespaces, binds,
rlimits, the pids cgroup, the monitor loop, the output listing) and, in the same run, the
same interpreter bare (`subprocess.run([python, '-c', 'pass'])`), N times each, alternating;
prints the median of each and the difference in ms (target: at most 100 ms more). Nothing is
asserted.

    python benchmarks/sandbox.py [--runs 30] [--patients 150]

Then the staging throughput of a permit's extract (gateway.node.jobs.staging: de-identify a
synthetic site's DICOM and FHIR with the permit's key, measure risk, write the report),
in DICOM files per second, against a plain pydicom read-and-write round trip of the same
files in the same run, with one worker each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spe.sandbox import Limits, run
from spe.sandbox.interpreter import configured_python
from spe.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--patients", type=int, default=150, help="0: no staging")
    args = parser.parse_args()
    python = configured_python(get_settings().sandbox_python)
    limits = Limits(wall_seconds=60)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("code", "extract", "output"):
            (work / name).mkdir()
        (work / "code" / "main.py").write_text("pass\n")
        bare, boxed = [], []
        # warm-up: the interpreter probe, page cache
        subprocess.run([python, "-c", "pass"], check=True)
        first = run(work / "code", "main.py", work / "extract", work / "output", limits)
        if first.state != "succeeded":
            raise SystemExit(f"the sandboxed no-op failed: {first.state}\n{first.stderr_tail}")
        for _ in range(args.runs):
            t = time.perf_counter()
            subprocess.run([python, "-c", "pass"], check=True)
            bare.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            result = run(work / "code", "main.py", work / "extract", work / "output", limits)
            boxed.append((time.perf_counter() - t) * 1000)
            if result.state != "succeeded":
                raise SystemExit(f"a sandboxed no-op failed: {result.state}")
    b, s = statistics.median(bare), statistics.median(boxed)
    print(f"interpreter: {python} ({sys.version.split()[0]}); {args.runs} runs each; "
          f"process limit by {first.processes_enforced_by}")
    print(f"  bare   python -c pass        median {b:7.1f} ms  (min {min(bare):.1f})")
    print(f"  sandboxed no-op job          median {s:7.1f} ms  (min {min(boxed):.1f})")
    print(f"  overhead {s - b:+.1f} ms, ratio {s / b:.2f} "
          f"(target: at most +100 ms: {'met' if s - b <= 100 else 'MISSED'})")
    if args.patients:
        staging(args.patients)


def staging(patients: int) -> None:
    from datetime import date, timedelta
    from types import SimpleNamespace

    import pydicom

    from gateway.node.config import NodeConfig
    from gateway.node.jobs.staging import stage
    from spe.policy import make_policy_service
    from spe.settings import Settings
    from spe.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate(work / "synth", institutions=1, patients=patients, seed=5)
        site = next(p for p in (work / "synth").iterdir() if p.is_dir())
        files = sorted((site / "dicom").rglob("*.dcm"))
        t = time.perf_counter()
        for i, path in enumerate(files):
            pydicom.dcmread(path).save_as(work / f"rt-{i}.dcm")
        baseline = len(files) / (time.perf_counter() - t)
        settings = Settings(data_dir=work)
        permit = SimpleNamespace(pid="P-bench", form="pseudonymised", status="issued",
                                 start=date.today() - timedelta(days=1),
                                 end=date.today() + timedelta(days=30))
        node = NodeConfig("site", "site", f"sqlite:///{work / 'n.db'}",
                          dicom=f"folder:{site / 'dicom'}", fhir=f"ndjson:{site / 'fhir'}")
        policy = make_policy_service(settings)
        t = time.perf_counter()
        staged = stage(permit, node=node, settings=settings, policy=policy,
                       cache_dir=work / "cache", data_version="v1")
        rate = len(files) / (time.perf_counter() - t)
        cores = os.cpu_count() or 1
        t = time.perf_counter()
        stage(permit, node=node, settings=settings, policy=policy, cache_dir=work / "cache-n",
              data_version="v1", workers=cores)
        rate_n = len(files) / (time.perf_counter() - t)
    print(f"staging: {len(files)} DICOM files and their FHIR records of {patients} patients; "
          f"risk k = {staged.report.get('risk', {}).get('k')}")
    print(f"  plain pydicom round trip      {baseline:7.0f} files/s")
    print(f"  staged extract (one worker)   {rate:7.0f} files/s  "
          f"(ratio {rate / baseline:.2f}; FHIR, layer 3 in the files, the report)")
    print(f"  staged extract ({cores} workers)   {rate_n:7.0f} files/s  "
          f"(ratio {rate_n / baseline:.2f}; SPE_STAGING_WORKERS={cores})")


if __name__ == "__main__":
    main()
