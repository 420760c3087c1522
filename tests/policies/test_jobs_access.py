"""policies/jobs `access` names the collector the hub signs for (spe.wire.outputs)."""

from __future__ import annotations

from spe.policy import EmbeddedEngine
from spe.settings import REPO_ROOT
from spe.wire.outputs import COLLECTOR, COLLECTOR_ROLE


def test_the_policy_knows_the_hubs_collector():
    engine = EmbeddedEngine(REPO_ROOT / "policies")
    assert engine.evaluate("jobs/collector", {}) == {"id": COLLECTOR, "role": COLLECTOR_ROLE}
