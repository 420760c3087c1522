"""The native where() predicates (spe.anonymize.fhir_predicates) against fhirpathpy on
random identifiers and codings: where they answer, fhirpathpy answers the same; where
fhirpathpy fails, they refuse (Unsure) so that fhirpathpy is asked."""

from __future__ import annotations

import random
from typing import Any

import pytest
from fhirpathpy import compile as compile_path
from fhirpathpy import evaluate

from spe.anonymize import fhir_predicates

CASES = [
    ("Patient", "identifier", "Identifier",
     "type.coding.where(code = 'MR').exists() or system.contains('mrn')"),
    ("ImagingStudy", "identifier", "Identifier", "system = 'urn:dicom:uid'"),
    ("Observation", "code.coding", "Coding", "system = 'http://loinc.org'"),
]
VALUES: list[Any] = [None, "MR", "mr", "MR ", "urn:dicom:uid", "URN:DICOM:UID",
                     "http://loinc.org", "x-mrn-y", "MRN", "", 5, True, ["MR"], {"a": 1}]


def coding(rng: random.Random) -> dict[str, Any]:
    out = {key: value for key in ("code", "system", "display")
           if (value := rng.choice(VALUES)) is not None}
    if rng.random() < 0.05:
        out["_code"] = {"id": "x"}
    return out


def identifier(rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if (system := rng.choice(VALUES)) is not None:
        out["system"] = system
    if rng.random() < 0.6:
        codings = [coding(rng) for _ in range(rng.randint(0, 3))]
        shape = rng.random()
        out["type"] = ({"coding": codings} if shape < 0.8 else
                       {"coding": codings[0] if codings else {}} if shape < 0.9 else
                       [{"coding": codings}])
    if rng.random() < 0.05:
        out["_system"] = {"id": "x"}
    return out


def where_parameter(predicate: str) -> Any:
    parsed = compile_path(f"X.where({predicate})", None).parsedPath
    functn = parsed["children"][0]["children"][1]["children"][0]
    return functn["children"][1]["children"][0]


@pytest.mark.parametrize(("kind", "member", "type_name", "predicate"), CASES)
def test_native_predicates_agree_with_fhirpathpy(kind, member, type_name, predicate):
    native = fhir_predicates.compile_predicate(where_parameter(predicate))
    assert native is not None
    rng = random.Random(kind)
    answered = refused = 0
    for _ in range(800):
        if type_name == "Coding":
            element = coding(rng)
            resource = {"resourceType": kind, "code": {"coding": [element]}}
        else:
            element = identifier(rng)
            resource = {"resourceType": kind, "identifier": [element]}
        try:
            expected: Any = bool(evaluate(resource, f"{kind}.{member}.where({predicate})"))
        except Exception as exc:  # noqa: BLE001 - a failure must be refused natively
            expected = type(exc)
        try:
            got = native(element, type_name) is True
        except fhir_predicates.Unsure:
            refused += 1
            continue
        assert got == expected, element
        answered += 1
    assert answered > 300  # the native path is really taken
    assert refused > 20  # and the odd shapes really go back to fhirpathpy


def test_other_forms_are_not_native():
    for predicate in ("system != 'x'", "system = 'x' and code = 'y'", "$this.length() > 3",
                      "system ~ 'x'", "value = 'a\\'b'", "code = 3"):
        assert fhir_predicates.compile_predicate(where_parameter(predicate)) is None
