"""IRIs and defaults of the catalogue's metadata (HealthDCAT-AP, DCAT-AP, DPV, EU authorities).

Defaults fill a dataset's curated fields on its first harvest; people at the centre replace
them. Placeholders are marked as such.
"""

from __future__ import annotations

# EU Publications Office authority tables.
ACCESS_RIGHTS = "http://publications.europa.eu/resource/authority/access-right/"
DATA_THEME_HEALTH = "http://publications.europa.eu/resource/authority/data-theme/HEAL"
# Regulation (EU) 2025/327 on the European Health Data Space, by its ELI.
EHDS_REGULATION = "http://data.europa.eu/eli/reg/2025/327/oj"
# DCMI type vocabulary: the dataset's nature (DCAT-AP's own dataset-type table has no
# clinical entry yet).
DCMI_DATASET = "http://purl.org/dc/dcmitype/Dataset"
# DPV: purpose (EHDS Art. 53(1)(e) scientific research) and legal basis (GDPR Art. 9(2)(j)).
DPV_RESEARCH = "https://w3id.org/dpv#ResearchAndDevelopment"
GDPR_A9_2_J = "https://w3id.org/dpv/legal/eu/gdpr#A9-2-j"
# EHDS Art. 51 categories. PLACEHOLDER namespace: HealthDCAT-AP's controlled vocabulary of
# health categories is not published yet; replace the namespace when it is.
HEALTH_CATEGORY = "https://w3id.org/ehds-spe/health-category/"
HEALTH_CATEGORY_EHR = HEALTH_CATEGORY + "EHR"
HEALTH_CATEGORY_IMAGING = HEALTH_CATEGORY + "MEDICAL_IMAGING"
HEALTH_CATEGORY_LABELS = {
    HEALTH_CATEGORY_EHR: "Electronic health records",
    HEALTH_CATEGORY_IMAGING: "Medical imaging",
    HEALTH_CATEGORY + "REGISTRY": "Registries",
    HEALTH_CATEGORY + "GENOMICS": "Genomic data",
    HEALTH_CATEGORY + "ADMINISTRATIVE": "Healthcare administrative data",
}


def label_of(iri: str) -> str:
    """A person's name for a vocabulary IRI: the known label, else the IRI's last part."""
    if iri in HEALTH_CATEGORY_LABELS:
        return HEALTH_CATEGORY_LABELS[iri]
    tail = iri.rstrip("/#").rsplit("/", 1)[-1].rsplit("#", 1)[-1]
    return tail.replace("_", " ").capitalize() or iri

DEFAULT_KEYWORDS = ["medical imaging", "DICOM", "electronic health records", "HL7 FHIR"]
# PLACEHOLDER contacts (the reserved .invalid domain): curated per institution.
DEFAULT_HDAB_NAME = "Health data access body"
DEFAULT_HDAB_EMAIL = "hdab@hdab.invalid"


def default_contact_email(node_id: str) -> str:
    return f"data-holder@{node_id}.invalid"
