"""The airlock's thresholds: a pydantic model, filled from `policies/disclosure` in service.

Defaults follow the field (ACRO's `safe_threshold` 10, N-K dominance (2, 0.90), p-ratio
0.10) and are the same numbers `data.disclosure.output_check` gives for "job_output".

Allowed types are the ones a person can judge by looking at them: delimited tables, plain
text, Markdown, JSON, and figures as PNG, SVG or PDF. HTML is not allowed: notebook and
plotting exports (Plotly, Bokeh, Altair) embed the whole data behind a chart in the page and
can load remote content, so a reviewer cannot see what leaves. Spreadsheets, archives and
binary formats are opaque and not allowed either.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from spe.policy import PolicyService

DEFAULT_EXTENSIONS = frozenset({"csv", "tsv", "txt", "md", "json", "png", "svg", "pdf"})
MiB = 1024 * 1024


class AirlockPolicyError(Exception):
    """The disclosure policy gave no usable rules for job outputs: nothing is checked."""


class OutputRules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    allowed_extensions: frozenset[str] = DEFAULT_EXTENSIONS
    max_file_bytes: int = Field(20 * MiB, gt=0)
    max_total_bytes: int = Field(100 * MiB, gt=0)
    max_files: int = Field(500, gt=0)
    max_depth: int = Field(4, ge=0)  # directories below the output directory
    # Statistical disclosure control of tables.
    min_count: int = Field(10, ge=1)  # smallest positive count a table may show
    dominance_n: int = Field(2, ge=1)
    dominance_k: float = Field(0.90, gt=0, le=1)
    p_ratio: float = Field(0.10, ge=0, le=1)
    zeros: Literal["allow", "review", "block"] = "review"
    # Many small files are one output: past `review_files` files everything goes to review;
    # `same_shape_files` files of one shape (header, keys, line pattern) are also checked
    # together, as one table, and go to review.
    review_files: int = Field(50, gt=0)
    same_shape_files: int = Field(10, ge=2)

    def public(self) -> dict:
        """The rules as JSON-able data, for the report."""
        data = self.model_dump()
        data["allowed_extensions"] = sorted(self.allowed_extensions)
        return data


def rules_from_policy(policy: PolicyService, output: str = "job_output") -> OutputRules:
    """The rules `policies/disclosure` gives for `output` (fails closed on a denial)."""
    decision = policy.decide("disclosure/output_check", {"output": output})
    if not decision.allow:
        raise AirlockPolicyError(decision.reason)
    values = {k: v for k, v in decision.values.items() if k not in {"allow", "reason"}}
    try:
        return OutputRules(**values)
    except ValueError as exc:
        raise AirlockPolicyError(f"the disclosure policy's output rules are unusable: {exc}")\
            from None
