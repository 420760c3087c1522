"""The counts rule of `policies/disclosure` (`data.disclosure.decision`): the smallest
count an output may show, the rounding of shown counts and their perturbation, per tier and
kind of output. Node descriptors and node query answers read it here, so both refuse alike
when the policy denies or answers something unusable (fail closed). The airlock's rules for
job outputs are another query of the same policy (spe.airlock.rules)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from spe.policy.service import PolicyService

METHODS = frozenset({"cell-key"})
MAX_NOISE_LIMIT = 1000


class NoCountRule(Exception):
    """The policy gives no usable rule: nothing may be shown. Carries the reason."""


@dataclass(frozen=True)
class Perturbation:
    """Consistent noise on shown counts (gateway/node/query/perturb.py): |noise| at most
    `max_noise`, mean 0, variance at most `variance`."""

    method: str  # "cell-key"
    max_noise: int
    variance: float

    def as_params(self) -> dict[str, object]:
        return {"method": self.method, "max_noise": self.max_noise, "variance": self.variance}


@dataclass(frozen=True)
class CountRule:
    min_count: int  # counts below are suppressed, never shown as 0
    rounding: int  # shown counts are multiples of this (1: exact)
    reason: str
    perturbation: Perturbation | None = None  # None: shown as counted


def _whole(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _perturbation(value: object) -> Perturbation | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise NoCountRule("the disclosure policy gave a perturbation that is not an object, "
                          "denied")
    method, d, v = value.get("method"), value.get("max_noise"), value.get("variance")
    if not (method in METHODS and _whole(d, 0) and d <= MAX_NOISE_LIMIT  # type: ignore[operator]
            and isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(v) and v >= 0):
        raise NoCountRule("the disclosure policy gave no usable perturbation (method "
                          "cell-key, a whole max_noise >= 0, a variance >= 0), denied")
    return Perturbation(method, d, float(v))  # type: ignore[arg-type]


def count_rule(policy: PolicyService, tier: str, output: str, *,
               least_min_count: int = 0) -> CountRule:
    """The rule for `output` in `tier`; NoCountRule when denied or incomplete (a
    `min_count` under `least_min_count`, a rounding under 1, either missing, or a
    malformed perturbation)."""
    decision = policy.decide("disclosure/decision", {"tier": tier, "output": output})
    if not decision.allow:
        raise NoCountRule(decision.reason)
    min_count = decision.values.get("min_count")
    rounding = decision.values.get("rounding", 1)
    if not (_whole(min_count, least_min_count) and _whole(rounding, 1)):
        raise NoCountRule("the disclosure policy gave no usable min_count or rounding, denied")
    return CountRule(min_count, rounding, decision.reason,
                     _perturbation(decision.values.get("perturbation")))


__all__ = ["CountRule", "NoCountRule", "Perturbation", "count_rule"]
