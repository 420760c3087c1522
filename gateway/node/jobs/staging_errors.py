"""The refusals and failures of staging (gateway/node/jobs/staging.py), apart so that the
retrieval from a PACS (staging_remote.py) raises them without importing staging."""

from __future__ import annotations

from spe.errors import SPEError


class StagingError(SPEError):
    """The extract cannot be staged; `detail` says why. 409 when the request cannot be met
    as things are (permit, policy, sources), 500 when the node failed while building."""

    status_code = 409
    error = "staging_refused"

    def __init__(self, detail: str, *, status_code: int | None = None) -> None:
        super().__init__(detail)
        if status_code is not None:
            self.status_code = status_code
            self.error = "staging_failed" if status_code >= 500 else self.error


class RiskRefused(StagingError):
    """policies/jobs `extract` refuses a job over the staged extract at its risk."""
