package permits_test

import rego.v1

import data.permits

alice := {"id": "alice", "roles": ["researcher"], "institution": null}

carol := {"id": "carol", "roles": ["researcher"], "institution": null}

appr_a := {"id": "bob", "roles": ["approver"], "institution": "site-a"}

appr_b := {"id": "bea", "roles": ["approver"], "institution": "site-b"}

appr_z := {"id": "zed", "roles": ["approver"], "institution": "site-z"}

hdab := {"id": "hilde", "roles": ["hdab"], "institution": null}

permit(status) := {
	"status": status, "applicant": "alice", "members": ["alice", "carol"],
	"institutions": ["site-a", "site-b"], "approvals": {}, "purpose": "scientific_research",
	"declaration": true, "datasets": 2, "form": "anonymised", "justification": "", "days": 365,
}

with_permit(p, patch) := object.union(p, patch)

d(action, subject, p) := permits.decide({"action": action, "subject": subject, "permit": p})

# edit / submit

test_applicant_edits_a_draft if d("edit", alice, permit("draft")).allow

test_applicant_edits_after_changes_requested if d("edit", alice, permit("changes_requested")).allow

test_others_may_not_edit if {
	r := d("edit", carol, permit("draft"))
	not r.allow
	r.status == 403
}

test_a_submitted_application_is_not_edited if {
	r := d("edit", alice, permit("submitted"))
	not r.allow
	r.status == 409
}

test_applicant_submits if d("submit", alice, permit("draft")).allow

test_submit_needs_an_art53_purpose if {
	r := d("submit", alice, with_permit(permit("draft"), {"purpose": "marketing"}))
	r.status == 409
}

test_submit_needs_the_art54_declaration if {
	r := d("submit", alice, with_permit(permit("draft"), {"declaration": false}))
	r.status == 409
	contains(r.reason, "Art. 54")
}

test_pseudonymised_without_justification_is_refused if {
	r := d("submit", alice, with_permit(permit("draft"), {"form": "pseudonymised"}))
	not r.allow
	r.status == 409
	contains(r.reason, "Art. 66")
}

test_pseudonymised_with_justification_is_submitted if {
	d("submit", alice, with_permit(permit("draft"), {"form": "pseudonymised", "justification": "linkage of imaging and outcomes needs it"})).allow
}

test_submit_needs_a_dataset_and_a_sane_period if {
	d("submit", alice, with_permit(permit("draft"), {"datasets": 0})).status == 409
	d("submit", alice, with_permit(permit("draft"), {"days": 4000})).status == 409
	d("submit", alice, with_permit(permit("draft"), {"days": 0})).status == 409
}

# review

test_holder_approver_reviews if d("review", appr_a, permit("submitted")).allow

test_approver_of_another_institution_may_not_review if {
	r := d("review", appr_z, permit("submitted"))
	r.status == 403
}

test_nobody_reviews_their_own_application if {
	me := {"id": "alice", "roles": ["approver", "researcher"], "institution": "site-a"}
	r := d("review", me, permit("submitted"))
	r.status == 403
	contains(r.reason, "named on")
}

test_an_institution_reviews_once if {
	r := d("review", appr_a, with_permit(permit("submitted"), {"approvals": {"site-a": "approve"}}))
	r.status == 409
	contains(r.reason, "already reviewed")
}

test_only_submitted_applications_are_reviewed if {
	d("review", appr_a, permit("draft")).status == 409
	d("review", appr_a, permit("active")).status == 409
}

# the access body

test_hdab_issues_an_approved_application if d("issue", hdab, permit("approved")).allow

test_issuing_before_every_institution_approved_is_a_conflict if {
	r := d("issue", hdab, permit("submitted"))
	r.status == 409
	contains(r.reason, "must approve")
}

test_only_the_hdab_issues if {
	d("issue", appr_a, permit("approved")).status == 403
	d("issue", alice, permit("approved")).status == 403
}

test_hdab_named_on_the_application_may_not_decide if {
	me := {"id": "carol", "roles": ["hdab"], "institution": null}
	d("issue", me, permit("approved")).status == 403
}

test_hdab_refuses_under_review_or_approved if {
	d("refuse", hdab, permit("submitted")).allow
	d("refuse", hdab, permit("approved")).allow
	d("refuse", hdab, permit("active")).status == 409
}

test_suspend_resume_revoke if {
	d("suspend", hdab, permit("active")).allow
	d("resume", hdab, permit("suspended")).allow
	d("revoke", hdab, permit("active")).allow
	d("revoke", hdab, permit("suspended")).allow
	d("revoke", hdab, permit("not_yet_active")).allow
}

test_nothing_is_done_to_an_expired_or_revoked_permit if {
	d("suspend", hdab, permit("expired")).status == 409
	d("revoke", hdab, permit("revoked")).status == 409
	d("resume", hdab, permit("active")).status == 409
	d("issue", hdab, permit("active")).status == 409
}

# use

test_members_use_an_active_permit if {
	d("use", alice, permit("active")).allow
	d("use", carol, permit("active")).allow
}

test_someone_not_named_may_not_use_it if {
	r := d("use", {"id": "mallory", "roles": ["researcher"]}, permit("active"))
	r.status == 403
	contains(r.reason, "not named")
}

test_an_expired_suspended_or_revoked_permit_is_not_used if {
	contains(d("use", alice, permit("expired")).reason, "expired")
	d("use", alice, permit("suspended")).status == 403
	d("use", alice, permit("revoked")).status == 403
	d("use", alice, permit("not_yet_active")).status == 403
}

test_unknown_actions_are_refused if {
	not d("approve-everything", hdab, permit("active")).allow
}

# view

test_who_reads_an_application if {
	d("view", alice, permit("draft")).allow
	d("view", carol, permit("submitted")).allow
	d("view", appr_a, permit("submitted")).allow
	d("view", hdab, permit("active")).allow
	not d("view", appr_a, permit("draft")).allow
	not d("view", appr_z, permit("submitted")).allow
	not d("view", {"id": "mallory", "roles": ["researcher"]}, permit("active")).allow
	not d("view", hdab, permit("draft")).allow
}

# amendments

amending(approvals) := with_permit(permit("active"), {
	"amendment": {"institutions": ["site-a", "site-c"]}, "approvals": approvals,
})

test_the_applicant_amends_an_active_permit if {
	d("amend", alice, permit("active")).allow
	d("amend", carol, permit("active")).status == 403
	d("amend", alice, permit("expired")).status == 409
	d("amend", alice, amending({})).status == 409
}

test_an_amendment_is_reviewed_by_the_institutions_it_concerns if {
	appr_c := {"id": "cem", "roles": ["approver"], "institution": "site-c"}
	d("review", appr_c, amending({})).allow
	d("review", appr_a, amending({})).allow
	d("review", appr_b, amending({})).status == 403
	d("review", appr_a, amending({"site-a": "approve"})).status == 409
}

test_an_amendment_is_issued_after_its_approvals_only if {
	d("issue", hdab, amending({"site-a": "approve"})).status == 409
	d("issue", hdab, amending({"site-a": "approve", "site-c": "approve"})).allow
}
