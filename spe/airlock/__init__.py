"""The airlock: automatic checks of what a job writes before anyone outside sees it.

`check_outputs(output_dir, rules=..., extract_terms=...)` gives an `AirlockReport`: for each
file pass, review or blocked, with reasons that name places (`Place`: rule, line, column)
and never values. Human review of what is not blocked, release and
download are `spe.airlock.review`.
"""

from spe.airlock.checks import check_outputs
from spe.airlock.report import NO_VERDICT, AirlockReport, FileVerdict, Place, Verdict
from spe.airlock.rules import AirlockPolicyError, OutputRules, rules_from_policy
from spe.airlock.tables import dominance_violated, p_ratio_violated
from spe.airlock.terms import ExtractTerms, cached_terms, terms_from_extract

__all__ = [
    "NO_VERDICT",
    "AirlockPolicyError",
    "AirlockReport",
    "ExtractTerms",
    "FileVerdict",
    "OutputRules",
    "Place",
    "Verdict",
    "cached_terms",
    "check_outputs",
    "dominance_violated",
    "p_ratio_violated",
    "rules_from_policy",
    "terms_from_extract",
]
