"""Every access is a policy decision, taken by Rego from `policies/`."""

from spe.policy.engine import EmbeddedEngine, OpaEngine, PolicyEngine, PolicyEvaluationError
from spe.policy.service import Decision, PolicyService, make_policy_service
from spe.policy.testing import RegoTestResult, run_rego_tests

__all__ = [
    "Decision",
    "EmbeddedEngine",
    "OpaEngine",
    "PolicyEngine",
    "PolicyEvaluationError",
    "PolicyService",
    "RegoTestResult",
    "make_policy_service",
    "run_rego_tests",
]
