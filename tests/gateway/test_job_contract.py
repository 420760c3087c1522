"""The hub-node job contract (spe.wire.jobs): what a researcher may read of a job is
limited by the schema itself, so an older record's or a misbehaving node's words cannot
pass through the hub."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from gateway.node.jobs.endpoints import status_of
from gateway.node.jobs.models import NodeJob
from spe.wire.jobs import (
    LIMIT_REASONS,
    NOT_TOLD,
    RUNNER_REASONS,
    TAKEN,
    StagingSummary,
    public_reason,
)


def test_only_the_contracts_words_are_passed_on() -> None:
    told = ["", *RUNNER_REASONS, f"{LIMIT_REASONS['memory']}; {TAKEN}",
            "cancelled by carol@http://central.test", "permit revoked"]
    assert len(told) > len(LIMIT_REASONS)
    for reason in told:
        assert public_reason(reason) == reason
    # What earlier versions wrote, or a node could make up.
    withheld = ["exit code 3", "killed: signal 9", "exit code 1 at the memory limit",
                "staging failed: DICOM staging refused: pseudo0000000003.dcm",
                "worker error: KeyError('ABCD2345EFGH6789')", "cancelled by a; 3 patients",
                f"RECORD {{}}; {TAKEN}"]
    assert withheld
    for reason in withheld:
        assert public_reason(reason) == NOT_TOLD


def test_a_node_record_of_an_older_version_is_not_told() -> None:
    now = datetime.now(UTC)
    job = NodeJob(id="j1", pid="P-1", user_id="carol@x", state="failed", entry="main.py",
                  code=b"", limits={}, attempts=1, created_at=now, finished_at=now,
                  log_tail="RECORD pseudo0000000003", reason="exit code 3",
                  result={"sandbox": {"exit_code": 3, "stdout_tail": "x"}})
    status = status_of(job, "site-a", None)
    assert status.reason == NOT_TOLD
    assert "pseudo" not in status.model_dump_json()
    assert '"3"' not in status.model_dump_json()


@pytest.mark.parametrize("field", ["key", "form", "data_version", "staged_at"])
def test_the_staging_summary_carries_words_not_data(field: str) -> None:
    with pytest.raises(ValidationError):
        StagingSummary.model_validate({field: '{"id": "pseudo0000000003", "n": 3}'})
    with pytest.raises(ValidationError):
        StagingSummary.model_validate({field: "x" * 41})
    with pytest.raises(ValidationError):
        StagingSummary.model_validate({"generalised": {"age": 3000}})
