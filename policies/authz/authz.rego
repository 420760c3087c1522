# METADATA
# title: Endpoint authorisation
# description: |
#   Which role may call which endpoint of the central service and of an institution node.
#   Input: {"service": "central"|"node", "method", "route" (the route template),
#   "subject": {"id", "roles", "institution"}}. Query `data.authz.decision`.
#   Tier, permit and dataset checks are separate policies; this one only gates the door.
#   Rules are functions of their input so tests call them directly: the embedded engine
#   (regopy) cannot evaluate built-ins under `with input as`, and its sprintf quotes
#   strings returned by functions, so reasons are built with concat.
package authz

import rego.v1

# Endpoints any authenticated user may call, whatever their role.
open_to_authenticated := {
	# The analysis environments a job may name, with their packages: for signed-in users
	# only, since a list of exact versions is also a list of what is known to be exploitable.
	"central": {"GET /api/v1/me", "GET /api/v1/permits", "GET /api/v1/permits/{pid}", "GET /api/v1/notifications", "GET /api/v1/environments"},
	"node": set(),
}

# Endpoint -> roles that may call it.
permissions := {
	"central": {
		"GET /api/v1/audit": {"admin"},
		"GET /api/v1/audit/verify": {"admin"},
		"GET /api/v1/users": {"admin"},
		# Suspending or reinstating a user (spe/users/suspensions.py).
		"PUT /api/v1/users/{uid}/suspension": {"admin"},
		# The federation's institutions, added and removed at the running centre
		# (gateway/hub/membership).
		"GET /api/v1/federation/nodes": {"admin"},
		"POST /api/v1/federation/nodes": {"admin"},
		"DELETE /api/v1/federation/nodes/{node_id}": {"admin"},
		# Curating a catalogue dataset (reading the catalogue is public: no door at all);
		# which approver may curate which dataset is policies/catalogue/curation.
		"PATCH /api/v1/catalogue/datasets/{identifier:path}": {"approver"},
		# The harvest's state (node URLs, failure reasons) and starting a round now.
		"GET /api/v1/catalogue/harvest": {"hdab", "admin"},
		"POST /api/v1/catalogue/harvest": {"hdab", "admin"},
		# Federated queries; tiers and budgets are policies/query's (hub and node).
		"POST /api/v1/query": {"researcher"},
		"GET /api/v1/beacon/individuals": {"researcher"},
		"POST /api/v1/beacon/individuals": {"researcher"},
		# Data permits; who may do what to which permit is policies/permits'.
		"POST /api/v1/permits": {"researcher"},
		"PATCH /api/v1/permits/{pid}": {"researcher"},
		"POST /api/v1/permits/{pid}/submit": {"researcher"},
		"POST /api/v1/permits/{pid}/amendments": {"researcher"},
		"POST /api/v1/permits/{pid}/reviews": {"approver"},
		"POST /api/v1/permits/{pid}/{action}": {"hdab"},
		# The airlock; who may review or download which request is policies/airlock'.
		"GET /api/v1/airlock/requests": {"output_checker", "researcher"},
		"GET /api/v1/airlock/requests/{rid}": {"output_checker", "researcher"},
		"POST /api/v1/airlock/requests/{rid}/reviews": {"output_checker"},
		"GET /api/v1/airlock/requests/{rid}/files/{path:path}": {"researcher"},
		"GET /api/v1/airlock/requests/{rid}/inspect/{path:path}": {"output_checker"},
		# Jobs under a data permit, sent to the nodes; whose permit and whose job is checked
		# by policies/permits (use) and by the hub's job service.
		"POST /api/v1/jobs": {"researcher"},
		"GET /api/v1/jobs": {"researcher"},
		"GET /api/v1/jobs/{job_id}": {"researcher", "output_checker", "admin"},
		"GET /api/v1/jobs/{job_id}/outputs": {"researcher", "output_checker", "admin"},
		"POST /api/v1/jobs/{job_id}/cancel": {"researcher"},
		# Institutions vetting job code; which approver reviews which code is
		# policies/jobs' code_review_access (at the hub and again at the node).
		"GET /api/v1/code-reviews": {"approver"},
		"GET /api/v1/code-reviews/{node_id}/{pid}/{sha256}": {"approver"},
		"POST /api/v1/code-reviews/{node_id}/{pid}/{sha256}": {"approver"},
		# GA4GH TES: a task is a job (gateway/hub/tes.py), so the same roles.
		"POST /ga4gh/tes/v1/tasks": {"researcher"},
		"GET /ga4gh/tes/v1/tasks": {"researcher"},
		"GET /ga4gh/tes/v1/tasks/{id}": {"researcher", "output_checker", "admin"},
		"POST /ga4gh/tes/v1/tasks/{id}:cancel": {"researcher"},
		# Five Safes RO-Crates: a job sent as a request crate; a job's result crate.
		"POST /api/v1/jobs/crate": {"researcher"},
		"GET /api/v1/jobs/{job_id}/crate": {"researcher", "output_checker", "admin"},
		# Federated runs in rounds (ComBat, Flower) under a data permit: as jobs.
		"POST /api/v1/fed/runs": {"researcher"},
		"GET /api/v1/fed/runs": {"researcher"},
		"GET /api/v1/fed/runs/{run_id}": {"researcher", "output_checker", "admin"},
		"GET /api/v1/fed/runs/{run_id}/outputs": {"researcher", "output_checker", "admin"},
		"POST /api/v1/fed/runs/{run_id}/cancel": {"researcher"},
	},
	"node": {
		"GET /api/v1/index/summary": {"admin", "hdab"},
		# Dataset descriptors (small counts suppressed) for the central catalogue's harvest.
		"GET /api/v1/descriptors": {"admin", "hdab"},
		"GET /api/v1/audit": {"admin"},
		"GET /api/v1/audit/verify": {"admin"},
	},
}

endpoint(req) := concat(" ", [req.method, req.route])

known(req) if endpoint(req) in open_to_authenticated[req.service]

known(req) if permissions[req.service][endpoint(req)]

# METADATA
# description: Any authenticated user with at least one role may call an open endpoint.
allowed(req) if {
	count(req.subject.roles) > 0
	endpoint(req) in open_to_authenticated[req.service]
}

# METADATA
# description: A caller with one of the endpoint's roles may call it.
allowed(req) if {
	some role in req.subject.roles
	role in permissions[req.service][endpoint(req)]
}

# METADATA
# description: The decision object, {"allow": bool, "reason": string}; denies by default.
decide(req) := {"allow": true, "reason": concat("", ["allowed: ", endpoint(req), " on ", req.service])} if {
	allowed(req)
} else := {"allow": false, "reason": concat("", [
	"denied: roles [", concat(", ", req.subject.roles), "] may not call ", endpoint(req), " on ", req.service,
])} if {
	known(req)
} else := {"allow": false, "reason": concat("", ["denied: ", endpoint(req), " is not a known endpoint of ", req.service])}

# Fails closed: an input no rule decides on (a missing field, say) is denied.
default decision := {"allow": false, "reason": "denied: authz.decision has no answer for this input"}

decision := decide(input)
