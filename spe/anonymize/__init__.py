"""Layered, risk-based anonymisation of DICOM and FHIR (see the README's anonymisation part).

Layer 1, direct identifiers: `spe.anonymize.dicom` applies DICOM PS3.15 Annex E, driven by
the standard's own table; FHIR resources follow a rule file of FHIRPath paths.
Layer 2, pseudonyms: `spe.anonymize.pseudonyms`, keyed per permit.
Layer 3, quasi-identifiers: `spe.anonymize.risk` measures and reduces re-identification risk.
Which layers and thresholds apply is decided by `policies/anonymization`.
"""
