# METADATA
# title: Federated rounds at a node
# description: |
#   A node's own decisions on a round of a federated computation (ComBat harmonisation, a
#   Flower app) the hub sent it under a data permit (gateway/node/federated.py).
#   `data.federated.round`, input {"permit": null | {"id", "known", "usable", "member",
#   "covers_node"} (as for jobs), "limits": {spe.sandbox.Limits fields}, "app", "kind",
#   "privacy": null | {"clip", "noise_multiplier", "delta"}}: {"allow", "reason",
#   "min_patients", "max_epsilon"}. The round's step runs only under a permit this node
#   holds, for a member, within the limits below.
#   `data.federated.gate`, input {"n": patients behind the update, "extract_patients",
#   "epsilon_before": what the permit's earlier rounds spent here, "epsilon_after": with
#   this round, or null without privacy}: {"allow", "reason", "code"}: whether the update
#   may leave for the hub's aggregator (never for the researcher).
#   Rules are functions of their input so tests call them directly (see policies/authz).
package federated

import rego.v1

# The fewest patients behind any update that leaves this node (as the airlock's safe
# threshold, ACRO's safe_threshold: 10).
min_patients := 10

# The most (epsilon at the round's delta) the rounds of one permit may spend here, over
# all its runs that ask for differential privacy.
max_epsilon := 10.0

# Runs without a privacy setting are allowed (their updates still pass the contract and
# the count); an institution that wants noise on every update sets this to true.
require_privacy := false

max_limits := {"wall_seconds": 3600, "memory_mb": 4096, "cpu_seconds": 3600}

apps := {"combat", "flower"}

to_text(x) := x if is_string(x)

else := "(none)"

permit_problem(p) := "no permit: rounds run only under a data permit" if {
	p == null
} else := "is unknown to this node" if {
	not p.known
} else := "is not active (suspended, revoked, expired or not yet started)" if {
	not p.usable
} else := "does not name the caller" if {
	not p.member
} else := "covers no dataset of this node" if {
	not p.covers_node
}

too_high(limits, name) if {
	is_number(limits[name])
	limits[name] > max_limits[name]
}

over_limits(limits) := [name | some name in object.keys(max_limits); too_high(limits, name)]

values := {"min_patients": min_patients, "max_epsilon": max_epsilon}

round_problem(req) := concat("", ["permit ", to_text(object.get(req.permit, "id", null)), " ", permit_problem(req.permit)]) if {
	object.get(req, "permit", null) != null
	permit_problem(req.permit)
} else := "no permit: rounds run only under a data permit" if {
	object.get(req, "permit", null) == null
} else := "unknown application" if {
	not req.app in apps
} else := concat("", ["limits above this node's maximum: ", concat(", ", over_limits(object.get(req, "limits", {})))]) if {
	count(over_limits(object.get(req, "limits", {}))) > 0
} else := "this node requires differential privacy on every update" if {
	require_privacy
	object.get(req, "privacy", null) == null
}

decide_round(req) := object.union(values, {"allow": false, "reason": concat("", ["denied: ", round_problem(req)])}) if {
	round_problem(req)
} else := object.union(values, {"allow": true, "reason": concat("", ["allowed: a round under permit ", req.permit.id])})

default round := {"allow": false, "reason": "denied: federated.round has no answer for this input"}

round := decide_round(input)

gate_problem(req) := "min_patients" if {
	req.n < min_patients
} else := "count" if {
	req.n > req.extract_patients
} else := "budget" if {
	is_number(req.epsilon_after)
	req.epsilon_before + req.epsilon_after > max_epsilon
}

decide_gate(req) := {"allow": false, "code": gate_problem(req), "reason": concat("", ["denied: ", gate_problem(req)])} if {
	gate_problem(req)
} else := {"allow": true, "code": "", "reason": "allowed: the update may leave for the aggregator"} if {
	is_number(req.n)
	is_number(req.extract_patients)
}

default gate := {"allow": false, "code": "policy", "reason": "denied: federated.gate has no answer for this input"}

gate := decide_gate(input)
