package query_test

import rego.v1

import data.query

researcher := {"id": "r", "roles": ["researcher"], "institution": null}

test_researcher_without_permit_asks_in_the_statistics_tier if {
	d := query.hub_decide({"subject": researcher, "permit": null})
	d.allow
	d.tier == "statistics"
	d.min_sites == 2
}

test_other_roles_may_not_ask if {
	not query.hub_decide({"subject": {"id": "h", "roles": ["hdab"]}, "permit": null}).allow
	not query.hub_decide({"subject": {"id": "a", "roles": ["approver"], "institution": "x"}, "permit": null}).allow
}

test_a_usable_permit_opens_the_permit_tier if {
	d := query.hub_decide({"subject": researcher, "permit": {"id": "p1", "usable": true}})
	d.allow
	d.tier == "permit"
}

test_an_unusable_permit_is_refused_at_the_hub if {
	not query.hub_decide({"subject": researcher, "permit": {"id": "p1", "usable": false}}).allow
}

good_permit := {"id": "p1", "known": true, "usable": true, "member": true, "covers_node": true}

test_node_answers_under_its_own_copy_of_the_permit if {
	query.node_decide({"tier": "permit", "roles": ["researcher"], "kind": "count", "used_today": 0, "permit": good_permit}).allow
}

test_node_refuses_a_permit_it_does_not_hold_or_that_is_revoked if {
	d1 := query.node_decide({"tier": "permit", "roles": ["researcher"], "kind": "count", "used_today": 0, "permit": object.union(good_permit, {"known": false})})
	not d1.allow
	contains(d1.reason, "unknown")
	d2 := query.node_decide({"tier": "permit", "roles": ["researcher"], "kind": "count", "used_today": 0, "permit": object.union(good_permit, {"usable": false})})
	not d2.allow
	contains(d2.reason, "not active")
}

test_node_refuses_a_non_member_or_an_uncovered_node if {
	d1 := query.node_decide({"tier": "permit", "roles": ["researcher"], "kind": "count", "used_today": 0, "permit": object.union(good_permit, {"member": false})})
	contains(d1.reason, "does not name")
	d2 := query.node_decide({"tier": "permit", "roles": ["researcher"], "kind": "count", "used_today": 0, "permit": object.union(good_permit, {"covers_node": false})})
	contains(d2.reason, "covers no dataset")
}

test_node_answers_within_the_budget if {
	d := query.node_decide({"tier": "statistics", "roles": ["researcher"], "kind": "count", "used_today": 199})
	d.allow
	d.daily_budget == 200
}

test_node_refuses_past_the_budget if {
	d := query.node_decide({"tier": "statistics", "roles": ["researcher"], "kind": "count", "used_today": 200})
	not d.allow
	contains(d.reason, "budget of 200")
	contains(d.reason, "resets at midnight UTC")
}

test_node_refuses_unknown_tiers_and_roles if {
	not query.node_decide({"tier": "public", "roles": ["researcher"], "kind": "count", "used_today": 0}).allow
	not query.node_decide({"tier": "statistics", "roles": ["hdab"], "kind": "count", "used_today": 0}).allow
	not query.node_decide({"tier": "statistics", "roles": ["researcher"], "kind": "records", "used_today": 0}).allow
}
