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
    `max_noise`, mean 0, variance at most `variance`; of which the part keyed by the
    question as well as the set: at most `question_max_noise`, variance
    `question_variance`."""

    method: str  # "cell-key"
    max_noise: int
    variance: float
    question_max_noise: int = 0
    question_variance: float = 0.0

    def as_params(self) -> dict[str, object]:
        return {"method": self.method, "max_noise": self.max_noise, "variance": self.variance,
                "question_max_noise": self.question_max_noise,
                "question_variance": self.question_variance}


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
    qd, qv = value.get("question_max_noise", 0), value.get("question_variance", 0)
    if not (method in METHODS and _whole(d, 0) and d <= MAX_NOISE_LIMIT  # type: ignore[operator]
            and _variance(v) and _whole(qd, 0) and qd <= d  # type: ignore[operator]
            and _variance(qv) and qv <= v):  # type: ignore[operator]
        raise NoCountRule("the disclosure policy gave no usable perturbation (method "
                          "cell-key, a whole max_noise >= 0, a variance >= 0, question "
                          "parts no larger), denied")
    return Perturbation(method, d, float(v), qd, float(qv))  # type: ignore[arg-type]


def _variance(v: object) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            and v >= 0)


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


class NoStatisticsRule(NoCountRule):
    """The policy gives no usable rule for a statistic: the node sends nothing."""


@dataclass(frozen=True)
class StatisticsRule:
    """`data.disclosure.statistics_decision` (policies/disclosure/statistics.rego)."""

    min_n: int
    min_n_per_parameter: int
    min_level: int
    max_levels: int
    min_tail: int
    min_at_risk: int
    units: tuple[str, ...]
    relative_noise: float  # 0: exact
    reason: str


def statistics_rule(policy: PolicyService, tier: str, kind: str) -> StatisticsRule:
    """The rule for statistic `kind` in `tier`; NoStatisticsRule when denied or incomplete
    (a missing or negative figure, a noise of 1 or more)."""
    decision = policy.decide("disclosure/statistics_decision", {"tier": tier, "kind": kind})
    if not decision.allow:
        raise NoStatisticsRule(decision.reason)
    v = decision.values
    whole = ("min_n", "min_n_per_parameter", "min_level", "max_levels", "min_tail",
             "min_at_risk")
    noise = v.get("relative_noise")
    units = v.get("units")
    if not (all(_whole(v.get(k), 0) for k in whole)
            and isinstance(noise, int | float) and not isinstance(noise, bool)
            and 0 <= noise < 1 and isinstance(units, list)
            and all(isinstance(u, str) for u in units)):
        raise NoStatisticsRule("the disclosure policy gave no usable rule for this "
                               "statistic, denied")
    return StatisticsRule(**{k: v[k] for k in whole}, units=tuple(units),
                          relative_noise=float(noise), reason=decision.reason)


__all__ = ["CountRule", "NoCountRule", "NoStatisticsRule", "Perturbation", "StatisticsRule",
           "count_rule", "statistics_rule"]
