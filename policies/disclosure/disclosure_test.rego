package disclosure_test

import rego.v1

import data.disclosure

test_catalogue_descriptors_suppress_below_ten_unrounded if {
	d := disclosure.decide({"tier": "public", "output": "catalogue_descriptor"})
	d.allow
	d.min_count == 10
	d.rounding == 1
}

test_statistics_counts_suppress_below_ten_and_are_perturbed_by_cell_key if {
	d := disclosure.decide({"tier": "statistics", "output": "query_count"})
	d.allow
	d.min_count == 10
	d.rounding == 1
	d.perturbation.method == "cell-key"
	d.perturbation.max_noise == 5
	d.perturbation.variance == 4
}

# A cell of 100 or more is shown within 5% of its count: max_noise / 100 <= 0.05.
test_statistics_noise_keeps_cells_of_100_within_five_percent if {
	d := disclosure.decide({"tier": "statistics", "output": "query_count"})
	d.perturbation.max_noise / 100 <= 0.05
}

# Differencing a group of 1 to 3 is not exact: two independent noises of this variance.
test_statistics_noise_hides_a_group_of_three if {
	d := disclosure.decide({"tier": "statistics", "output": "query_count"})
	d.perturbation.max_noise >= 3
	d.perturbation.variance >= 2
}

test_catalogue_descriptors_are_not_perturbed if {
	d := disclosure.decide({"tier": "public", "output": "catalogue_descriptor"})
	d.perturbation == null
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
	d.perturbation == null
}

test_job_outputs_follow_acro_defaults if {
	d := disclosure.output_check_for({"output": "job_output"})
	d.allow
	d.min_count == 10
	d.dominance_n == 2
	d.dominance_k == 0.9
	d.p_ratio == 0.1
	d.zeros == "review"
	d.review_files == 50
	d.same_shape_files == 10
}

test_job_outputs_allow_no_html_nor_record_level_types if {
	exts := {e | some e in disclosure.output_check_for({"output": "job_output"}).allowed_extensions}
	"csv" in exts
	"png" in exts
	not "html" in exts
	not "ndjson" in exts
	not "dcm" in exts
}

test_an_unknown_output_has_no_airlock_rules if {
	not disclosure.output_check_for({"output": "query_count"}).allow
	d := disclosure.output_check_for({})
	not d.allow
	contains(d.reason, "(none)")
}
