"""Synthetic DICOM written per minute on one core, and as a ratio to a plain pydicom write.

Baseline: `Dataset.save_as` of already-built datasets (the same instances), nothing else.
Measured: `spe synth` for one institution end to end (plan patients, build FHIR and DICOM,
write both). The ratio says how much of the generator's time is writing files at all; the
absolute rate is what the demo's first start depends on (target: 5,000 instances a minute).

    python benchmarks/synth_throughput.py [--patients 150] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from spe.synth import generate
from spe.synth.dicom import instance_dataset
from spe.synth.history import plan_patient
from spe.synth.sites import make_site
from spe.synth.staff import make_staff


def build(patients: int) -> list:
    site = make_site(0, 1)
    staff = make_staff(site, 1)
    out = []
    for n in range(patients):
        record = plan_patient(site, staff, 1, n)
        for study in record.studies:
            for series in study.series:
                out.extend(instance_dataset(site, record, study, series, i)
                           for i in range(1, series.instances + 1))
    return out


def baseline(datasets: list, folder: Path) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for n, ds in enumerate(datasets):
        ds.save_as(folder / f"{n}.dcm", enforce_file_format=True)
    return time.perf_counter() - start


def measured(patients: int, folder: Path) -> tuple[float, int]:
    start = time.perf_counter()
    summary = generate(folder, institutions=1, patients=patients, seed=1)
    return time.perf_counter() - start, summary.instances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    datasets = build(args.patients)
    bases, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            bases.append(baseline(datasets, Path(tmp) / f"base-{i}"))
            runs.append(measured(args.patients, Path(tmp) / f"synth-{i}"))
    base = min(bases)
    seconds, instances = min(runs)
    assert instances == len(datasets), (instances, len(datasets))
    print(f"instances: {instances} (1 institution, {args.patients} patients)")
    print(f"baseline  pydicom write of built datasets: {60 * instances / base:8.0f} /min")
    print(f"measured  spe synth end to end:            {60 * instances / seconds:8.0f} /min")
    print(f"ratio (synth throughput / baseline): {base / seconds:.2f}")


if __name__ == "__main__":
    main()
