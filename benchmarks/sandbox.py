"""Start-up overhead of the job sandbox.

Runs a no-op Python job (`pass`) through `spe.sandbox.run` (bubblewrap: namespaces, binds,
rlimits, the pids cgroup, the monitor loop, the output listing) and, in the same run, the
same interpreter bare (`subprocess.run([python, '-c', 'pass'])`), N times each, alternating;
prints the median of each and the difference in ms (target: at most 100 ms more). Nothing is
asserted.

    python benchmarks/sandbox.py [--runs 30] [--patients 150]

Then the staging throughput of a permit's extract, measured by benchmarks/staging.py (one
round; run that script alone for more).
"""

from __future__ import annotations

import argparse
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
    """The staging figures, measured by benchmarks/staging.py (which also runs alone)."""
    here = Path(__file__).resolve().parent
    if str(here.parent) not in sys.path:
        sys.path.insert(0, str(here.parent))
    from benchmarks import staging as staging_benchmark
    from benchmarks.report import print_table

    print_table(staging_benchmark.figures(["--patients", str(patients), "--rounds", "1"]))


if __name__ == "__main__":
    main()
