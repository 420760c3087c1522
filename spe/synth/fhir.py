"""A patient record as FHIR R4 resources, shaped the way a hospital's Bulk Data export is.

The resources are plain dicts (what goes into NDJSON); the tests check every one of them
against the fhir.resources R4 (R4B) models. Identifying data sits where real exports keep
it: names, MRN and national id, address, phone, e-mail, referrer and reader names.
"""

from __future__ import annotations

from typing import Any

from spe.synth import clock
from spe.synth.codes import (
    BODY_SITES,
    CONDITION_CATEGORY,
    CONDITION_CLINICAL,
    CONDITION_VERIFICATION,
    DCM,
    LATERALITY,
    OBSERVATION_CATEGORY,
    UCUM,
    V2_0203,
    Code,
)
from spe.synth.exams import MODALITIES
from spe.synth.records import PatientRecord, StudyRecord
from spe.synth.sites import Site
from spe.synth.uids import instance_uid

RESOURCE_TYPES = ("Patient", "Condition", "Observation", "Procedure", "ImagingStudy")
DICOM_UID_SYSTEM = "urn:dicom:uid"
SOP_CLASS_SYSTEM = "urn:ietf:rfc:3986"
GENDER = {"M": "male", "F": "female"}


def concept(*codes: Code, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [c.coding() for c in codes]}
    if text or codes:
        out["text"] = text or codes[0].display
    return out


def patient_resources(site: Site, record: PatientRecord) -> dict[str, list[dict[str, Any]]]:
    """Every resource of one patient, by resource type."""
    ref = {"reference": f"Patient/{record.id}"}
    offset = site.template.utc_offset_hours
    return {
        "Patient": [_patient(site, record)],
        "Condition": [_condition(c, ref) for c in record.conditions],
        "Observation": [_observation(o, ref, offset) for o in record.observations],
        "Procedure": [_procedure(p, ref, offset) for p in record.procedures],
        "ImagingStudy": [_imaging_study(site, s, ref) for s in record.studies],
    }


def _patient(site: Site, record: PatientRecord) -> dict[str, Any]:
    person = record.person
    return {
        "resourceType": "Patient",
        "id": record.id,
        "identifier": [
            {"use": "usual", "type": concept(Code(V2_0203, "MR", "Medical record number")),
             "system": site.mrn_system, "value": record.mrn},
            {"use": "official",
             "type": concept(Code(V2_0203, "NI", "National unique individual identifier")),
             "system": person.national_id_system, "value": person.national_id},
        ],
        "active": True,
        "name": [{"use": "official", "family": person.family, "given": list(person.given),
                  "text": person.full_name}],
        "telecom": [{"system": "phone", "value": person.phone, "use": "mobile"},
                    {"system": "email", "value": person.email, "use": "home"}],
        "gender": GENDER[person.sex],
        "birthDate": person.birth_date.isoformat(),
        "address": [{"use": "home", "line": [person.address.line],
                     "city": person.address.city, "postalCode": person.address.postal_code,
                     "country": person.address.country}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47",
                                                    "code": person.language}]},
                           "preferred": True}],
        "managingOrganization": {"display": site.name},
    }


def _condition(condition, subject: dict[str, str]) -> dict[str, Any]:
    definition = condition.definition
    return {
        "resourceType": "Condition",
        "id": condition.id,
        "clinicalStatus": concept(Code(CONDITION_CLINICAL, "active", "Active")),
        "verificationStatus": concept(Code(CONDITION_VERIFICATION, "confirmed", "Confirmed")),
        "category": [concept(Code(CONDITION_CATEGORY, "encounter-diagnosis",
                                  "Encounter Diagnosis"))],
        # SNOMED CT first (the clinical code), ICD-10 beside it (the billing code).
        "code": concept(definition.snomed, definition.icd10, text=definition.snomed.display),
        "subject": subject,
        "onsetDateTime": condition.onset.isoformat(),
        "recordedDate": condition.recorded.isoformat(),
    }


def _observation(observation, subject: dict[str, str], offset: int) -> dict[str, Any]:
    definition = observation.definition
    category = definition.category
    return {
        "resourceType": "Observation",
        "id": observation.id,
        "status": "final",
        "category": [concept(Code(OBSERVATION_CATEGORY, category,
                                  "Vital Signs" if category == "vital-signs" else "Laboratory"))],
        "code": concept(definition.code),
        "subject": subject,
        "effectiveDateTime": clock.fhir_datetime(observation.moment, offset),
        "valueQuantity": {"value": observation.value, "unit": definition.unit,
                          "system": UCUM, "code": definition.unit},
    }


def _procedure(procedure, subject: dict[str, str], offset: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": procedure.id,
        "status": "completed",
        "code": concept(procedure.code),
        "subject": subject,
        "performedDateTime": clock.fhir_datetime(procedure.moment, offset),
    }
    if procedure.category:
        out["category"] = concept(procedure.category)
    if procedure.body_site:
        out["bodySite"] = [concept(procedure.body_site)]
    if procedure.reason:
        out["reasonReference"] = [{"reference": f"Condition/{procedure.reason.id}"}]
    return out


def _imaging_study(site: Site, study: StudyRecord, subject: dict[str, str]) -> dict[str, Any]:
    offset = site.template.utc_offset_hours
    body_site = BODY_SITES[study.exam.body_part]
    out: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": study.id,
        "identifier": [
            {"use": "official", "system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study.uid}"},
            {"use": "usual", "type": concept(Code(V2_0203, "ACSN", "Accession ID")),
             "system": f"urn:spe:{site.id}:accession", "value": study.accession},
        ],
        "status": "available",
        "modality": [{"system": DCM, "code": m} for m in study.modalities],
        "subject": subject,
        "started": clock.fhir_datetime(study.moment, offset),
        "basedOn": [{"display": f"Order {study.requested_procedure_id}"}],
        "referrer": {"display": _display(study.referring)},
        "interpreter": [{"display": _display(study.reading)}],
        "numberOfSeries": len(study.series),
        "numberOfInstances": study.instance_count,
        "procedureCode": [concept(study.procedure.code)],
        "location": {"display": f"{site.name}, {site.template.department}"},
        "description": study.exam.description,
        "series": [],
    }
    if study.reason:
        out["reasonReference"] = [{"reference": f"Condition/{study.reason.id}"}]
    for series in study.series:
        entry: dict[str, Any] = {
            "uid": series.uid,
            "number": series.number,
            "modality": {"system": DCM, "code": series.modality},
            "description": series.description,
            "numberOfInstances": series.instances,
            "bodySite": body_site.coding(),
            "started": clock.fhir_datetime(series.moment, offset),
            "performer": [{"actor": {"display": _display(study.operator)}}],
            "instance": [
                {"uid": instance_uid(series.uid, n),
                 "sopClass": {"system": SOP_CLASS_SYSTEM,
                              "code": f"urn:oid:{MODALITIES[series.modality].sop_class}"},
                 "number": n}
                for n in range(1, series.instances + 1)
            ],
        }
        side = series.extra.get("ImageLaterality") or series.extra.get("Laterality")
        if side in LATERALITY:
            entry["laterality"] = LATERALITY[side].coding()
        out["series"].append(entry)
    return out


def _display(pn: str) -> str:
    """A DICOM PN (Family^Given^^Prefix) as a person would write it."""
    family, given, _middle, prefix = (pn.split("^") + ["", "", ""])[:4]
    return " ".join(p for p in (prefix, given, family) if p)
