# METADATA
# title: Federated queries
# description: |
#   Two decisions, one at the hub and one at each node (which takes its own, whatever the
#   hub said).
#   `data.query.hub_decision`, input {"subject": {"id", "roles", "institution"},
#   "permit": null | {...}}: {"allow", "reason", "tier", "min_sites"}. A registered
#   researcher without a permit asks in the statistics tier (EHDS Art. 69); below
#   `min_sites` answering nodes the hub gives no total (a lone site's figure would be
#   that site's). The permit tier arrives with data permits.
#   `data.query.node_decision`, input {"tier", "roles", "kind", "used_today", "permit":
#   null | {"id", "known", "usable", "member", "covers_node"}}:
#   {"allow", "reason", "daily_budget"}. A node answers the statistics tier within a
#   per-user daily budget of queries (counted from midnight UTC). Its answers are
#   perturbed consistently (policies/disclosure), so differencing needs no refusal there:
#   the budget bounds how many distinct sets one researcher can average over.
#   Rules are functions of their input so tests call them directly (see policies/authz).
package query

import rego.v1

min_sites := 2

budgets := {"statistics": 200, "permit": 1000}

kinds := {"boolean", "count", "stratified"}

researcher(subject) if "researcher" in subject.roles

# METADATA
# description: The hub's decision: may this user ask, in which tier.
hub_decide(req) := {
	"allow": true, "reason": "allowed: statistics tier (no permit)",
	"tier": "statistics", "min_sites": min_sites,
} if {
	researcher(req.subject)
	req.permit == null
} else := {
	"allow": true, "reason": concat("", ["allowed: permit tier under ", req.permit.id]),
	"tier": "permit", "min_sites": 1,
} if {
	researcher(req.subject)
	req.permit.usable == true
} else := {"allow": false, "reason": "denied: the permit may not be used by this caller now"} if {
	researcher(req.subject)
} else := {"allow": false, "reason": "denied: federated queries are for registered researchers"}

# METADATA
# description: A node's own decision on a query the hub sent it.
node_decide(req) := {"allow": false, "reason": concat("", [
	"denied: permit ", to_text(object.get(req.permit, "id", null)), " ", permit_problem(req.permit),
])} if {
	req.tier == "permit"
	permit_problem(req.permit)
} else := {
	"allow": true, "reason": "allowed: within the daily budget",
	"daily_budget": budgets[req.tier],
} if {
	"researcher" in req.roles
	req.kind in kinds
	req.used_today < budgets[req.tier]
} else := {"allow": false, "reason": concat("", [
	"denied: your daily budget of ", format_int(budgets[req.tier], 10),
	" questions at this node is used up; it resets at midnight UTC",
	" (the budget bounds how many different questions one researcher can average over)",
])} if {
	"researcher" in req.roles
	req.used_today >= budgets[req.tier]
} else := {"allow": false, "reason": "denied: this node answers researchers in the statistics and permit tiers only"}

# Why this node may not answer under the permit it was shown (its own copy decides).
permit_problem(p) := "is unknown to this node" if {
	not p.known
} else := "is not active (suspended, revoked, expired or not yet started)" if {
	not p.usable
} else := "does not name the caller" if {
	not p.member
} else := "covers no dataset of this node" if {
	not p.covers_node
}

to_text(x) := x if is_string(x)

else := "(none)"

# Fails closed: an input no rule decides on (a missing field, say) is denied.
default hub_decision := {"allow": false, "reason": "denied: query.hub_decision has no answer for this input"}

hub_decision := hub_decide(input)

# Fails closed: an input no rule decides on (a missing field, say) is denied.
default node_decision := {"allow": false, "reason": "denied: query.node_decision has no answer for this input"}

node_decision := node_decide(input)
