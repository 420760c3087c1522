"""Layer 1 for DICOM: PS3.15 Annex E Basic Application Level Confidentiality Profile.

`profile.Deidentifier` applies the standard's Table E.1-1 (`table.py`, generated from the
vendored JSON by `generate_table`) with its options.
"""
