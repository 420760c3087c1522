"""spe.policy.disclosure: the counts rule as the repo's policy gives it, and refusals when
a policy denies or answers something unusable (fail closed)."""

from __future__ import annotations

import pytest

from spe.policy import EmbeddedEngine, PolicyService
from spe.policy.disclosure import NoCountRule, count_rule
from spe.settings import REPO_ROOT


class Answering:
    def __init__(self, answer):
        self.answer = answer

    def evaluate(self, path, input):
        return self.answer


def test_the_repo_policy_rules():
    policy = PolicyService(EmbeddedEngine(REPO_ROOT / "policies"))
    statistics = count_rule(policy, "statistics", "query_count")
    assert (statistics.min_count, statistics.rounding) == (10, 1)
    assert statistics.perturbation is not None
    assert statistics.perturbation.as_params() == {
        "method": "cell-key", "max_noise": 5, "variance": 4.0}
    assert count_rule(policy, "permit", "query_count").perturbation is None
    assert count_rule(policy, "public", "catalogue_descriptor", least_min_count=1).min_count == 10
    with pytest.raises(NoCountRule, match="no disclosure rule"):
        count_rule(policy, "public", "query_count")


@pytest.mark.parametrize("answer", [
    {"allow": True, "min_count": "10", "rounding": 5},
    {"allow": True, "min_count": True, "rounding": 5},
    {"allow": True, "min_count": 10, "rounding": 0},
    {"allow": True, "rounding": 5},
    {"allow": True, "min_count": 0, "rounding": 1, "_least": 1},
    {"allow": False, "min_count": 10, "rounding": 5},
    {"allow": True, "min_count": 10, "rounding": 1, "perturbation": "cell-key"},
    {"allow": True, "min_count": 10, "rounding": 1, "perturbation": {"method": "laplace",
                                                                     "max_noise": 5,
                                                                     "variance": 4}},
    {"allow": True, "min_count": 10, "rounding": 1, "perturbation": {"method": "cell-key",
                                                                     "max_noise": 5}},
    {"allow": True, "min_count": 10, "rounding": 1, "perturbation": {"method": "cell-key",
                                                                     "max_noise": 5.5,
                                                                     "variance": 4}},
    {"allow": True, "min_count": 10, "rounding": 1, "perturbation": {"method": "cell-key",
                                                                     "max_noise": 5,
                                                                     "variance": -4}},
    "not an object",
])
def test_unusable_answers_refuse(answer):
    least = answer.pop("_least", 0) if isinstance(answer, dict) else 0
    with pytest.raises(NoCountRule):
        count_rule(PolicyService(Answering(answer)), "statistics", "query_count",
                   least_min_count=least)
