# METADATA
# title: Disclosure control of the federated statistics (means to survival curves)
# description: |
#   `data.disclosure.statistics_decision`, input {"tier": "statistics"|"permit", "kind":
#   "mean"|"quantiles"|"histogram"|"table"|"correlation"|"linear"|"logistic"|"survival"}:
#   {"allow", "reason", "min_n", "min_n_per_parameter", "min_level", "max_levels",
#   "min_tail", "min_at_risk", "units", "relative_noise"}, the rules a node applies before
#   it sends its summary of a statistic to the hub (DataSHIELD-like filters):
#   - min_n: the patients with a value at one node (fewer: the node sends nothing);
#   - min_n_per_parameter: a model needs n >= this times its parameters, and n minus the
#     parameters >= min_n (no saturated model);
#   - min_level: each level of a yes/no variable (an outcome, a predictor, a correlation's
#     variable) has at least this many patients at the node, so a coefficient is not one
#     person's value;
#   - max_levels: the most levels a table's rows or columns may have;
#   - min_tail: a quantile p needs n * min(p, 1 - p) >= min_tail at the node (the extreme
#     quantiles of a few patients are their values);
#   - min_at_risk: survival steps with fewer patients at risk at a node are not sent;
#   - units: the survival time units allowed (days single out a date);
#   - relative_noise: the statistics tier's perturbation of continuous summaries (sums,
#     cross-products, event counts), each multiplied by 1 + e, e uniform in
#     [-relative_noise, relative_noise], the same for the same cohort and statistic (the
#     node's record keys, gateway/node/query/perturb.py); 0: exact.
#   Counts shown inside histograms and tables follow output query_count of
#   `data.disclosure.decision` (the counts' threshold and cell-key perturbation).
#   Unknown tiers or kinds are denied.
package disclosure

import rego.v1

statistics_kinds := {"mean", "quantiles", "histogram", "table", "correlation", "linear", "logistic", "survival"}

statistics_rules := {
	"statistics": {
		"min_n": 10,
		"min_n_per_parameter": 10,
		"min_level": 5,
		"max_levels": 12,
		"min_tail": 5,
		"min_at_risk": 10,
		"units": ["week", "month"],
		"relative_noise": 0.02,
	},
	# Members of an active permit see exact statistics (EHDS Art. 68); a model still
	# needs more patients than parameters to be estimable.
	"permit": {
		"min_n": 1,
		"min_n_per_parameter": 1,
		"min_level": 1,
		"max_levels": 50,
		"min_tail": 0,
		"min_at_risk": 1,
		"units": ["day", "week", "month"],
		"relative_noise": 0,
	},
}

statistics_decide(req) := object.union(statistics_rules[req.tier], {
	"allow": true,
	"reason": concat("", ["allowed: ", req.kind, " in tier ", req.tier]),
}) if {
	statistics_rules[req.tier]
	req.kind in statistics_kinds
} else := {"allow": false, "reason": concat("", [
	"denied: no statistics rule for ", to_text(object.get(req, "kind", null)),
	" in tier ", to_text(object.get(req, "tier", null)),
])}

# Fails closed: an input no rule decides on (a missing field, say) is denied.
default statistics_decision := {"allow": false, "reason": "denied: disclosure.statistics_decision has no answer for this input"}

statistics_decision := statistics_decide(input)
