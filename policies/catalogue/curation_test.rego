package catalogue.curation_test

import rego.v1

import data.catalogue.curation

req(roles, institution, node) := {
	"subject": {"id": "u", "roles": roles, "institution": institution},
	"dataset": {"identifier": concat("", [node, "/imaging"]), "node_id": node},
}

test_approver_of_the_holder_may_curate if {
	curation.decide(req(["approver"], "site-a", "site-a")).allow
}

test_approver_of_another_institution_may_not if {
	d := curation.decide(req(["approver"], "site-b", "site-a"))
	not d.allow
	contains(d.reason, "approver of site-b")
}

test_hdab_and_admin_may_not_curate if {
	not curation.decide(req(["hdab"], null, "site-a")).allow
	not curation.decide(req(["admin"], null, "site-a")).allow
}

test_researcher_of_the_holder_may_not_curate if {
	not curation.decide(req(["researcher"], "site-a", "site-a")).allow
}

test_approver_without_institution_may_not_curate if {
	not curation.decide(req(["approver"], null, "site-a")).allow
	not curation.decide(req(["approver"], "", "site-a")).allow
}
