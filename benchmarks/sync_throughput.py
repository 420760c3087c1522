"""Index throughput from the DICOM folder source, as a ratio to a plain pydicom read.

Baseline: `pydicom.dcmread(path, stop_before_pixels=True)` of every file, nothing else.
Measured: `spe node sync` from the folder source into a fresh SQLite index (read headers,
group into series and studies, write the index), with its default reading processes (one
per core) and, for comparison, in one process. Both run in this process on the same
files, best of a few alternating rounds each, so the ratio does not depend on the machine.

    python benchmarks/sync_throughput.py [--patients 300] [--rounds 3] [--data DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pydicom

from gateway.node.sources import DicomFolderSource
from gateway.node.sources.folder import default_workers
from gateway.node.sync import sync_index
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade
from spe.synth import generate


def baseline(files: list[Path]) -> float:
    start = time.perf_counter()
    for path in files:
        pydicom.dcmread(path, stop_before_pixels=True)
    return time.perf_counter() - start


def folder_sync(folder: Path, workdir: Path, round_no: int,
                workers: int | None = None) -> tuple[float, int]:
    url = f"sqlite:///{workdir / f'bench-{round_no}-{workers}.db'}"
    upgrade(url, "node")
    engine = make_engine(url)
    start = time.perf_counter()
    with session_scope(make_sessionmaker(engine)) as session:
        report = sync_index(session, dicom=DicomFolderSource(folder, workers=workers),
                            fhir=None)
    elapsed = time.perf_counter() - start
    engine.dispose()
    return elapsed, report.instances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, help="an existing `spe synth` output to reuse")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.data or work / "synth"
        if args.data is None:
            generate(data, institutions=1, patients=args.patients, seed=1)
        folder = data / "site-a" / "dicom"
        files = sorted(folder.rglob("*.dcm"))
        # One untimed pass of each warms the page cache and imports.
        baseline(files)
        folder_sync(folder, work, 0)
        # Rounds alternate, so a machine that slows down mid-run slows both sides.
        bases, runs, single = [], [], []
        for i in range(args.rounds):
            bases.append(baseline(files))
            runs.append(folder_sync(folder, work, i + 1))
            single.append(folder_sync(folder, work, i + 1, workers=1))
        base = min(bases)
        synced, instances = min(runs)
        one, _ = min(single)

    assert instances == len(files), f"indexed {instances} of {len(files)} instances"
    print(f"files: {len(files)} DICOM instances")
    print(f"baseline  pydicom header-only read: {len(files) / base:10.0f} instances/s")
    print(f"measured  folder-source index sync: {len(files) / synced:10.0f} instances/s"
          f"  ({default_workers()} reading processes)")
    print(f"          the same, one process:    {len(files) / one:10.0f} instances/s")
    print(f"ratio (sync throughput / baseline): {base / synced:.2f}"
          f"  (one process: {base / one:.2f})")


if __name__ == "__main__":
    main()
