"""Synthetic federation: fictional hospitals with patients in FHIR R4 and DICOM.

`generate(out, institutions=3, patients=300, seed=1)` writes, per institution,

    OUT/site-a/fhir/{Patient,Condition,Observation,Procedure,ImagingStudy}.ndjson
    OUT/site-a/dicom/<MRN>/<accession>/<series>/<image>.dcm

and `OUT/manifest.json` (what `SynthSummary.to_json` returns). The two views of a patient are
linked the way hospitals link them: Patient.identifier (system `urn:spe:<site>:mrn`) carries
the DICOM PatientID, and ImagingStudy.identifier (`urn:dicom:uid`) the StudyInstanceUID.

Everything follows from the seed: planning happens first (`history.plan_patient`), one
random generator per patient, and the writers only format what was planned, so the same
seed gives byte-identical files and each site's output does not depend on the others.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from spe.synth.dicom import write_study
from spe.synth.fhir import RESOURCE_TYPES, patient_resources
from spe.synth.history import plan_patient
from spe.synth.sites import Site, make_site
from spe.synth.staff import make_staff

Progress = Callable[[str, int, int], None]
MANIFEST = "manifest.json"
GENERATOR = "spe.synth 1"


@dataclass
class SiteSummary:
    id: str
    name: str
    city: str
    country: str
    region: str
    patients: int = 0
    studies: int = 0
    series: int = 0
    instances: int = 0
    resources: dict[str, int] = field(default_factory=dict)
    modalities: dict[str, int] = field(default_factory=dict)  # instances per modality
    manufacturers: dict[str, int] = field(default_factory=dict)  # studies per manufacturer
    conditions: dict[str, int] = field(default_factory=dict)  # patients per condition
    burned_in_series: int = 0


@dataclass
class SynthSummary:
    generator: str
    seed: int
    patients_per_institution: int
    institutions: list[SiteSummary]
    seconds: float = 0.0

    @property
    def instances(self) -> int:
        return sum(s.instances for s in self.institutions)

    @property
    def patients(self) -> int:
        return sum(s.patients for s in self.institutions)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)


def generate(out: Path | str, *, institutions: int = 3, patients: int = 300, seed: int = 1,
             progress: Progress | None = None) -> SynthSummary:
    """Write the synthetic federation to `out`; the manifest is written last, so a folder
    with a manifest is complete. Site folders already in `out` are replaced."""
    if institutions < 1 or patients < 1:
        raise ValueError("institutions and patients must be at least 1")
    return generate_sites(out, [make_site(i, seed) for i in range(institutions)],
                          patients=patients, seed=seed, progress=progress)


def generate_sites(out: Path | str, sites: list[Site], *, patients: int, seed: int = 1,
                   progress: Progress | None = None) -> SynthSummary:
    """`generate` for sites made elsewhere (e.g. shaped like a catalogue's descriptors,
    spe.synth.shaped), each written to `out/<site id>`."""
    if patients < 1:
        raise ValueError("patients must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    started = time.perf_counter()
    summaries = [_write_site(out, site, seed, patients, progress) for site in sites]
    summary = SynthSummary(GENERATOR, seed, patients, summaries,
                           round(time.perf_counter() - started, 2))
    (out / MANIFEST).write_text(summary.to_json() + "\n", encoding="utf-8")
    return summary


def _write_site(out: Path, site: Site, seed: int, patients: int,
                progress: Progress | None) -> SiteSummary:
    root = out / site.id
    for part in ("fhir", "dicom"):
        shutil.rmtree(root / part, ignore_errors=True)
        (root / part).mkdir(parents=True)
    staff = make_staff(site, seed)
    summary = SiteSummary(site.id, site.name, site.city, site.country, site.region)
    resources: Counter[str] = Counter()
    modalities: Counter[str] = Counter()
    manufacturers: Counter[str] = Counter()
    conditions: Counter[str] = Counter()
    label = f"synth {site.id}"
    files = {t: (root / "fhir" / f"{t}.ndjson").open("w", encoding="utf-8")
             for t in RESOURCE_TYPES}
    try:
        for index in range(patients):
            record = plan_patient(site, staff, seed, index)
            for kind, items in patient_resources(site, record).items():
                for item in items:
                    files[kind].write(json.dumps(item, ensure_ascii=False,
                                                 separators=(",", ":")) + "\n")
                resources[kind] += len(items)
            for study in record.studies:
                summary.instances += write_study(root / "dicom", site, record, study)
                summary.studies += 1
                summary.series += len(study.series)
                manufacturers[study.device.manufacturer] += 1
                for series in study.series:
                    modalities[series.modality] += series.instances
                    summary.burned_in_series += series.burned_in
            conditions.update({c.definition.key for c in record.conditions})
            summary.patients += 1
            if progress:
                progress(label, index + 1, patients)
    finally:
        for handle in files.values():
            handle.close()
    summary.resources = dict(resources)
    summary.modalities = dict(sorted(modalities.items()))
    summary.manufacturers = dict(sorted(manufacturers.items()))
    summary.conditions = dict(sorted(conditions.items()))
    return summary
