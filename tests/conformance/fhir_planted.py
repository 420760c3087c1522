"""A planted-identifier corpus for FHIR R4 de-identification, generated from the models.

`corpus()` builds, for each resource type a node ingests (`RESOURCE_TYPES`: what Synthea
and `spe synth` write, and the types of issue 17), resources in which every element is
filled, down through data types and backbone elements, from fhir.resources' R4 (R4B)
models (`spe.anonymize.fhir_types`): every free-text element (string, markdown, xhtml,
base64Binary; CodeableConcept.text, Annotation.text, HumanName.family, Reference.display,
an element's own id, ...) holds a distinct marker. One resource per option of the widest
choice of its type, so valueString, valueCodeableConcept and the other choices each get
their turn. Extensions and contained resources are planted too, at the resource and at
the first level.

Every marker is a `Plant`: where it sits (resource type and element path of JSON names)
and whether the default rules' allow-list keeps it there (`allowed`). Those are marked
`AL...` and every other `PL...`; a de-identified corpus must hold no `PL` marker, in
plain text or base64. Codings and Quantities alternate between a code of a published
terminology (whose display or unit the allow-list keeps) and a local one (whose go).

`plant(resources)` does the same to resources written elsewhere (Synthea's): each
free-text value is replaced by a marker, the rest left as it is.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from spe.anonymize import fhir_types
from spe.anonymize.fhir import RuleSet

RESOURCE_TYPES = (
    "Patient", "Encounter", "Condition", "Observation", "Procedure", "MedicationRequest",
    "MedicationAdministration", "Medication", "Immunization", "DiagnosticReport",
    "DocumentReference", "ImagingStudy", "Organization", "Location", "Practitioner",
    "PractitionerRole", "Claim", "ExplanationOfBenefit", "Coverage", "CarePlan", "CareTeam",
    "Goal", "AllergyIntolerance", "QuestionnaireResponse", "Device", "SupplyDelivery",
    "Composition", "Provenance",
)
PATIENT_ID = "planted-patient"
STANDARD = {"Coding": "http://loinc.org", "Quantity": "http://unitsofmeasure.org"}
LOCAL = "http://example.org/local-codes"
MAX_DEPTH = 6


@dataclass(frozen=True)
class Plant:
    marker: str
    resource_type: str
    path: str  # JSON names from the resource: "Condition.code.text"
    allowed: bool

    def forms(self) -> tuple[bytes, ...]:
        """The marker as it may appear in output bytes: plain, and base64 (base64Binary)."""
        raw = self.marker.encode()
        return raw, base64.b64encode(raw)


class _Markers:
    def __init__(self) -> None:
        self.plants: list[Plant] = []

    def new(self, resource_type: str, path: str, allowed: bool) -> str:
        marker = f"{'AL' if allowed else 'PL'}{len(self.plants):06d}QX"
        self.plants.append(Plant(marker, resource_type, path, allowed))
        return marker


_PRIMITIVES = {
    "boolean": True, "integer": 1, "positiveInt": 1, "unsignedInt": 0, "integer64": 1,
    "decimal": 1.5, "date": "2020-01-02", "dateTime": "2020-01-02T03:04:05+00:00",
    "instant": "2020-01-02T03:04:05+00:00", "time": "10:00:00", "id": "x1",
    "uri": "http://example.org/uri", "url": "http://example.org/url",
    "canonical": "http://example.org/Questionnaire/q1", "oid": "urn:oid:1.2.3.4",
    "uuid": "2c1c4d3e-3f1a-4b7e-9a4e-6d3b1a2c4e5f", "code": "x-code",
}


def _enum(model: type, name: str) -> str | None:
    for field in model.model_fields.values():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if field.alias == name and extra.get("enum_values"):
            return extra["enum_values"][0]
    return None


class _Builder:
    def __init__(self, resource_type: str, variant: int) -> None:
        self.resource_type = resource_type
        self.variant = variant

    def build(self, kind: str, depth: int, stack: tuple[str, ...]) -> dict[str, Any]:
        table = fhir_types.elements(kind) or {}
        model = get_fhir_model_class(kind)
        out: dict[str, Any] = {}
        groups: dict[str, list[str]] = {}
        for name, element in table.items():
            if element.choice:
                groups.setdefault(element.choice, []).append(name)
        for name, element in table.items():
            if name.startswith("_"):
                continue
            if element.choice:
                options = groups[element.choice]
                if options[self.variant % len(options)] != name:
                    continue
            value = self.value(kind, model, element, depth, stack)
            if value is not None:
                out[name] = [value] if element.repeats else value
        if kind == "Reference":
            out = {"reference": f"Patient/{PATIENT_ID}", "display": "", "type": "Patient"}
        elif kind in STANDARD and "system" in out:
            out["system"] = STANDARD[kind] if self.variant % 2 == 0 else LOCAL
            out["code"] = "mg" if kind == "Quantity" else "2345-7"
        return out

    def value(self, owner: str, model: type, element: fhir_types.Element, depth: int,
              stack: tuple[str, ...]) -> Any:
        if element.primitive:
            if element.free_text:
                return ""  # a marker goes here once the resource is complete
            return _enum(model, element.name) or _PRIMITIVES.get(element.type, "x")
        kind = element.type
        if kind in ("Extension", "Resource"):
            if depth > 1:
                return None
            if kind == "Resource":
                return {"resourceType": "Basic", "id": "contained-1",
                        "code": {"text": ""}}
            return {"url": "http://example.org/extension", "valueString": ""}
        if kind in stack or depth >= MAX_DEPTH or fhir_types.elements(kind) is None:
            return None
        return self.build(kind, depth + 1, (*stack, kind)) or None


def _variants(resource_type: str) -> int:
    """How many resources make every choice of the type, and of what it contains, appear:
    the widest choice (Extension's value, filled with a string here, does not count)."""
    widest, seen, queue = 2, set(), [resource_type]
    while queue:
        kind = queue.pop()
        if kind in seen or kind == "Extension":
            continue
        seen.add(kind)
        counts: dict[str, int] = {}
        for element in (fhir_types.elements(kind) or {}).values():
            if element.choice:
                counts[element.choice] = counts.get(element.choice, 0) + 1
            if not element.primitive and element.type not in ("Resource", "Element"):
                queue.append(element.type)
        widest = max([widest, *counts.values()])
    return widest


def free_text_leaves(resource: dict[str, Any]) -> Iterator[tuple[dict, str, int | None,
                                                                 str, str]]:
    """(holder, key, index in a list or None, owner type, element path) of every free-text
    value of a resource, typed as the de-identifier types them."""
    resource_type = resource["resourceType"]

    def walk(value: dict[str, Any], kind: str, path: str):
        if isinstance(value.get("resourceType"), str):
            kind = path = value["resourceType"]
        table = fhir_types.elements(kind) or {}
        for key, item in list(value.items()):
            element = table.get(key)
            if element is None:
                continue
            child = f"{path}.{key}"
            if element.backbone:
                child = fhir_types.backbone_paths(resource_type).get(element.type, child)
            items = item if isinstance(item, list) else [item]
            for index, entry in enumerate(items):
                at = index if isinstance(item, list) else None
                if element.free_text and isinstance(entry, str):
                    yield value, key, at, kind, child
                elif isinstance(entry, dict):
                    yield from walk(entry, element.type, child)

    yield from walk(resource, resource_type, resource_type)


def _allowed(rules: RuleSet, holder: dict[str, Any], key: str, owner: str, path: str) -> bool:
    free = rules.free_text
    if free is None:
        return False
    entry = free.find(free.keep_by_type, free.keep_by_path, owner, key, path)
    return entry is not None and entry.allows(holder)


def _fill(resource: dict[str, Any], markers: _Markers, rules: RuleSet) -> None:
    for holder, key, index, owner, path in list(free_text_leaves(resource)):
        if owner == "Reference" and key == "reference":
            continue  # a link the engine rewrites, not text
        element = (fhir_types.elements(owner) or {})[key]
        marker = markers.new(resource["resourceType"], path,
                             _allowed(rules, holder, key, owner, path))
        if element.type == "xhtml":
            marker_value = f'<div xmlns="http://www.w3.org/1999/xhtml">{marker}</div>'
        elif element.type == "base64Binary":
            marker_value = base64.b64encode(marker.encode()).decode()
        else:
            marker_value = marker
        if index is None:
            holder[key] = marker_value
        else:
            holder[key][index] = marker_value


def corpus(rules: RuleSet | None = None) -> tuple[dict[str, list[dict]], list[Plant]]:
    """Resources by type, every free-text element planted, and the plants."""
    rules = rules or RuleSet.load()
    markers = _Markers()
    out: dict[str, list[dict]] = {}
    for resource_type in RESOURCE_TYPES:
        for variant in range(_variants(resource_type)):
            builder = _Builder(resource_type, variant)
            resource = {"resourceType": resource_type,
                        **builder.build(resource_type, 0, (resource_type,))}
            resource["id"] = PATIENT_ID if (resource_type, variant) == ("Patient", 0) \
                else f"{resource_type.lower()}-{variant}"
            _fill(resource, markers, rules)
            out.setdefault(resource_type, []).append(resource)
    return out, markers.plants


def plant(resources: dict[str, list[dict]], rules: RuleSet | None = None) -> list[Plant]:
    """Replace every free-text value of `resources` (in place) by a marker."""
    rules = rules or RuleSet.load()
    markers = _Markers()
    for items in resources.values():
        for resource in items:
            _fill(resource, markers, rules)
    return markers.plants


def leaked(output: bytes, plants: list[Plant]) -> list[Plant]:
    """The plants found in the output bytes (allowed ones included)."""
    return [p for p in plants if any(form in output for form in p.forms())]


def to_ndjson(resources: dict[str, list[dict]]) -> dict[str, str]:
    return {f"{kind}.ndjson": "".join(json.dumps(r) + "\n" for r in items)
            for kind, items in resources.items()}
