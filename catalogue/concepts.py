"""What people type, for what the nodes publish: names and synonyms of DICOM modalities and
body parts, and the clinical areas that ICD-10 categories belong to.

The nodes publish codes ("MR", "BRAIN", "C71"); people search "brain MRI", "oncology",
"heart". Each dataset's search document carries the words below for each code it holds
(catalogue.facets.search_document), so a query's words are matched, all of them, across
the dataset's fields by the database's own full text (catalogue.repository.text_match).
"""

from __future__ import annotations

from dataclasses import dataclass

from catalogue import icd10


@dataclass(frozen=True)
class Concept:
    """A code's name for people and the other words it is searched by."""

    name: str
    synonyms: tuple[str, ...] = ()

    def words(self) -> list[str]:
        return [self.name, *self.synonyms]


def _c(name: str, *synonyms: str) -> Concept:
    return Concept(name, synonyms)


#: DICOM Modality (0008,0060), defined terms of PS3.3 C.7.3.1.1.1.
MODALITIES: dict[str, Concept] = {
    "MR": _c("Magnetic resonance", "MRI", "MR imaging", "magnetic resonance imaging",
             "NMR", "fMRI"),
    "CT": _c("Computed tomography", "CT scan", "CAT scan", "computerised tomography",
             "computerized tomography", "scanner"),
    "PT": _c("Positron emission tomography", "PET", "PET scan", "PET-CT",
             "nuclear medicine"),
    "NM": _c("Nuclear medicine", "scintigraphy", "SPECT", "gamma camera"),
    "US": _c("Ultrasound", "ultrasonography", "sonography", "echography",
             "echocardiography", "echo", "doppler"),
    "DX": _c("Digital radiography", "X-ray", "xray", "radiograph", "radiography",
             "plain film"),
    "CR": _c("Computed radiography", "X-ray", "xray", "radiograph", "radiography"),
    "MG": _c("Mammography", "mammogram", "breast screening", "X-ray"),
    "XA": _c("X-ray angiography", "angiography", "angiogram", "catheterisation",
             "fluoroscopy"),
    "RF": _c("Radiofluoroscopy", "fluoroscopy", "X-ray"),
    "ECG": _c("Electrocardiography", "ECG", "EKG", "electrocardiogram"),
    "OCT": _c("Optical coherence tomography", "retina", "ophthalmology"),
    "OP": _c("Ophthalmic photography", "fundus", "retina", "ophthalmology"),
    "SM": _c("Slide microscopy", "whole slide imaging", "digital pathology",
             "histopathology"),
    "IO": _c("Intra-oral radiography", "dental X-ray", "dentistry"),
    "PX": _c("Panoramic X-ray", "dental", "orthopantomogram"),
    "ES": _c("Endoscopy", "endoscope"),
    "XC": _c("External-camera photography", "photograph", "dermatology"),
    "RTSTRUCT": _c("Radiotherapy structure set", "radiotherapy", "radiation therapy"),
    "RTPLAN": _c("Radiotherapy plan", "radiotherapy", "radiation therapy"),
    "RTDOSE": _c("Radiotherapy dose", "radiotherapy", "radiation therapy"),
    "SEG": _c("Segmentation", "annotation", "mask"),
    "SR": _c("Structured report", "report"),
}

#: DICOM Body Part Examined (0018,0015), defined terms of PS3.16 Annex L.
BODY_PARTS: dict[str, Concept] = {
    "BRAIN": _c("Brain", "head", "cerebral", "cranial", "neuroimaging", "neuroradiology",
                "central nervous system"),
    "HEAD": _c("Head", "brain", "skull", "cranial", "neuroimaging"),
    "HEADNECK": _c("Head and neck", "head", "neck", "ENT"),
    "NECK": _c("Neck", "cervical", "thyroid"),
    "CHEST": _c("Chest", "thorax", "thoracic", "lung", "lungs", "pulmonary"),
    "LUNG": _c("Lung", "lungs", "pulmonary", "chest", "thorax"),
    "HEART": _c("Heart", "cardiac", "cardio", "cardiovascular", "coronary"),
    "BREAST": _c("Breast", "mammary"),
    "ABDOMEN": _c("Abdomen", "abdominal", "liver", "kidney", "belly"),
    "PELVIS": _c("Pelvis", "pelvic", "prostate", "bladder", "uterus"),
    "ABDOMENPELVIS": _c("Abdomen and pelvis", "abdomen", "pelvis"),
    "CHESTABDOMEN": _c("Chest and abdomen", "chest", "abdomen", "thorax"),
    "CSPINE": _c("Cervical spine", "spine", "spinal", "neck", "vertebra"),
    "TSPINE": _c("Thoracic spine", "spine", "spinal", "vertebra"),
    "LSPINE": _c("Lumbar spine", "spine", "spinal", "back", "vertebra"),
    "SPINE": _c("Spine", "spinal", "vertebra", "back"),
    "WHOLEBODY": _c("Whole body", "total body", "staging"),
    "EXTREMITY": _c("Extremity", "limb", "arm", "leg"),
    "KNEE": _c("Knee", "joint", "musculoskeletal"),
    "HIP": _c("Hip", "joint", "musculoskeletal"),
    "SHOULDER": _c("Shoulder", "joint", "musculoskeletal"),
    "HAND": _c("Hand", "wrist", "musculoskeletal"),
    "FOOT": _c("Foot", "ankle", "musculoskeletal"),
    "EYE": _c("Eye", "orbit", "ophthalmology", "retina"),
    "LIVER": _c("Liver", "hepatic", "abdomen"),
    "KIDNEY": _c("Kidney", "renal"),
    "PROSTATE": _c("Prostate", "pelvis", "urology"),
}


@dataclass(frozen=True)
class ClinicalArea:
    """A health category people search by, and the ICD-10 categories in it (inclusive
    ranges of three-character codes: ("C00", "D48") is the chapter of neoplasms)."""

    key: str
    concept: Concept
    ranges: tuple[tuple[str, str], ...]

    def holds(self, category: str) -> bool:
        code = category.strip().upper()[:3]
        return any(lo <= code <= hi for lo, hi in self.ranges)


def _area(key: str, ranges: tuple[tuple[str, str], ...], name: str,
          *synonyms: str) -> ClinicalArea:
    return ClinicalArea(key, Concept(name, synonyms), ranges)


#: Clinical areas by ICD-10 chapter or block (WHO ICD-10, 2019). A category may be in
#: more than one: a glioma (C71) is oncology and neurology, a stroke (I63) cardiovascular
#: and neurology, a lung cancer (C34) oncology and respiratory.
CLINICAL_AREAS: tuple[ClinicalArea, ...] = (
    _area("oncology", (("C00", "D48"),), "Oncology", "cancer", "cancers", "tumour",
          "tumours", "tumor", "tumors", "neoplasm", "neoplasms", "malignancy", "carcinoma"),
    _area("neurology", (("G00", "G99"), ("I60", "I69"), ("C70", "C72"), ("D32", "D33"),
                        ("F00", "F03")),
          "Neurology", "neurological", "neuroscience", "nervous system", "brain", "stroke",
          "dementia"),
    _area("mental_health", (("F00", "F99"),), "Mental health", "psychiatry", "psychiatric",
          "neuropsychiatry", "psychology", "behavioural"),
    _area("cardiovascular", (("I00", "I99"),), "Cardiovascular", "cardiology", "cardiac",
          "heart", "circulatory", "vascular"),
    _area("respiratory", (("J00", "J99"), ("C30", "C39"), ("E84", "E84")), "Respiratory",
          "pulmonology", "pulmonary", "lung", "lungs", "chest"),
    _area("endocrine", (("E00", "E90"),), "Endocrinology", "endocrine", "metabolic",
          "metabolism", "diabetes", "hormones"),
    _area("infectious", (("A00", "B99"), ("U07", "U07")), "Infectious diseases",
          "infection", "infectiology"),
    _area("digestive", (("K00", "K93"), ("C15", "C26")), "Gastroenterology", "digestive",
          "gastrointestinal", "bowel", "liver"),
    _area("musculoskeletal", (("M00", "M99"),), "Musculoskeletal", "rheumatology",
          "orthopaedics", "orthopedics", "bone", "joint"),
    _area("renal", (("N00", "N39"),), "Nephrology and urology", "nephrology", "urology",
          "kidney", "renal"),
    _area("reproductive", (("N40", "N99"), ("O00", "O99")), "Reproductive health",
          "obstetrics", "gynaecology", "gynecology", "pregnancy"),
    _area("paediatrics", (("P00", "P96"), ("Q00", "Q99")), "Paediatrics", "pediatrics",
          "neonatology", "congenital", "children"),
    _area("haematology", (("D50", "D89"), ("C81", "C96")), "Haematology", "hematology",
          "blood"),
)


def areas_of(category: str) -> list[ClinicalArea]:
    return [area for area in CLINICAL_AREAS if area.holds(category)]


def area_label(key: str) -> str:
    for area in CLINICAL_AREAS:
        if area.key == key:
            return area.concept.name
    return key


def modality_label(code: str) -> str:
    concept = MODALITIES.get(code.upper())
    return f"{code} {concept.name}" if concept else code


def body_part_label(code: str) -> str:
    concept = BODY_PARTS.get(code.upper())
    return concept.name if concept else code.replace("_", " ").capitalize()


def modality_words(code: str) -> list[str]:
    concept = MODALITIES.get(code.upper())
    return [code, *(concept.words() if concept else [])]


def body_part_words(code: str) -> list[str]:
    concept = BODY_PARTS.get(code.upper())
    return [code, *(concept.words() if concept else [])]


def condition_words(category: str) -> list[str]:
    """An ICD-10 category's code, WHO titles up to its chapter, and its clinical areas."""
    words = [category, *icd10.lineage(category)]
    for area in areas_of(category):
        words += area.concept.words()
    return words


__all__ = ["BODY_PARTS", "CLINICAL_AREAS", "MODALITIES", "ClinicalArea", "Concept",
           "area_label", "areas_of", "body_part_label", "body_part_words",
           "condition_words", "modality_label", "modality_words"]
