"""Code systems and the clinical catalogue: conditions, observations, procedures, body sites.

Codes were checked against published SNOMED CT / ICD-10 (WHO) / LOINC sources; displays are
the preferred terms, shortened where the fully specified name only adds the semantic tag.
"""

from __future__ import annotations

from dataclasses import dataclass

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@dataclass(frozen=True)
class Code:
    system: str
    code: str
    display: str

    def coding(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}


def sct(code: str, display: str) -> Code:
    return Code(SNOMED, code, display)


def icd(code: str, display: str) -> Code:
    return Code(ICD10, code, display)


@dataclass(frozen=True)
class ExamRule:
    """A condition leads to `exam` with `probability`, repeated `low`..`high` times."""

    exam: str
    probability: float
    low: int = 1
    high: int = 1


@dataclass(frozen=True)
class TreatmentRule:
    code: Code
    probability: float
    surgical: bool = False


@dataclass(frozen=True)
class ConditionDef:
    key: str
    snomed: Code
    icd10: Code
    base_prevalence: float
    min_age: int = 18  # age at onset
    max_age: int = 120
    sex: str | None = None  # the sex it (nearly always) affects
    exams: tuple[ExamRule, ...] = ()
    treatments: tuple[TreatmentRule, ...] = ()


CRANIOTOMY = sct("25353009", "Craniotomy")
LUMPECTOMY = sct("392021009", "Lumpectomy of breast")
LOBECTOMY = sct("173171007", "Lobectomy of lung")
PCI = sct("415070008", "Percutaneous coronary intervention")
CHEMOTHERAPY = sct("367336001", "Chemotherapy")
RADIOTHERAPY = sct("108290001", "Radiation oncology AND/OR radiotherapy")

# Base prevalences are those of a general hospital population; each site scales them by
# its profile (see sites.PROFILES), which is what makes the federation heterogeneous.
CONDITIONS: tuple[ConditionDef, ...] = (
    ConditionDef(
        "glioma", sct("393564001", "Glioma"), icd("C71.9", "Malignant neoplasm of brain, "
                                                   "unspecified"),
        0.015,
        exams=(ExamRule("MR_BRAIN", 1.0, 1, 3), ExamRule("CT_HEAD", 0.3),
               ExamRule("PET_BRAIN", 0.2)),
        treatments=(TreatmentRule(CRANIOTOMY, 0.6, surgical=True),
                    TreatmentRule(RADIOTHERAPY, 0.5), TreatmentRule(CHEMOTHERAPY, 0.5)),
    ),
    ConditionDef(
        "breast_cancer", sct("254837009", "Malignant neoplasm of breast"),
        icd("C50.9", "Malignant neoplasm of breast, unspecified"), 0.05, min_age=30, sex="F",
        exams=(ExamRule("MG", 1.0, 1, 2), ExamRule("US_BREAST", 0.6),
               ExamRule("MR_BREAST", 0.4)),
        treatments=(TreatmentRule(LUMPECTOMY, 0.6, surgical=True),
                    TreatmentRule(RADIOTHERAPY, 0.4), TreatmentRule(CHEMOTHERAPY, 0.4)),
    ),
    ConditionDef(
        "lung_cancer", sct("363358000", "Malignant tumor of lung"),
        icd("C34.9", "Malignant neoplasm of bronchus or lung, unspecified"), 0.03, min_age=40,
        exams=(ExamRule("CT_CHEST", 1.0, 1, 2), ExamRule("PET_CT", 0.6), ExamRule("CXR", 0.4)),
        treatments=(TreatmentRule(LOBECTOMY, 0.4, surgical=True),
                    TreatmentRule(CHEMOTHERAPY, 0.6)),
    ),
    ConditionDef(
        "type2_diabetes", sct("44054006", "Diabetes mellitus type 2"),
        icd("E11.9", "Type 2 diabetes mellitus without complications"), 0.12, min_age=30,
        exams=(ExamRule("US_ABD", 0.3),),
    ),
    ConditionDef(
        "hypertension", sct("38341003", "Hypertensive disorder, systemic arterial"),
        icd("I10", "Essential (primary) hypertension"), 0.28, min_age=30,
        exams=(ExamRule("ECHO", 0.2), ExamRule("CXR", 0.2)),
    ),
    ConditionDef(
        "stroke", sct("230690007", "Cerebrovascular accident"),
        icd("I63.9", "Cerebral infarction, unspecified"), 0.04, min_age=40,
        exams=(ExamRule("CT_HEAD", 1.0), ExamRule("MR_BRAIN", 0.6)),
    ),
    ConditionDef(
        "multiple_sclerosis", sct("24700007", "Multiple sclerosis"),
        icd("G35", "Multiple sclerosis"), 0.015, max_age=55,
        exams=(ExamRule("MR_BRAIN", 1.0, 1, 3), ExamRule("MR_SPINE", 0.5)),
    ),
    ConditionDef(
        "copd", sct("13645005", "Chronic obstructive lung disease"),
        icd("J44.9", "Chronic obstructive pulmonary disease, unspecified"), 0.07, min_age=40,
        exams=(ExamRule("CXR", 1.0, 1, 2), ExamRule("CT_CHEST", 0.4)),
    ),
    ConditionDef(
        "myocardial_infarction", sct("22298006", "Myocardial infarction"),
        icd("I21.9", "Acute myocardial infarction, unspecified"), 0.05, min_age=40,
        exams=(ExamRule("ECHO", 1.0), ExamRule("CXR", 0.6)),
        treatments=(TreatmentRule(PCI, 0.7, surgical=True),),
    ),
    ConditionDef(
        "alzheimer", sct("26929004", "Alzheimer's disease"),
        icd("G30.9", "Alzheimer disease, unspecified"), 0.03, min_age=60,
        exams=(ExamRule("MR_BRAIN", 1.0), ExamRule("PET_BRAIN", 0.4)),
    ),
    # Rare diseases: a handful of cases per site, the kind a federation exists to pool.
    ConditionDef(
        "als", sct("86044005", "Amyotrophic lateral sclerosis"),
        icd("G12.2", "Motor neuron disease"), 0.004, min_age=40,
        exams=(ExamRule("MR_BRAIN", 1.0), ExamRule("MR_SPINE", 0.7)),
    ),
    ConditionDef(
        "huntington", sct("58756001", "Huntington's chorea"), icd("G10", "Huntington disease"),
        0.003, min_age=30, max_age=70, exams=(ExamRule("MR_BRAIN", 1.0, 1, 2),),
    ),
    ConditionDef(
        "cystic_fibrosis", sct("190905008", "Cystic fibrosis"),
        icd("E84.9", "Cystic fibrosis, unspecified"), 0.004, max_age=50,
        exams=(ExamRule("CXR", 1.0, 1, 2), ExamRule("CT_CHEST", 0.6)),
    ),
)
CONDITIONS_BY_KEY = {c.key: c for c in CONDITIONS}


@dataclass(frozen=True)
class ObservationDef:
    code: Code
    unit: str  # UCUM
    category: str  # vital-signs | laboratory


BODY_WEIGHT = ObservationDef(Code(LOINC, "29463-7", "Body weight"), "kg", "vital-signs")
BODY_HEIGHT = ObservationDef(Code(LOINC, "8302-2", "Body height"), "cm", "vital-signs")
BMI = ObservationDef(Code(LOINC, "39156-5", "Body mass index (BMI) [Ratio]"), "kg/m2",
                     "vital-signs")
SYSTOLIC_BP = ObservationDef(Code(LOINC, "8480-6", "Systolic blood pressure"), "mm[Hg]",
                             "vital-signs")
DIASTOLIC_BP = ObservationDef(Code(LOINC, "8462-4", "Diastolic blood pressure"), "mm[Hg]",
                              "vital-signs")
HBA1C = ObservationDef(Code(LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"), "%",
                       "laboratory")

PROCEDURE_CATEGORY_IMAGING = sct("363679005", "Imaging")
PROCEDURE_CATEGORY_SURGICAL = sct("387713003", "Surgical procedure")

# DICOM Body Part Examined (PS3.16 Annex L) and its SNOMED CT body structure.
BODY_SITES: dict[str, Code] = {
    "BRAIN": sct("12738006", "Brain structure"),
    "HEAD": sct("69536005", "Head structure"),
    "CSPINE": sct("122494005", "Cervical spine structure"),
    "CHEST": sct("51185008", "Thoracic structure"),
    "BREAST": sct("76752008", "Breast structure"),
    "HEART": sct("80891009", "Heart structure"),
    "ABDOMEN": sct("113345001", "Abdominal structure"),
    "WHOLEBODY": sct("38266002", "Entire body as a whole"),
}
LATERALITY: dict[str, Code] = {"L": sct("7771000", "Left"), "R": sct("24028007", "Right")}
