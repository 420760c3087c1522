# METADATA
# title: Catalogue curation
# description: |
#   Who may edit a catalogue dataset's curated fields (title, description, keywords,
#   categories, contact, access rights): an approver of the institution that holds it, and
#   nobody else (the access body and admins read, the holder describes its own data).
#   Input: {"subject": {"id", "roles", "institution"}, "dataset": {"identifier", "node_id"}}.
#   Query `data.catalogue.curation.decision`: {"allow", "reason"}. Denies by default.
#   Rules are functions of their input so tests call them directly (see policies/authz).
package catalogue.curation

import rego.v1

approver_of_holder(req) if {
	"approver" in req.subject.roles
	is_string(req.subject.institution)
	req.subject.institution != ""
	req.subject.institution == req.dataset.node_id
}

# METADATA
# description: The decision object, {"allow": bool, "reason": string}.
decide(req) := {"allow": true, "reason": concat("", [
	"allowed: approver of ", req.dataset.node_id, " curates ", req.dataset.identifier,
])} if {
	approver_of_holder(req)
} else := {"allow": false, "reason": concat("", [
	"denied: only approvers of ", req.dataset.node_id, " may curate ", req.dataset.identifier,
	"; the caller is an approver of ", req.subject.institution,
])} if {
	"approver" in req.subject.roles
	is_string(req.subject.institution)
} else := {"allow": false, "reason": concat("", [
	"denied: only approvers of ", req.dataset.node_id, " may curate ", req.dataset.identifier,
])}

# Fails closed: an input no rule decides on (a missing field, say) is denied.
default decision := {"allow": false, "reason": "denied: catalogue.curation.decision has no answer for this input"}

decision := decide(input)
