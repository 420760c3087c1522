# METADATA
# title: Jobs at a node
# description: |
#   A node's own decision on a job the hub sent it under a data permit.
#   `data.jobs.decision`, input {"permit": null | {"id", "known", "usable", "member",
#   "covers_node"} (the node's own copy of the permit), "limits": {spe.sandbox.Limits
#   fields}, "environment": the analysis environment the job names, "installed": the
#   environments this node has built, "node": {"id", "code_review": the operator's
#   setting or null, "registry": [approved SHA-256s]}, "code": {"sha256", "approval":
#   this permit's decision on this code, "approve"|"reject"|null}}: {"allow", "reason",
#   "max_limits", "code_review", "hold"}. The node runs only jobs under a permit it holds,
#   that is issued and within its dates, names the caller and covers one of its datasets;
#   only within the limits below (the sandbox's own caps are higher); only in an analysis
#   environment it allows and has installed; and only code its institution vetted when
#   its `code_review` says so (below). `hold`: accept the job but keep it from the
#   workers until the institution's approvers approve its code.
#   Rules are functions of their input so tests call them directly (see policies/authz).
package jobs

import rego.v1

# The most a job may ask for at this node.
max_limits := {"wall_seconds": 3600, "memory_mb": 4096, "cpu_seconds": 3600}

to_text(x) := x if is_string(x)

else := "(none)"

# Why this node may not run a job under the permit it was shown.
permit_problem(p) := "no permit: jobs run only under a data permit" if {
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

# The limits asked for above this node's maximum, as "name > max" texts.
limit_names := ["cpu_seconds", "memory_mb", "wall_seconds"]

over_text(name, value) := concat("", [name, " ", format_int(value, 10), " > ", format_int(max_limits[name], 10)])

too_high(limits, name) if {
	is_number(limits[name])
	limits[name] > max_limits[name]
}

over_limits(limits) := [over_text(name, limits[name]) | some name in limit_names; too_high(limits, name)]

# The analysis environments (spe/sandbox/environments.py; deploy/analysis/<name>) a job may
# name at this node. An institution removes one it does not want its data analysed with,
# or adds one it has reviewed and built.
allowed_environments := {"statistics", "imaging"}

sorted_text(names) := concat(", ", sort([n | some n in names]))

# Why this node may not run a job in the environment it names; a name that is not a
# string, or an "installed" that is not a list, is a problem too (fail closed).
environment_problem(req) := "no analysis environment named" if {
	not is_string(object.get(req, "environment", null))
} else := concat("", [
	"analysis environment \"", req.environment, "\" is not allowed at this node (allowed: ",
	sorted_text(allowed_environments), ")",
]) if {
	not req.environment in allowed_environments
} else := concat("", [
	"analysis environment \"", req.environment, "\" is not installed at this node (installed: ",
	sorted_text(installed_allowed(req)), ")",
]) if {
	not environment_installed(req)
}

environment_installed(req) if {
	is_array(req.installed)
	req.environment in req.installed
}

installed_allowed(req) := {n | some n in object.get(req, "installed", []); n in allowed_environments} if {
	is_array(object.get(req, "installed", null))
} else := set()

# METADATA
# description: The node's decision on one job.
decide(req) := {"allow": false, "reason": "denied: no permit: jobs run only under a data permit", "max_limits": max_limits} if {
	object.get(req, "permit", null) == null
} else := {"allow": false, "reason": concat("", [
	"denied: permit ", to_text(object.get(req.permit, "id", null)), " ", permit_problem(req.permit),
]), "max_limits": max_limits} if {
	permit_problem(req.permit)
} else := {"allow": false, "reason": concat("", [
	"denied: limits above this node's maximum: ", concat(", ", over_limits(object.get(req, "limits", {}))),
]), "max_limits": max_limits} if {
	count(over_limits(object.get(req, "limits", {}))) > 0
} else := {"allow": false, "reason": concat("", ["denied: ", environment_problem(req)]), "max_limits": max_limits} if {
	environment_problem(req)
} else := object.union(review_decision(req), {"max_limits": max_limits})

# Fails closed: an input no rule decides on (a missing field, say) is denied.
default decision := {"allow": false, "reason": "denied: jobs.decision has no answer for this input"}

decision := decide(input)

# ---- who may read, cancel or collect a job ------------------------------------------
# `data.jobs.access`, input {"action": "read"|"cancel"|"collect", "subject": {"id",
# "roles"}, "job": {"user_id", "pid"}, "permit": the permit the hub's context names, or
# null (at the centre)}: {"allow", "reason"}. The researcher who sent a job reads and
# cancels it. Output checkers and admins read it too (state, staging report, screened
# log and the automatic verdicts: what a reviewer weighs beside the outputs), never
# cancel it. Only the central airlock's collector (`hub:airlock`, role `airlock`)
# collects outputs; nobody else, not even the job's own user, takes them from a node.
# Action "outputs" (at the centre only): the job's airlock requests, to download what was
# released. The job's user and the readers above, and any member of the job's permit
# (input "member": true, as the hub's permit says), since policies/airlock lets a member
# download a released output of the permit's jobs.

collector := {"id": "hub:airlock", "role": "airlock"}

job_readers := {"output_checker", "admin"}

owns(req) if req.subject.id == req.job.user_id

is_collector(req) if {
	req.subject.id == collector.id
	collector.role in req.subject.roles
}

reads_for_review(req) if {
	some role in req.subject.roles
	role in job_readers
}

access_problem(req) := "the job runs under another permit" if {
	object.get(req, "permit", null) != null
	req.permit != req.job.pid
} else := "only the central airlock collects a job's outputs" if {
	req.action == "collect"
	not is_collector(req)
} else := "the job is another user's" if {
	req.action == "read"
	not owns(req)
	not reads_for_review(req)
	not is_collector(req)
} else := "only the job's user, a member of its permit or an output checker reads its outputs" if {
	req.action == "outputs"
	not owns(req)
	not reads_for_review(req)
	not object.get(req, "member", false) == true
} else := "only the job's own user cancels it" if {
	req.action == "cancel"
	not owns(req)
} else := "unknown action" if {
	not req.action in {"read", "cancel", "collect", "outputs"}
}

# METADATA
# description: Whether the subject may do the action to the job.
decide_access(req) := {"allow": false, "reason": concat("", ["denied: ", access_problem(req)])} if {
	access_problem(req)
} else := {"allow": true, "reason": concat("", ["allowed: ", req.action, " job"])}

# Fails closed: an input no rule decides on (a missing field, say) is denied.
default access := {"allow": false, "reason": "denied: jobs.access has no answer for this input"}

access := decide_access(input)

# ---- may a job run over its staged extract ------------------------------------------
# `data.jobs.extract`, input {"risk": the staging report's risk figures ({"measured",
# "ok", "k", "k_wanted", "reason"}), "layers": the layers applied}: {"allow", "reason"}.
# Staging generalises and suppresses until policies/anonymization's threshold holds (see
# gateway/node/jobs/staging.py), so an extract misses it only when its risk could not be
# measured (no patients, unreadable FHIR) or not reduced.
# Such an extract is refused (fail closed); an institution that accepts it inside the SPE,
# where only checked outputs leave, sets `accept_risk_above_threshold` to true.

accept_risk_above_threshold := false

risk_text(r) := concat("", ["k=", format_int(r.k, 10), " < ", format_int(r.k_wanted, 10)]) if {
	is_number(r.k)
	is_number(r.k_wanted)
} else := to_text(object.get(r, "reason", null))

decide_extract(req) := extract_decision(req, accept_risk_above_threshold)

extract_decision(req, accept) := {"allow": true, "reason": "allowed: the extract is within the risk threshold"} if {
	req.risk.ok == true
} else := {"allow": true, "reason": "allowed: the policy does not ask for the risk layer"} if {
	is_array(req.layers)
	not "risk" in req.layers
} else := {"allow": true, "reason": concat("", [
	"allowed: the extract's re-identification risk is above the threshold (",
	risk_text(req.risk), "); accepted inside the SPE, where only checked outputs leave",
])} if {
	accept == true
} else := {"allow": false, "reason": concat("", [
	"denied: the extract's re-identification risk is above the threshold (", risk_text(req.risk), ")",
])}

# Fails closed: an input no rule decides on (a missing field, say) is denied.
default extract := {"allow": false, "reason": "denied: jobs.extract has no answer for this input"}

extract := decide_extract(input)

# ---- code the institution vets ------------------------------------------------------
# Whether this institution wants a job's code vetted before it runs here:
#   "none": any code the permit allows runs;
#   "approval": the institution's approvers approve each code (by its SHA-256) for the
#     permit first; a job with code not yet decided is held, a rejected code refused;
#   "registry": only code whose SHA-256 is in the node's registry of approved analyses.
# The operator chooses per node (SPE_NODE_CODE_REVIEW, passed in input.node.code_review);
# without a setting, `code_review_default` below, which an institution's own bundle may
# change. An unknown mode refuses every job (fail closed).
code_review_default := "none"

review_modes := {"none", "approval", "registry"}

code_review_of(req) := mode if {
	mode := object.get(object.get(req, "node", {}), "code_review", null)
	mode != null
} else := code_review_default

node_name(req) := to_text(object.get(object.get(req, "node", {}), "id", null))

code_text(req) := concat("", ["the code (sha256 ", to_text(object.get(object.get(req, "code", {}), "sha256", null)), ")"])

registered(req) if {
	sha := req.code.sha256
	is_string(sha)
	some listed in req.node.registry
	listed == sha
}

allowed_text(req) := concat("", ["allowed: under permit ", req.permit.id, " in analysis environment ", req.environment])

approval_of(req) := object.get(object.get(req, "code", {}), "approval", null)

review_decision(req) := {"allow": false, "hold": false, "code_review": to_text(code_review_of(req)), "reason": concat("", [
	"denied: the node's code review setting ", to_text(code_review_of(req)),
	" is not one of none, approval, registry",
])} if {
	not code_review_of(req) in review_modes
} else := {"allow": true, "hold": false, "code_review": "none", "reason": allowed_text(req)} if {
	code_review_of(req) == "none"
} else := {"allow": true, "hold": false, "code_review": "registry", "reason": concat("", [
	allowed_text(req), "; ", code_text(req), " is in ", node_name(req), "'s registry of approved analyses",
])} if {
	code_review_of(req) == "registry"
	registered(req)
} else := {"allow": false, "hold": false, "code_review": "registry", "reason": concat("", [
	"denied: ", code_text(req), " is not in ", node_name(req), "'s registry of approved analyses",
])} if {
	code_review_of(req) == "registry"
} else := {"allow": true, "hold": false, "code_review": "approval", "reason": concat("", [
	allowed_text(req), "; ", code_text(req), " was approved by ", node_name(req), "'s approvers",
])} if {
	approval_of(req) == "approve"
} else := {"allow": false, "hold": false, "code_review": "approval", "reason": concat("", [
	"denied: ", code_text(req), " was rejected by ", node_name(req), "'s approvers; change the code to ask again",
])} if {
	approval_of(req) == "reject"
} else := {"allow": true, "hold": true, "code_review": "approval", "reason": concat("", [
	"held: ", code_text(req), " awaits approval by ", node_name(req), "'s approvers",
])} if {
	code_review_of(req) == "approval"
}

# ---- who reviews code at a node -----------------------------------------------------
# `data.jobs.code_review_access`, input {"action": "list"|"read"|"decide", "subject":
# {"id", "roles", "institution"}, "node": this node's id, "members": the permit's members
# (the node's copy; [] for "list"), "researchers": who sent the held jobs}: {"allow",
# "reason"}. Only an approver of this very institution reviews code here (as only an
# institution's approvers review a permit for it); nobody reviews their own code, nor
# code under a permit they are named on.

review_problem(req) := "only an approver reviews code" if {
	not "approver" in req.subject.roles
} else := concat("", ["only ", to_text(req.node), "'s approvers review code there"]) if {
	object.get(req.subject, "institution", null) != req.node
} else := "nobody reviews their own code" if {
	req.subject.id in object.get(req, "researchers", [])
} else := "nobody reviews the code of a permit they are named on" if {
	req.subject.id in object.get(req, "members", [])
} else := "unknown action" if {
	not req.action in {"list", "read", "decide"}
}

decide_review_access(req) := {"allow": false, "reason": concat("", ["denied: ", review_problem(req)])} if {
	review_problem(req)
} else := {"allow": true, "reason": concat("", ["allowed: ", req.action, " code for review at ", req.node])}

# Fails closed: an input no rule decides on (a missing field, say) is denied.
default code_review_access := {"allow": false, "reason": "denied: jobs.code_review_access has no answer for this input"}

code_review_access := decide_review_access(input)
