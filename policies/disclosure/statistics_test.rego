package disclosure_statistics_test

import rego.v1

import data.disclosure

test_statistics_tier_needs_ten_per_node_and_perturbs if {
	d := disclosure.statistics_decide({"tier": "statistics", "kind": "mean"})
	d.allow
	d.min_n == 10
	d.relative_noise > 0
	not "day" in d.units
}

test_permit_tier_is_exact if {
	d := disclosure.statistics_decide({"tier": "permit", "kind": "logistic"})
	d.allow
	d.relative_noise == 0
	"day" in d.units
}

test_unknown_kind_or_tier_is_denied if {
	not disclosure.statistics_decide({"tier": "statistics", "kind": "count"}).allow
	not disclosure.statistics_decide({"tier": "public", "kind": "mean"}).allow
	d := disclosure.statistics_decide({})
	not d.allow
	contains(d.reason, "(none)")
}
