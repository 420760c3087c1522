package airlock_test

import rego.v1

import data.airlock

alice := {"id": "alice", "roles": ["researcher"], "institution": null}

carol := {"id": "carol", "roles": ["researcher"], "institution": null}

eve := {"id": "eve", "roles": ["researcher"], "institution": null}

olga := {"id": "olga", "roles": ["output_checker"], "institution": null}

otto := {"id": "otto", "roles": ["output_checker"], "institution": null}

carol_checker := {"id": "carol", "roles": ["output_checker"], "institution": null}

alice_checker := {"id": "alice", "roles": ["output_checker"], "institution": null}

safe := {"path": "safe.csv", "verdict": "pass", "stored": true, "reasons": []}

small := {"path": "small.csv", "verdict": "blocked", "stored": false, "reasons": ["count 3 under 10"]}

request(state, reviews) := {
	"state": state, "requester": "alice", "reviews": reviews, "report_reasons": 0,
	"files": [safe, small],
}

permit(status) := {"status": status, "members": ["alice", "carol"]}

approve(who) := {"reviewer": who, "decision": "approve"}

reject(who) := {"reviewer": who, "decision": "reject"}

d(action, subject, r, p) := airlock.decide({"action": action, "subject": subject, "request": r, "permit": p})

dl(subject, r, p, f) := airlock.decide({"action": "download", "subject": subject, "request": r, "permit": p, "file": f})

# review

test_a_checker_reviews if d("review", olga, request("pending", []), permit("active")).allow

test_a_researcher_does_not_review if {
	r := d("review", eve, request("pending", []), permit("active"))
	not r.allow
	r.status == 403
}

test_the_requester_does_not_review if {
	r := d("review", alice_checker, request("pending", []), permit("active"))
	r.status == 403
	contains(r.reason, "asked to release")
}

test_a_member_does_not_review if {
	r := d("review", carol_checker, request("pending", []), permit("active"))
	r.status == 403
	contains(r.reason, "named on")
}

test_no_review_after_the_request_is_settled if {
	r := d("review", olga, request("released", [approve("otto"), approve("oleg")]), permit("active"))
	r.status == 409
}

test_no_second_review_by_the_same_checker if {
	r := d("review", olga, request("pending", [approve("olga")]), permit("active"))
	r.status == 409
	contains(r.reason, "already reviewed")
}

# release and reject

test_two_different_checkers_release if {
	d("release", olga, request("pending", [approve("olga"), approve("otto")]), permit("active")).allow
}

test_one_approval_does_not_release if {
	r := d("release", olga, request("pending", [approve("olga")]), permit("active"))
	not r.allow
	contains(r.reason, "1 so far")
}

test_the_same_checker_twice_does_not_release if {
	r := d("release", olga, request("pending", [approve("olga"), approve("olga")]), permit("active"))
	not r.allow
}

test_a_reject_is_not_released if {
	r := d("release", otto, request("pending", [approve("olga"), reject("otto"), approve("oleg")]), permit("active"))
	not r.allow
	contains(r.reason, "rejected")
}

test_a_reject_rejects if d("reject", otto, request("pending", [approve("olga"), reject("otto")]), permit("active")).allow

test_approvals_do_not_reject if not d("reject", otto, request("pending", [approve("olga")]), permit("active")).allow

test_a_settled_request_is_not_released_again if {
	not d("release", otto, request("withheld", [approve("olga"), approve("otto")]), permit("active")).allow
}

test_no_release_under_a_revoked_permit if {
	r := d("release", otto, request("pending", [approve("olga"), approve("otto")]), permit("revoked"))
	not r.allow
	contains(r.reason, "revoked")
}

test_no_release_when_the_report_blocks if {
	r := d("release", otto, object.union(request("pending", [approve("olga"), approve("otto")]), {"report_reasons": 1}), permit("active"))
	not r.allow
}

test_no_release_of_a_stored_blocked_file if {
	bad := object.union(small, {"stored": true})
	req := object.union(request("pending", [approve("olga"), approve("otto")]), {"files": [safe, bad]})
	r := d("release", otto, req, permit("active"))
	not r.allow
	contains(r.reason, "stored file is blocked")
}

# withhold

test_a_revoked_permit_withholds_pending if d("withhold", olga, request("pending", []), permit("revoked")).allow

test_a_suspended_permit_withholds_pending if d("withhold", olga, request("pending", []), permit("suspended")).allow

test_an_active_permit_withholds_nothing if not d("withhold", olga, request("pending", []), permit("active")).allow

test_released_requests_are_not_withheld if not d("withhold", olga, request("released", []), permit("revoked")).allow

# download

released := request("released", [approve("olga"), approve("otto")])

test_the_requester_downloads if dl(alice, released, permit("active"), safe).allow

test_a_member_downloads if dl(carol, released, permit("expired"), safe).allow

test_an_outsider_does_not_download if {
	r := dl(eve, released, permit("active"), safe)
	r.status == 403
}

test_a_checker_does_not_download if dl(olga, released, permit("active"), safe).status == 403

test_a_pending_request_is_not_downloaded if {
	r := dl(alice, request("pending", [approve("olga")]), permit("active"), safe)
	r.status == 409
	contains(r.reason, "pending")
}

test_a_withheld_request_is_not_downloaded if dl(alice, request("withheld", []), permit("revoked"), safe).status == 409

test_nothing_is_downloaded_under_a_suspended_permit if {
	r := dl(alice, released, permit("suspended"), safe)
	r.status == 403
	contains(r.reason, "suspended")
}

test_a_blocked_file_is_not_downloaded if {
	r := dl(alice, released, permit("active"), small)
	r.status == 403
	not contains(r.reason, "3")
}

test_an_unstored_file_is_not_downloaded if {
	r := dl(alice, released, permit("active"), object.union(safe, {"stored": false}))
	r.status == 403
}

# A blocked file, an unstored one and a guessed name get the same answer.
test_a_blocked_file_is_refused_as_one_that_does_not_exist if {
	missing := {"path": "guess.csv", "verdict": "missing", "stored": false, "reasons": []}
	blocked := dl(alice, released, permit("active"), small)
	unstored := dl(alice, released, permit("active"), object.union(safe, {"stored": false}))
	guessed := dl(alice, released, permit("active"), missing)
	blocked == guessed
	unstored == guessed
}

# view

test_the_requester_views if d("view", alice, request("pending", []), permit("active")).allow

test_a_member_views if d("view", carol, request("pending", []), permit("active")).allow

test_a_checker_views if d("view", olga, request("pending", []), permit("active")).allow

test_an_outsider_does_not_view if d("view", eve, request("pending", []), permit("active")).status == 403

test_an_unknown_action_is_refused if {
	r := d("publish", olga, request("pending", []), permit("active"))
	r.status == 400
	contains(r.reason, "publish")
}

# inspect (an output checker reads a stored file's content while reviewing)

ins(subject, r, f) := airlock.decide({"action": "inspect", "subject": subject, "request": r, "permit": permit("active"), "file": f})

test_a_checker_inspects_a_stored_file if ins(olga, request("pending", []), safe).allow

test_a_researcher_does_not_inspect if ins(eve, request("pending", []), safe).status == 403

test_the_requester_does_not_inspect_as_a_checker if ins(alice_checker, request("pending", []), safe).status == 403

test_a_member_does_not_inspect_as_a_checker if ins(carol_checker, request("pending", []), safe).status == 403

test_an_unstored_file_is_not_inspected if ins(olga, request("pending", []), small).status == 403

test_a_settled_request_is_not_inspected if ins(olga, request("released", [approve("olga"), approve("otto")]), safe).status == 409

# submit

collector := {"id": "hub:airlock", "roles": ["airlock"], "institution": null}

test_the_collector_submits_a_members_outputs if {
	d("submit", collector, request("pending", []), permit("active")).allow
	d("submit", collector, request("pending", []), permit("revoked")).allow # then withheld
}

test_nobody_else_submits_outputs if {
	r := d("submit", alice, request("pending", []), permit("active"))
	not r.allow
	r.status == 403
	not d("submit", {"id": "alice", "roles": ["airlock"], "institution": null}, request("pending", []), permit("active")).allow
	not d("submit", {"id": "hub:airlock", "roles": ["admin"], "institution": null}, request("pending", []), permit("active")).allow
}

test_outputs_of_an_unknown_permit_or_a_stranger_are_refused if {
	r1 := d("submit", collector, request("pending", []), {"status": "missing", "members": []})
	not r1.allow
	contains(r1.reason, "no such permit")
	r2 := d("submit", collector, request("pending", []), {"status": "active", "members": ["carol"]})
	not r2.allow
	contains(r2.reason, "not named on the permit")
}

# one request per job: release waits for every site; a request that kept nothing closes

test_no_release_while_a_site_is_awaited if {
	req := object.union(request("pending", [approve("olga"), approve("otto")]), {"awaiting": 1})
	r := d("release", otto, req, permit("active"))
	r.status == 409
	contains(r.reason, "still to come")
}

blocked_only := object.union(request("pending", []), {"files": [small]})

test_a_request_that_kept_nothing_closes if d("close", olga, blocked_only, permit("active")).allow

test_a_request_that_kept_a_file_does_not_close if {
	r := d("close", olga, request("pending", []), permit("active"))
	r.status == 409
	contains(r.reason, "kept")
}

test_a_request_awaiting_a_site_does_not_close if {
	not d("close", olga, object.union(blocked_only, {"awaiting": 1}), permit("active")).allow
}

test_a_closed_request_is_not_reviewed if {
	r := d("review", olga, object.union(blocked_only, {"state": "closed"}), permit("active"))
	r.status == 409
}

test_a_closed_request_is_not_downloaded if {
	dl(alice, object.union(blocked_only, {"state": "closed"}), permit("active"), small).status == 409
}

test_no_outputs_are_added_to_a_settled_request if {
	collector := {"id": "hub:airlock", "roles": ["airlock"], "institution": null}
	r := d("submit", collector, request("rejected", [reject("olga")]), permit("active"))
	r.status == 409
}
