"""Issue 22's throughput figures in one run, each a ratio against its baseline measured in the
same run: FHIR de-identification against the reference engine, staging and DICOM
de-identification against a plain pydicom round trip and dicognito, the hub against its nodes
asked directly, harvest against the per-row load it replaced, and the fan-out to 10, 50 and
100 lightweight nodes. Each benchmark prints its detail as it goes; the table at the end has
one line per figure, with its target and whether it is met.

    python benchmarks/throughput.py [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import Figure, print_table  # noqa: E402

#: Each benchmark module and its arguments (normal, --quick).
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "deid_fhir": ([], ["--quick"]),
    "staging": ([], ["--quick"]),
    "deid_dicom": ([], ["--quick"]),
    "federated_query": ([], ["--quick"]),
    "catalogue_load": ([], ["--quick"]),
    "fanout_scale": ([], ["--quick"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's short run")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None)
    args = parser.parse_args()
    figures: list[Figure] = []
    for name in args.only or BENCHMARKS:
        normal, quick = BENCHMARKS[name]
        print(f"\n=== {name} {' '.join(quick if args.quick else normal)}", flush=True)
        started = time.perf_counter()
        module = importlib.import_module(name)
        figures += module.figures(quick if args.quick else normal)
        print(f"=== {name}: {time.perf_counter() - started:.0f} s", flush=True)
    print("\n=== every figure (ratio against the baseline measured in this run)")
    print_table(figures)


if __name__ == "__main__":
    main()
