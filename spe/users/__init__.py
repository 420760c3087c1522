"""People known to the central service: one row per (issuer, subject)."""
