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

test_permit_tier_is_not_open_yet if {
	not query.hub_decide({"subject": researcher, "permit": {"id": "p1"}}).allow
}

test_node_answers_within_the_budget if {
	d := query.node_decide({"tier": "statistics", "roles": ["researcher"], "kind": "count", "used_today": 199})
	d.allow
	d.daily_budget == 200
	d.tracker_window_hours == 24
}

test_node_refuses_past_the_budget if {
	d := query.node_decide({"tier": "statistics", "roles": ["researcher"], "kind": "count", "used_today": 200})
	not d.allow
	contains(d.reason, "budget of 200")
}

test_node_refuses_unknown_tiers_and_roles if {
	not query.node_decide({"tier": "public", "roles": ["researcher"], "kind": "count", "used_today": 0}).allow
	not query.node_decide({"tier": "statistics", "roles": ["hdab"], "kind": "count", "used_today": 0}).allow
	not query.node_decide({"tier": "statistics", "roles": ["researcher"], "kind": "records", "used_today": 0}).allow
}
