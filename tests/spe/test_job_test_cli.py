"""`spe job test` refuses bad input with a clear message and exit 2, before any dummy data is
made; shaped synthetic sites follow their descriptors; the extract layout's schema refuses
what is not the documented layout. (The dry run itself against the real nodes:
tests/gateway/test_job_dry_run.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spe.cli.job_test import SHAPE_FORMAT
from spe.cli.main import app
from spe.jobs.extract_layout import describe_extract, layout_problems

DESCRIPTOR = {"node_id": "site-a", "number_of_unique_individuals": 400,
              "min_typical_age": 40, "max_typical_age": 60,
              "manufacturers": [{"value": "Philips", "count": 300},
                                {"value": "SIEMENS", "count": None}],
              "conditions": [{"value": "C71", "count": 200}],
              "modalities": [{"value": "MR", "count": 500}]}


def _shape(tmp_path: Path, pid: str = "P1") -> Path:
    path = tmp_path / "shape.json"
    path.write_text(json.dumps({"format": SHAPE_FORMAT, "permit": {
        "id": pid, "status": "active", "form": "anonymised", "institutions": ["site-a"],
        "datasets": [{"dataset": "site-a/x", "node_id": "site-a"}]},
        "datasets": [DESCRIPTOR]}))
    return path


def _code(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir(exist_ok=True)
    (folder / "main.py").write_text("print('hi')\n")
    return folder


def _run(*args: str):
    return CliRunner().invoke(app, ["job", "test", *args],
                              env={"SPE_HUB_URL": "http://127.0.0.1:9", "SPE_TOKEN": "t"})


@pytest.mark.parametrize(("args", "words"), [
    (["no-such-folder", "--permit", "P1"], "no such folder"),
    (["{code}", "--permit", "P1", "--entry", "nope.py"], "no such file"),
    (["{code}", "--permit", "P2", "--shape", "{shape}"], "not 'P2'"),
    (["{code}", "--permit", "P1", "--shape", "{code}/main.py"], "not JSON"),
    (["{code}", "--permit", "P1", "--shape", "{shape}", "--wall-seconds", "7200"],
     "refused as at a node"),
    (["{code}", "--permit", "P1", "--shape", "{shape}", "--environment", "gpu"],
     "refused as at a node"),
])
def test_bad_input_exits_2_with_the_reason(tmp_path, capsys, args, words):
    code, shape = _code(tmp_path), _shape(tmp_path)
    done = _run(*[a.format(code=code, shape=shape) for a in args])
    assert done.exit_code == 2, done.output
    assert done.exception is None or isinstance(done.exception, SystemExit)
    assert words in (done.output + capsys.readouterr().err).replace("\n", " ")


def test_an_unreachable_hub_exits_1_naming_it(tmp_path, capsys):
    done = _run(str(_code(tmp_path)), "--permit", "P1")
    assert done.exit_code == 1, done.output
    assert "cannot reach the hub" in (done.output + capsys.readouterr().err).replace("\n", " ")


def test_a_shaped_site_follows_its_descriptor(tmp_path):
    from spe.synth import generate_sites
    from spe.synth.shaped import SiteShape, shaped_sites

    (site,) = shaped_sites([SiteShape.from_descriptor(DESCRIPTOR)], seed=3)
    assert (site.id, site.ages) == ("site-a", (40, 60))
    assert {d.vendor for d in site.fleet if d.kind == "MR"} <= {"philips", "siemens"}
    assert site.prevalence["glioma"] == 0.5  # 200 of 400 patients: ICD-10 C71
    summary = generate_sites(tmp_path, [site], patients=30, seed=3)
    patients = [json.loads(line) for line in
                (tmp_path / "site-a" / "fhir" / "Patient.ndjson").read_text().splitlines()]
    assert len(patients) == summary.patients == 30
    years = [int(p["birthDate"][:4]) for p in patients]
    assert max(years) - min(years) <= 22  # ages 40-60 at the reference date, give or take
    assert summary.institutions[0].conditions.get("glioma", 0) >= 5


def test_the_layout_schema_refuses_anything_else(tmp_path):
    root = tmp_path / "extract"
    uid = "2.25.1"
    (root / "dicom" / uid / uid).mkdir(parents=True)
    (root / "fhir").mkdir()
    (root / "dicom" / uid / uid / f"{uid}.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 8)
    (root / "fhir" / "Patient.ndjson").write_text('{"resourceType": "Patient"}\n')
    keys = ["format", "pid", "data_version", "form", "layers", "pseudonymised", "key",
            "counts", "excluded_files", "skipped_fhir_lines", "risk", "risk_ok", "staged_at"]
    (root / "report.json").write_text(json.dumps(dict.fromkeys(keys, 1)))
    assert layout_problems(describe_extract(root)) == []
    # A staging marker, a mislabelled resource, a name that is no UID: each refused.
    for bad, content in ((".risk", ""), ("fhir/Condition.ndjson", '{"resourceType": "X"}\n'),
                         ("dicom/scan.dcm", "")):
        (root / bad).write_text(content)
        assert layout_problems(describe_extract(root)), bad
        (root / bad).unlink()
    (root / "report.json").write_text("{}")
    assert layout_problems(describe_extract(root))
