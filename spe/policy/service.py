"""Decisions, failing closed: anything but an explicit `allow: true` denies."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from spe.policy.engine import EmbeddedEngine, OpaEngine, PolicyEngine, PolicyEvaluationError
from spe.settings import Settings

log = logging.getLogger("spe.policy")


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str
    policy: str
    error: bool = False
    # The policy's whole answer, for decisions that carry values (thresholds, layers).
    values: dict[str, Any] = field(default_factory=dict)


class PolicyService:
    def __init__(self, engine: PolicyEngine) -> None:
        self.engine = engine

    def decide(self, policy: str, input: dict[str, Any]) -> Decision:
        """Evaluate `data.<policy>`, which must be an object with `allow` (and `reason`)."""
        try:
            result = self.engine.evaluate(policy, input)
        except PolicyEvaluationError as exc:
            log.error("policy %s could not be evaluated, denying: %s", policy, exc)
            return Decision(False, f"policy error, denied: {exc}", policy, error=True)
        except Exception as exc:  # fail closed on anything the engine throws
            log.exception("policy %s crashed, denying", policy)
            return Decision(False, f"policy error, denied: {type(exc).__name__}", policy,
                            error=True)
        if not isinstance(result, dict):
            return Decision(False, "policy returned no decision object, denied", policy,
                            error=True)
        allow = result.get("allow") is True
        reason = result.get("reason")
        if not isinstance(reason, str) or not reason:
            reason = "allowed by policy" if allow else "denied by policy"
        return Decision(allow, reason, policy, values=result)


def make_policy_service(settings: Settings) -> PolicyService:
    if settings.opa_url:
        return PolicyService(OpaEngine(settings.opa_url))
    return PolicyService(EmbeddedEngine(settings.policy_dir))
