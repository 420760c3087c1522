# METADATA
# title: Statistical disclosure control of what leaves a node
# description: |
#   The smallest count a node may show, the rounding of counts it shows and their
#   perturbation, per tier.
#   Input: {"tier": "public"|"statistics"|"permit", "output": what is being released (e.g.
#   "catalogue_descriptor", "query_count")}.
#   Query `data.disclosure.decision`: {"allow", "reason", "min_count", "rounding",
#   "perturbation"}. Counts below `min_count` are sent as suppressed (never as 0); shown
#   counts are rounded to a multiple of `rounding` (1: exact). ACRO's safe threshold of 10.
#   `perturbation` null: shown as counted (the permit tier). Else {"method": "cell-key",
#   "max_noise": D, "variance": V}: every shown count is n + j, j drawn consistently from
#   the records' keys (gateway/node/query/perturb.py): |j| <= D, mean 0, variance <= V, and
#   n + j never under min_count. The statistics tier: D = 5 keeps every cell of 100 or more
#   within 5% of its count (the target of issue 16); V = 4 (sd 2) makes the difference of
#   two answers that differ by a group of 1 to 3 patients the group's size plus a noise of
#   sd 2.8 spread over [-10, 10], so a differencing pair says nothing exact, and with the
#   same set always answered alike repeating a question gains nothing. Catalogue
#   descriptors are public metadata about a whole dataset and are not rounded: their
#   min_count is protected by complementary suppression and trimmed ranges
#   (gateway/node/descriptor_disclosure.py). Unknown tiers or outputs are denied.
#   Rules are functions of their input so tests call them directly (see policies/authz).
#
#   `data.disclosure.output_check` (input {"output": "job_output"}) gives the airlock's rules
#   for what a job writes (spe/airlock, OutputRules): the smallest count a table may show,
#   N-K dominance and the p-ratio (ACRO's defaults), how zeros are treated, the file types
#   and sizes allowed. Unknown outputs are denied.
package disclosure

import rego.v1

rules := {
	"public": {"catalogue_descriptor": {"min_count": 10, "rounding": 1}},
	"statistics": {"query_count": {
		"min_count": 10, "rounding": 1,
		"perturbation": {"method": "cell-key", "max_noise": 5, "variance": 4},
	}},
	# Members of an active permit see exact counts of the permit's datasets (EHDS Art. 68).
	"permit": {"query_count": {"min_count": 0, "rounding": 1}},
}

decide(req) := {
	"allow": true,
	"reason": concat("", ["allowed: ", req.output, " in tier ", req.tier]),
	"min_count": rules[req.tier][req.output].min_count,
	"rounding": rules[req.tier][req.output].rounding,
	"perturbation": object.get(rules[req.tier][req.output], "perturbation", null),
} if {
	rules[req.tier][req.output]
} else := {"allow": false, "reason": concat("", [
	"denied: no disclosure rule for ", to_text(object.get(req, "output", null)),
	" in tier ", to_text(object.get(req, "tier", null)),
])}

to_text(x) := x if is_string(x)

else := "(none)"

# Fails closed: an input no rule decides on (a missing field, say) is denied.
default decision := {"allow": false, "reason": "denied: disclosure.decision has no answer for this input"}

decision := decide(input)

# The airlock's automatic checks of job outputs (spe/airlock). HTML is left out on purpose:
# plotting exports embed the data behind a chart and can load remote content.
output_rules := {"job_output": {
	"min_count": 10,
	"dominance_n": 2,
	"dominance_k": 0.9,
	"p_ratio": 0.1,
	"zeros": "review",
	"allowed_extensions": ["csv", "tsv", "txt", "md", "json", "png", "svg", "pdf"],
	"max_file_bytes": 20971520,
	"max_total_bytes": 104857600,
	"max_files": 500,
	"max_depth": 4,
	# Many small files are one output: past 50 files all go to review; 10 or more of one
	# shape are checked together and go to review.
	"review_files": 50,
	"same_shape_files": 10,
}}

output_check_for(req) := object.union(
	{"allow": true, "reason": concat("", ["allowed: airlock rules for ", req.output])},
	output_rules[req.output],
) if {
	output_rules[req.output]
} else := {"allow": false, "reason": concat("", [
	"denied: no airlock rule for output ", to_text(object.get(req, "output", null)),
])}

# Fails closed: an input no rule decides on (a missing field, say) is denied.
default output_check := {"allow": false, "reason": "denied: disclosure.output_check has no answer for this input"}

output_check := output_check_for(input)
