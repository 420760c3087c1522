package anonymization_test

import rego.v1

import data.anonymization

permit(status, justified) := {"id": "P-7", "status": status, "pseudonymised_justified": justified}

req(tier, release, p) := {"tier": tier, "release": release, "permit": p}

test_justified_active_permit_inside_is_pseudonymised if {
	d := anonymization.decide(req("permit", false, permit("active", true)))
	d.allow
	d.pseudonymised
	d.layers == ["profile", "pseudonyms", "risk"]
	d.k_min == 5
	contains(d.reason, "P-7")
}

test_unjustified_permit_is_anonymised if {
	d := anonymization.decide(req("permit", false, permit("active", false)))
	d.allow
	not d.pseudonymised
	d.k_min == 5
}

test_release_is_never_pseudonymised if {
	d := anonymization.decide(req("permit", true, permit("active", true)))
	d.allow
	not d.pseudonymised
	d.k_min == 12
	d.max_risk == 0.09
	"output_control" in d.layers
}

test_justification_must_be_true_not_truthy if {
	not anonymization.decide(req("permit", false, permit("active", "yes"))).pseudonymised
}

test_statistics_released_at_public_threshold if {
	d := anonymization.decide(req("statistics", true, null))
	d.allow
	not d.pseudonymised
	d.layers == ["profile", "risk", "output_control"]
	d.k_min == 12
	d.max_risk == 0.09
}

test_public_tier_has_no_record_level_pseudonyms if {
	d := anonymization.decide(req("public", true, null))
	d.allow
	not "pseudonyms" in d.layers
}

test_inside_the_spe_k_is_5 if {
	d := anonymization.decide(req("statistics", false, null))
	d.k_min == 5
	not "output_control" in d.layers
}

test_a_permit_does_not_pseudonymise_outside_tier_permit if {
	not anonymization.decide(req("statistics", false, permit("active", true))).pseudonymised
}

test_missing_release_counts_as_release if {
	d := anonymization.decide({"tier": "permit", "permit": permit("active", true)})
	d.allow
	not d.pseudonymised
	d.k_min == 12
}

test_unknown_tier_is_denied if {
	d := anonymization.decide(req("everything", false, null))
	not d.allow
	contains(d.reason, "unknown tier everything")
}

test_missing_tier_is_denied if {
	not anonymization.decide({"release": false}).allow
}

test_tier_permit_without_permit_is_denied if {
	d := anonymization.decide(req("permit", false, null))
	not d.allow
	contains(d.reason, "needs a data permit")
	not anonymization.decide({"tier": "permit", "release": false}).allow
}

test_inactive_permit_is_denied if {
	d := anonymization.decide(req("permit", false, permit("revoked", true)))
	not d.allow
	contains(d.reason, "P-7")
	contains(d.reason, "revoked")
}

test_a_denial_carries_the_strictest_settings if {
	d := anonymization.decide(req("permit", false, permit("expired", true)))
	not d.pseudonymised
	d.k_min == 12
	d.layers == ["profile", "pseudonyms", "risk", "output_control"]
}
