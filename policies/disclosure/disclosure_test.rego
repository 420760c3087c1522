package disclosure_test

import rego.v1

import data.disclosure

test_catalogue_descriptors_suppress_below_ten_unrounded if {
	d := disclosure.decide({"tier": "public", "output": "catalogue_descriptor"})
	d.allow
	d.min_count == 10
	d.rounding == 1
}

test_statistics_counts_suppress_below_ten_and_round_to_five if {
	d := disclosure.decide({"tier": "statistics", "output": "query_count"})
	d.allow
	d.min_count == 10
	d.rounding == 5
}

test_an_output_of_another_tier_is_denied if {
	not disclosure.decide({"tier": "public", "output": "query_count"}).allow
}

test_unknown_or_missing_input_is_denied if {
	not disclosure.decide({"tier": "permit", "output": "catalogue_descriptor"}).allow
	not disclosure.decide({"tier": "admin", "output": "query_count"}).allow
	d := disclosure.decide({})
	not d.allow
	contains(d.reason, "(none)")
}

test_permit_holders_get_exact_counts if {
	d := disclosure.decide({"tier": "permit", "output": "query_count"})
	d.allow
	d.min_count == 0
	d.rounding == 1
}
