# METADATA
# title: Data permits (EHDS Arts. 53, 54, 66, 67, 68)
# description: |
#   Every transition of a permit application, and every use of an issued permit, is decided
#   here. Input: {"action", "subject": {"id", "roles", "institution"}, "permit": {"status"
#   (the effective one: draft, submitted, changes_requested, rejected, approved, refused,
#   not_yet_active, active, expired, suspended, revoked), "applicant", "members" (user ids,
#   the applicant included), "institutions" (nodes holding a requested dataset),
#   "approvals" ({institution: "approve"|"reject"|"changes"} for the current revision),
#   "purpose", "declaration" (no Art. 54 use, bool), "datasets" (count), "form"
#   ("anonymised"|"pseudonymised"), "justification", "days" (requested period),
#   "amendment": null | {"institutions": the ones that must approve it}}}. An amendment of
#   an active permit (a new member: every holding institution; a new dataset: its holder)
#   is reviewed like an application while the permit stays in force as it was.
#   Query `data.permits.decision`: {"allow", "reason", "status"}; `status` is the HTTP
#   status of a refusal: 403 (who may not), 409 (not in this state, or incomplete).
#   Rules are functions of their input so tests call them directly (see policies/authz).
package permits

import rego.v1

# EHDS Art. 53(1) purposes.
purposes := {
	"public_health", "policy_and_regulation", "official_statistics", "education",
	"scientific_research", "improving_care",
}

max_days := 1826 # five years; a permit may be renewed

editable := {"draft", "changes_requested"}

usable := {"active"}

hdab(req) if "hdab" in req.subject.roles

applicant(req) if req.subject.id == req.permit.applicant

party(req) if req.subject.id in req.permit.members

party(req) if applicant(req)

allow(reason) := {"allow": true, "reason": concat("", ["allowed: ", reason]), "status": 200}

deny(code, reason) := {"allow": false, "reason": concat("", ["denied: ", reason]), "status": code}

# ---- the applicant's own steps ------------------------------------------------------

decide(req) := deny(403, "only the applicant edits or submits an application") if {
	req.action in {"edit", "submit"}
	not applicant(req)
} else := deny(409, concat("", ["an application in status ", req.permit.status, " cannot be changed"])) if {
	req.action in {"edit", "submit"}
	not req.permit.status in editable
} else := allow("the applicant edits the draft") if {
	req.action == "edit"
} else := deny(409, "the purpose must be one of EHDS Art. 53(1)") if {
	req.action == "submit"
	not req.permit.purpose in purposes
} else := deny(409, "the applicant must declare that no use prohibited by EHDS Art. 54 is intended") if {
	req.action == "submit"
	not req.permit.declaration == true
} else := deny(409, "request at least one dataset") if {
	req.action == "submit"
	req.permit.datasets < 1
} else := deny(409, "pseudonymised data needs a written justification (EHDS Art. 66); anonymised is the default") if {
	req.action == "submit"
	req.permit.form == "pseudonymised"
	count(trim_space(object.get(req.permit, "justification", ""))) == 0
} else := deny(409, concat("", ["the requested period exceeds ", format_int(max_days, 10), " days"])) if {
	req.action == "submit"
	req.permit.days > max_days
} else := deny(409, "the requested period must end after it starts") if {
	req.action == "submit"
	req.permit.days < 1
} else := allow("the applicant submits the application") if {
	req.action == "submit"

	# ---- each holding institution reviews ---------------------------------------------
} else := deny(403, "only an approver of an institution holding a requested dataset reviews") if {
	req.action == "review"
	not reviewer_of_holder(req)
} else := deny(403, "nobody reviews an application they are named on") if {
	req.action == "review"
	party(req)
} else := deny(409, concat("", ["an application in status ", req.permit.status, " is not under review"])) if {
	req.action == "review"
	req.permit.status != "submitted"
	not amendment_pending(req)
} else := deny(409, concat("", [req.subject.institution, " has already reviewed this application"])) if {
	req.action == "review"
	req.permit.approvals[req.subject.institution]
} else := allow(concat("", ["review for ", req.subject.institution])) if {
	req.action == "review"

	# ---- amendments: a new member or dataset goes back to the institutions it concerns --
} else := deny(403, "only the applicant asks for an amendment") if {
	req.action == "amend"
	not applicant(req)
} else := deny(409, "an amendment is already under review") if {
	req.action == "amend"
	amendment_pending(req)
} else := deny(409, concat("", ["a permit in status ", req.permit.status, " cannot be amended"])) if {
	req.action == "amend"
	not req.permit.status in {"active", "not_yet_active"}
} else := allow("the applicant asks for an amendment") if {
	req.action == "amend"

	# ---- the health data access body decides ------------------------------------------
} else := deny(403, "only the health data access body decides on permits") if {
	req.action in {"issue", "refuse", "suspend", "resume", "revoke"}
	not hdab(req)
} else := deny(403, "nobody decides on an application they are named on") if {
	req.action in {"issue", "refuse", "suspend", "resume", "revoke"}
	party(req)
} else := deny(409, "every institution the amendment concerns must approve before it is issued") if {
	req.action == "issue"
	amendment_pending(req)
	some node in req.permit.amendment.institutions
	object.get(req.permit.approvals, node, "") != "approve"
} else := allow("the access body issues the amendment") if {
	req.action == "issue"
	amendment_pending(req)
	req.permit.status in {"active", "not_yet_active"}
} else := deny(409, "every institution holding a requested dataset must approve before the permit is issued") if {
	req.action == "issue"
	req.permit.status in {"submitted", "changes_requested"}
} else := deny(409, concat("", ["a permit cannot be issued from status ", req.permit.status])) if {
	req.action == "issue"
	req.permit.status != "approved"
} else := allow("the access body issues the permit") if {
	req.action == "issue"
} else := allow("the access body refuses the application") if {
	req.action == "refuse"
	req.permit.status in {"submitted", "approved", "changes_requested"}
} else := allow("the access body suspends the permit") if {
	req.action == "suspend"
	req.permit.status == "active"
} else := allow("the access body resumes the permit") if {
	req.action == "resume"
	req.permit.status == "suspended"
} else := allow("the access body revokes the permit") if {
	req.action == "revoke"
	req.permit.status in {"active", "not_yet_active", "suspended"}
} else := deny(409, concat("", ["cannot ", req.action, " a permit in status ", req.permit.status])) if {
	req.action in {"refuse", "suspend", "resume", "revoke"}

	# ---- using an issued permit (queries, jobs) ----------------------------------------
} else := deny(403, "the caller is not named on the permit") if {
	req.action == "use"
	not party(req)
} else := deny(403, concat("", ["the permit is ", req.permit.status])) if {
	req.action == "use"
	not req.permit.status in usable
} else := allow("a member uses an active permit") if {
	req.action == "use"

	# ---- reading an application ---------------------------------------------------------
} else := allow("a party reads its application") if {
	req.action == "view"
	party(req)
} else := allow("an approver of a holding institution reads an application") if {
	req.action == "view"
	reviewer_of_holder(req)
	req.permit.status != "draft"
} else := allow("the access body reads an application") if {
	req.action == "view"
	hdab(req)
	req.permit.status != "draft"
} else := allow("an administrator reads an application") if {
	req.action == "view"
	"admin" in req.subject.roles
} else := deny(403, "only the people named on it, the holding institutions' approvers and the access body read an application") if {
	req.action == "view"
} else := deny(400, concat("", ["unknown action ", to_text(object.get(req, "action", null))]))

reviewer_of_holder(req) if {
	"approver" in req.subject.roles
	is_string(req.subject.institution)
	not amendment_pending(req)
	req.subject.institution in req.permit.institutions
}

reviewer_of_holder(req) if {
	"approver" in req.subject.roles
	is_string(req.subject.institution)
	amendment_pending(req)
	req.subject.institution in req.permit.amendment.institutions
}

amendment_pending(req) if is_object(object.get(req.permit, "amendment", null))

to_text(x) := x if is_string(x)

else := "(none)"

# Fails closed: an input no rule decides on (a missing field, say) is denied.
default decision := {"allow": false, "reason": "denied: permits.decision has no answer for this input"}

decision := decide(input)
