# METADATA
# title: The airlock's human review, release and download (EHDS Art. 73)
# description: |
#   What leaves the secure processing environment, after the automatic checks
#   (spe/airlock). One request per job, a section per site. Input: {"action": "submit"|
#   "view"|"review"|"release"|"reject"|"close"|"download"|"inspect"|"withhold", "subject":
#   {"id", "roles", "institution"}, "request": {"state" (pending, released, rejected,
#   withheld, closed), "requester", "reviews": [{"reviewer", "decision": "approve"|
#   "reject"}] (the current round's: a site's outputs arriving later void earlier ones),
#   "awaiting" (count of the job's sites whose outputs are still to come),
#   "report_reasons" (count of report-wide blocking reasons, e.g. total size), "files":
#   [{"path", "node_id", "verdict", "stored"}]}, "permit":
#   {"status" (effective, see policies/permits), "members" (user ids, applicant included)},
#   "file": {"path", "verdict", "stored", "reasons"} (download and inspect only)}.
#   Only the hub's collector submits a job's outputs, of a permit the centre knows and
#   whose members include the job's user (a stopped permit's are withheld at once).
#   Output checkers inspect the stored files of a pending request they may review.
#   Two different output checkers, neither the requester nor anyone named on the permit,
#   must approve; any reject rejects; nothing is released while a site is awaited. A
#   pending request that kept no file (every one blocked by the automatic checks), with no
#   site awaited, is closed at once: nobody reviews it, nothing leaves, and the requester
#   reads the reasons. Only the requester or a member downloads, only a
#   released request's stored files, only while the permit is not suspended or revoked.
#   Query `data.airlock.decision`: {"allow", "reason", "status"} (403 who, 409 state).
#   Rules are functions of their input so tests call them directly (see policies/authz).
package airlock

import rego.v1

approvals_needed := 2

stopped := {"suspended", "revoked", "missing"} # missing: no such permit at the centre

checker(req) if "output_checker" in req.subject.roles

# The hub's collector of job outputs (spe.wire.outputs); no user holds its role.
collector(req) if {
	req.subject.id == "hub:airlock"
	"airlock" in req.subject.roles
}

requester(req) if req.subject.id == req.request.requester

member(req) if req.subject.id in req.permit.members

party(req) if requester(req)

party(req) if member(req)

approvers(req) := {r.reviewer | some r in req.request.reviews; r.decision == "approve"}

rejected(req) if {
	some r in req.request.reviews
	r.decision == "reject"
}

reviewed_by_subject(req) if {
	some r in req.request.reviews
	r.reviewer == req.subject.id
}

kept_a_file(req) if {
	some f in req.request.files
	f.stored
}

awaited(req) := object.get(req.request, "awaiting", 0)

stored_blocked(req) if {
	some f in req.request.files
	f.stored
	f.verdict == "blocked"
}

released_file(req) if {
	req.file.stored == true
	req.file.verdict != "blocked"
}

allow(reason) := {"allow": true, "reason": concat("", ["allowed: ", reason]), "status": 200}

deny(code, reason) := {"allow": false, "reason": concat("", ["denied: ", reason]), "status": code}

# ---- an output checker reviews ------------------------------------------------------

decide(req) := deny(403, "only an output checker reviews outputs") if {
	req.action == "review"
	not checker(req)
} else := deny(403, "nobody reviews the outputs they asked to release") if {
	req.action == "review"
	requester(req)
} else := deny(403, "nobody reviews the outputs of a permit they are named on") if {
	req.action == "review"
	member(req)
} else := deny(409, concat("", ["a request in state ", req.request.state, " is not under review"])) if {
	req.action == "review"
	req.request.state != "pending"
} else := deny(409, "this output checker has already reviewed the request") if {
	req.action == "review"
	reviewed_by_subject(req)
} else := allow("an output checker reviews the request") if {
	req.action == "review"

	# ---- settling a request after a review ---------------------------------------------
} else := allow("an output checker rejected the request") if {
	req.action == "reject"
	req.request.state == "pending"
	rejected(req)
} else := deny(409, "no output checker rejected the request") if {
	req.action == "reject"
} else := deny(409, concat("", ["a request in state ", req.request.state, " is not released"])) if {
	req.action == "release"
	req.request.state != "pending"
} else := deny(409, "a rejected request is not released") if {
	req.action == "release"
	rejected(req)
} else := deny(409, concat("", ["the permit is ", req.permit.status])) if {
	req.action == "release"
	req.permit.status in stopped
} else := deny(409, "the outputs as a whole are blocked by the automatic checks") if {
	req.action == "release"
	req.request.report_reasons > 0
} else := deny(409, "a stored file is blocked by the automatic checks") if {
	req.action == "release"
	stored_blocked(req)
} else := deny(409, concat("", [
	"the outputs of ", format_int(awaited(req), 10), " more site(s) are still to come",
])) if {
	req.action == "release"
	awaited(req) > 0
} else := deny(409, concat("", [
	"two different output checkers must approve (", format_int(count(approvers(req)), 10), " so far)",
])) if {
	req.action == "release"
	count(approvers(req)) < approvals_needed
} else := allow("two different output checkers approved") if {
	req.action == "release"

	# ---- a request that kept nothing is closed -----------------------------------------
} else := deny(409, concat("", ["a request in state ", req.request.state, " is not closed"])) if {
	req.action == "close"
	req.request.state != "pending"
} else := deny(409, "a site's outputs are still to come") if {
	req.action == "close"
	awaited(req) > 0
} else := deny(409, "a file was kept for review") if {
	req.action == "close"
	kept_a_file(req)
} else := allow("every file was blocked by the automatic checks; nothing to review") if {
	req.action == "close"
	count(req.request.files) > 0
} else := allow("the job sent no files; nothing to review") if {
	req.action == "close"

	# ---- a job's outputs arrive from a node ---------------------------------------------
} else := deny(403, "only the central airlock's collector submits a job's outputs") if {
	req.action == "submit"
	not collector(req)
} else := deny(409, concat("", ["the job's request is ", req.request.state, "; no more outputs are added to it"])) if {
	req.action == "submit"
	req.request.state != "pending"
} else := deny(403, "no such permit at the centre") if {
	req.action == "submit"
	req.permit.status == "missing"
} else := deny(403, "the job's user is not named on the permit") if {
	req.action == "submit"
	not req.request.requester in req.permit.members
} else := allow("a permit member's job outputs, kept for review") if {
	req.action == "submit"

	# ---- the permit stops: pending outputs are withheld ---------------------------------
} else := allow(concat("", ["the permit is ", req.permit.status])) if {
	req.action == "withhold"
	req.request.state == "pending"
	req.permit.status in stopped
} else := deny(409, "only pending requests of a suspended or revoked permit are withheld") if {
	req.action == "withhold"

	# ---- downloading released outputs ---------------------------------------------------
} else := deny(403, "only the requester or a member of the permit downloads outputs") if {
	req.action == "download"
	not party(req)
} else := deny(409, concat("", ["the request is ", req.request.state, "; only released outputs are downloaded"])) if {
	req.action == "download"
	req.request.state != "released"
} else := deny(403, concat("", ["the permit is ", req.permit.status])) if {
	req.action == "download"
	req.permit.status in stopped
	# One answer for a blocked file, one never stored and one that does not exist: the
	# names of what was not released are not told, nor confirmed to a guess.
} else := deny(403, "no released file of that name in this request") if {
	req.action == "download"
	not released_file(req)
} else := allow("a party downloads a released output") if {
	req.action == "download"

	# ---- an output checker reads a stored file's content to review it -------------------
} else := deny(403, "only an output checker inspects outputs under review") if {
	req.action == "inspect"
	not checker(req)
} else := deny(403, "nobody inspects the outputs they asked to release") if {
	req.action == "inspect"
	requester(req)
} else := deny(403, "nobody inspects the outputs of a permit they are named on") if {
	req.action == "inspect"
	member(req)
} else := deny(409, concat("", ["a request in state ", req.request.state, " is not under review"])) if {
	req.action == "inspect"
	req.request.state != "pending"
} else := deny(403, "the file was not stored and never leaves") if {
	req.action == "inspect"
	not req.file.stored
} else := allow("an output checker inspects a file under review") if {
	req.action == "inspect"

	# ---- reading a request --------------------------------------------------------------
} else := allow("a party reads its request") if {
	req.action == "view"
	party(req)
} else := allow("an output checker reads a request") if {
	req.action == "view"
	checker(req)
} else := deny(403, "only the requester, the permit's members and output checkers read a request") if {
	req.action == "view"
} else := deny(400, concat("", ["unknown action ", to_text(object.get(req, "action", null))]))

to_text(x) := x if is_string(x)

else := "(none)"

# Fails closed: an input no rule decides on (a missing field, say) is denied.
default decision := {"allow": false, "reason": "denied: airlock.decision has no answer for this input"}

decision := decide(input)
