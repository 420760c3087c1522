"""Plan one patient's history: conditions, vitals and labs, imaging, treatments.

Each patient has a generator seeded by (seed, site, patient number) alone, so a site's
output does not depend on how many sites are generated or in which order. Dates are
consistent: conditions start within 2015-2024 at an age the condition allows, the imaging
of a condition follows its onset, and treatments follow its first imaging.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta

from spe.synth import clock
from spe.synth.codes import (
    BMI,
    BODY_HEIGHT,
    BODY_SITES,
    BODY_WEIGHT,
    CONDITIONS,
    DIASTOLIC_BP,
    HBA1C,
    PROCEDURE_CATEGORY_IMAGING,
    PROCEDURE_CATEGORY_SURGICAL,
    SYSTOLIC_BP,
    ObservationDef,
)
from spe.synth.exams import EXAMS, INCIDENTAL_EXAMS, ExamDef
from spe.synth.people import Person, make_person
from spe.synth.records import (
    ConditionRecord,
    ObservationRecord,
    PatientRecord,
    ProcedureRecord,
    SeriesRecord,
    StudyRecord,
)
from spe.synth.scanners import pick_device
from spe.synth.sites import Site
from spe.synth.staff import Staff
from spe.synth.uids import dicom_uid, resource_id

MAX_STUDIES = 4
LAST_ONSET = date(2024, 12, 31)
INCIDENTAL_IMAGING = 0.3  # patients without an imaging-relevant condition who get a study
MRN_STRIDE = 7919  # prime to 10**7, so index -> MRN number is one-to-one within a site
BURNED_IN = {"US": 0.3, "CR": 0.1, "DX": 0.05}  # series whose pixels carry the patient name


def plan_patient(site: Site, staff: Staff, seed: int, index: int) -> PatientRecord:
    rng = random.Random(f"{seed}:{site.id}:{index}")
    key = f"{seed}:{site.id}:{index}"
    person = make_person(rng, site)
    number = (index * MRN_STRIDE + seed * 104_729 + 100_003) % 10_000_000
    conditions = _conditions(rng, site, person, key)
    observations = _observations(rng, site, person, conditions, key)
    studies = _studies(rng, site, staff, person, conditions, index, key)
    procedures = [s.procedure for s in studies] + _treatments(rng, conditions, studies, key)
    procedures.sort(key=lambda p: (p.moment, p.id))
    return PatientRecord(
        index=index, id=resource_id(f"{key}:patient"), mrn=f"{site.code}{number:07d}",
        legacy_id=f"R{(number * 31 + 7) % 100_000_000:08d}", person=person,
        conditions=conditions, observations=observations, procedures=procedures,
        studies=studies,
    )


def _conditions(rng: random.Random, site: Site, person: Person,
                key: str) -> list[ConditionRecord]:
    table = site.prevalence
    found: list[ConditionRecord] = []
    for definition in CONDITIONS:
        draw = rng.random()  # always drawn, so one condition's rules do not shift the next
        p = table[definition.key]
        if definition.sex and person.sex != definition.sex:
            p *= 0.01
        earliest = max(clock.FIRST_DAY, clock.add_years(person.birth_date, definition.min_age))
        latest = min(LAST_ONSET, clock.add_years(person.birth_date, definition.max_age))
        if draw >= p or earliest > latest:
            continue
        onset = clock.random_day(rng, earliest, latest)
        found.append(ConditionRecord(
            id=resource_id(f"{key}:condition:{definition.key}"), definition=definition,
            onset=onset, recorded=onset + timedelta(days=rng.randint(0, 21)),
        ))
    found.sort(key=lambda c: (c.onset, c.definition.key))
    return found


def _observations(rng: random.Random, site: Site, person: Person,
                  conditions: list[ConditionRecord], key: str) -> list[ObservationRecord]:
    keys = {c.definition.key for c in conditions}
    diabetic = "type2_diabetes" in keys
    hypertensive = "hypertension" in keys
    visits = sorted(clock.working_time(rng, clock.random_day(rng, clock.FIRST_DAY,
                                                              clock.LAST_DAY))
                    for _ in range(rng.randint(1, 3)))
    out: list[ObservationRecord] = []

    def add(definition: ObservationDef, value: float, moment: datetime) -> None:
        n = len(out)
        out.append(ObservationRecord(resource_id(f"{key}:observation:{n}"), definition,
                                     round(value, 1), moment))

    height = person.height_cm
    extra_hba1c = rng.random() < 0.25
    for n, moment in enumerate(visits):
        weight = person.weight_kg + rng.gauss(0, 1.5)
        add(BODY_WEIGHT, weight, moment)
        if n == 0:
            add(BODY_HEIGHT, height, moment)
            add(BMI, weight / (height / 100) ** 2, moment)
        systolic = rng.gauss(152 if hypertensive else 124, 12)
        add(SYSTOLIC_BP, systolic, moment)
        add(DIASTOLIC_BP, systolic * 0.62 + rng.gauss(0, 5), moment)
        if diabetic or (extra_hba1c and n == 0):
            hba1c = rng.gauss(7.6, 1.0) if diabetic else rng.gauss(5.4, 0.3)
            add(HBA1C, max(4.0, hba1c), moment + timedelta(minutes=rng.randint(20, 90)))
    return out


def _exam_days(rng: random.Random, person: Person,
               conditions: list[ConditionRecord]) -> list[tuple[date, ExamDef,
                                                                ConditionRecord | None]]:
    planned: list[tuple[date, ExamDef, ConditionRecord | None]] = []
    for condition in conditions:
        for rule in condition.definition.exams:
            if rng.random() >= rule.probability:
                continue
            # Diagnostic imaging within weeks of the onset, follow-ups months apart.
            day = condition.onset + timedelta(days=rng.randint(0, 45))
            for _ in range(rng.randint(rule.low, rule.high)):
                if day > clock.LAST_DAY:
                    break
                planned.append((day, EXAMS[rule.exam], condition))
                day += timedelta(days=rng.randint(90, 540))
    if not planned and rng.random() < INCIDENTAL_IMAGING:
        choices = list(INCIDENTAL_EXAMS)
        if person.sex == "F" and clock.age_on(person.birth_date, clock.AGE_REFERENCE) >= 45:
            choices.append("MG")  # screening mammography
        planned.append((clock.random_day(rng, clock.FIRST_DAY, clock.LAST_DAY),
                        EXAMS[rng.choice(choices)], None))
    planned.sort(key=lambda p: (p[0], p[1].key))
    return planned[:MAX_STUDIES]


def _studies(rng: random.Random, site: Site, staff: Staff, person: Person,
             conditions: list[ConditionRecord], index: int, key: str) -> list[StudyRecord]:
    studies: list[StudyRecord] = []
    for k, (day, exam, reason) in enumerate(_exam_days(rng, person, conditions)):
        skey = f"{key}:study:{k}"
        moment = clock.working_time(rng, day)
        device = pick_device(rng, site.fleet, exam.device_kind)
        seq = index * 10 + k  # unique within the site, hence so are the accession numbers
        procedure = ProcedureRecord(
            id=resource_id(f"{skey}:procedure"), code=exam.procedure, moment=moment,
            category=PROCEDURE_CATEGORY_IMAGING, body_site=BODY_SITES[exam.body_part],
            reason=reason,
        )
        study = StudyRecord(
            id=resource_id(f"{skey}:imagingstudy"), uid=dicom_uid(skey),
            frame_uid=dicom_uid(f"{skey}:frame"),
            accession=f"{site.code}{day:%y}{seq:07d}", study_id=f"{seq % 100000:05d}",
            requested_procedure_id=f"RP{seq:07d}", scheduled_step_id=f"SPS{seq:07d}",
            moment=moment, exam=exam, device=device, reason=reason, procedure=procedure,
            referring=rng.choice(staff.referring), performing=rng.choice(staff.radiologists),
            reading=rng.choice(staff.radiologists), operator=rng.choice(staff.technologists),
            weight_kg=round(person.weight_kg + rng.gauss(0, 1.5), 1),
            previous_uid=studies[-1].uid if studies else None,
        )
        n_series = rng.randint(exam.min_series, min(exam.max_series, len(exam.series)))
        series_moment = moment + timedelta(minutes=rng.randint(2, 10))
        for j, definition in enumerate(exam.series[:n_series]):
            modality = definition.modality or device.modality
            study.series.append(SeriesRecord(
                uid=dicom_uid(f"{skey}:series:{j}"), number=j + 1, modality=modality,
                description=definition.description, instances=rng.randint(*exam.instances),
                moment=series_moment, extra=definition.extra,
                burned_in=rng.random() < BURNED_IN.get(modality, 0.0),
            ))
            series_moment += timedelta(minutes=rng.randint(2, 9), seconds=rng.randint(0, 59))
        studies.append(study)
    return studies


def _treatments(rng: random.Random, conditions: list[ConditionRecord],
                studies: list[StudyRecord], key: str) -> list[ProcedureRecord]:
    out: list[ProcedureRecord] = []
    for condition in conditions:
        imaged = [s.moment for s in studies if s.reason is condition]
        after = min(imaged) if imaged else datetime.combine(condition.onset,
                                                            datetime.min.time())
        for n, rule in enumerate(condition.definition.treatments):
            if rng.random() >= rule.probability:
                continue
            day = after.date() + timedelta(days=rng.randint(7, 60))
            if day > clock.LAST_DAY:
                continue
            out.append(ProcedureRecord(
                id=resource_id(f"{key}:treatment:{condition.definition.key}:{n}"),
                code=rule.code, moment=clock.working_time(rng, day),
                category=PROCEDURE_CATEGORY_SURGICAL if rule.surgical else None,
                body_site=None, reason=condition,
            ))
    return out
