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
#   `data.query.node_decision`, input {"tier", "roles", "kind", "used_today"}:
#   {"allow", "reason", "daily_budget", "tracker_window_hours", "tracker_history"}. A node
#   answers the statistics tier within a per-user daily budget of queries, and checks each
#   answer against the user's answers of the last `tracker_window_hours` (at most
#   `tracker_history` of them) for differencing.
#   Rules are functions of their input so tests call them directly (see policies/authz).
package query

import rego.v1

min_sites := 2

budgets := {"statistics": 200}

tracker := {"tracker_window_hours": 24, "tracker_history": 200}

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
} else := {"allow": false, "reason": "denied: permit-tier queries need an active data permit (not yet available)"} if {
	researcher(req.subject)
} else := {"allow": false, "reason": "denied: federated queries are for registered researchers"}

# METADATA
# description: A node's own decision on a query the hub sent it.
node_decide(req) := object.union(tracker, {
	"allow": true, "reason": "allowed: within the daily budget",
	"daily_budget": budgets[req.tier],
}) if {
	"researcher" in req.roles
	req.kind in kinds
	req.used_today < budgets[req.tier]
} else := {"allow": false, "reason": concat("", [
	"denied: daily query budget of ", format_int(budgets[req.tier], 10), " used up",
])} if {
	"researcher" in req.roles
	req.used_today >= budgets[req.tier]
} else := {"allow": false, "reason": "denied: this node answers researchers in the statistics tier only"}

hub_decision := hub_decide(input)

node_decision := node_decide(input)
