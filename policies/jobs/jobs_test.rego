package jobs_test

import rego.v1

import data.jobs

good_permit := {"id": "p1", "known": true, "usable": true, "member": true, "covers_node": true}

ok_limits := {"wall_seconds": 60, "memory_mb": 1024, "cpu_seconds": 60}

# The default environment, installed: what every job before environments asked for.
in_statistics := {"environment": "statistics", "installed": ["statistics", "imaging"]}

job_in(permit, limits, env) := object.union({"permit": permit, "limits": limits}, env)

test_a_job_under_a_good_permit_within_limits_runs if {
	d := jobs.decide(job_in(good_permit, ok_limits, in_statistics))
	d.allow
	contains(d.reason, "p1")
	contains(d.reason, "statistics")
}

test_the_maximum_itself_is_allowed if {
	jobs.decide(job_in(good_permit, {"wall_seconds": 3600, "memory_mb": 4096}, in_statistics)).allow
}

test_no_permit_is_refused if {
	d := jobs.decide({"permit": null, "limits": ok_limits})
	not d.allow
	contains(d.reason, "no permit")
}

test_the_node_copy_of_the_permit_decides if {
	d1 := jobs.decide({"permit": object.union(good_permit, {"known": false}), "limits": ok_limits})
	not d1.allow
	contains(d1.reason, "unknown")
	d2 := jobs.decide({"permit": object.union(good_permit, {"usable": false}), "limits": ok_limits})
	not d2.allow
	contains(d2.reason, "not active")
	d3 := jobs.decide({"permit": object.union(good_permit, {"member": false}), "limits": ok_limits})
	not d3.allow
	contains(d3.reason, "does not name the caller")
	d4 := jobs.decide({"permit": object.union(good_permit, {"covers_node": false}), "limits": ok_limits})
	not d4.allow
	contains(d4.reason, "covers no dataset")
}

test_limits_above_the_maximum_are_refused_with_the_reason if {
	d := jobs.decide({"permit": good_permit, "limits": {"wall_seconds": 7200, "memory_mb": 8192}})
	not d.allow
	contains(d.reason, "wall_seconds 7200 > 3600")
	contains(d.reason, "memory_mb 8192 > 4096")
}

test_a_permit_problem_comes_before_the_limits if {
	d := jobs.decide({"permit": object.union(good_permit, {"usable": false}), "limits": {"wall_seconds": 7200}})
	contains(d.reason, "not active")
}

test_an_imaging_job_runs_where_imaging_is_installed if {
	d := jobs.decide(job_in(good_permit, ok_limits, {"environment": "imaging", "installed": ["statistics", "imaging"]}))
	d.allow
	contains(d.reason, "imaging")
}

test_an_environment_outside_the_allow_list_is_refused_naming_the_allowed_ones if {
	# Installed on the machine is not enough: the institution's policy lists what it runs.
	d := jobs.decide(job_in(good_permit, ok_limits, {"environment": "gpu", "installed": ["statistics", "gpu"]}))
	not d.allow
	d.reason == "denied: analysis environment \"gpu\" is not allowed at this node (allowed: imaging, statistics)"
}

test_an_allowed_environment_the_node_has_not_installed_is_refused if {
	d := jobs.decide(job_in(good_permit, ok_limits, {"environment": "imaging", "installed": ["statistics"]}))
	not d.allow
	d.reason == "denied: analysis environment \"imaging\" is not installed at this node (installed: statistics)"
}

test_a_missing_or_malformed_environment_is_refused if {
	d1 := jobs.decide({"permit": good_permit, "limits": ok_limits})
	not d1.allow
	contains(d1.reason, "no analysis environment named")
	d2 := jobs.decide(job_in(good_permit, ok_limits, {"environment": ["statistics"], "installed": ["statistics"]}))
	not d2.allow
	d3 := jobs.decide(job_in(good_permit, ok_limits, {"environment": "statistics"}))
	not d3.allow
	contains(d3.reason, "not installed")
	d4 := jobs.decide(job_in(good_permit, ok_limits, {"environment": "statistics", "installed": "statistics"}))
	not d4.allow
}

test_the_permit_and_limits_come_before_the_environment if {
	d := jobs.decide(job_in(object.union(good_permit, {"usable": false}), ok_limits, {"environment": "gpu", "installed": []}))
	contains(d.reason, "not active")
	d2 := jobs.decide(job_in(good_permit, {"wall_seconds": 7200}, {"environment": "gpu", "installed": []}))
	contains(d2.reason, "wall_seconds")
}

job := {"user_id": "carol@demo", "pid": "p1"}

ask(action, id, roles) := jobs.decide_access({"action": action, "subject": {"id": id, "roles": roles}, "job": job, "permit": "p1"})

test_the_owner_reads_and_cancels if {
	ask("read", "carol@demo", ["researcher"]).allow
	ask("cancel", "carol@demo", ["researcher"]).allow
}

test_another_researcher_neither_reads_nor_cancels if {
	d := ask("read", "mallory@demo", ["researcher"])
	not d.allow
	contains(d.reason, "another user's")
	not ask("cancel", "mallory@demo", ["researcher"]).allow
}

test_checkers_and_admins_read_but_do_not_cancel if {
	ask("read", "olga@demo", ["output_checker"]).allow
	ask("read", "root@demo", ["admin"]).allow
	d := ask("cancel", "olga@demo", ["output_checker"])
	not d.allow
	contains(d.reason, "own user")
	not ask("cancel", "root@demo", ["admin"]).allow
}

test_only_the_collector_collects if {
	ask("collect", "hub:airlock", ["airlock"]).allow
	ask("read", "hub:airlock", ["airlock"]).allow
	not ask("collect", "carol@demo", ["researcher", "airlock"]).allow
	not ask("collect", "hub:airlock", ["admin"]).allow
	not ask("cancel", "hub:airlock", ["airlock"]).allow
}

test_a_context_for_another_permit_is_refused if {
	d := jobs.decide_access({"action": "read", "subject": {"id": "carol@demo", "roles": []}, "job": job, "permit": "p2"})
	not d.allow
	contains(d.reason, "another permit")
}

test_without_a_context_permit_the_job_decides if {
	jobs.decide_access({"action": "read", "subject": {"id": "carol@demo", "roles": []}, "job": job, "permit": null}).allow
}

test_an_unknown_action_is_refused if {
	not ask("delete", "carol@demo", ["researcher"]).allow
}

test_an_extract_within_the_threshold_runs if {
	d := jobs.decide_extract({"risk": {"ok": true}, "layers": ["profile", "risk"]})
	d.allow
	contains(d.reason, "within")
}

test_an_extract_above_the_threshold_is_refused_with_the_figures if {
	d := jobs.decide_extract({"risk": {"ok": false, "measured": true, "k": 1, "k_wanted": 5}, "layers": ["risk"]})
	not d.allow
	contains(d.reason, "k=1 < 5")
	d2 := jobs.decide_extract({"risk": {"ok": false, "measured": false, "reason": "no patients staged"}, "layers": ["risk"]})
	not d2.allow
	contains(d2.reason, "no patients staged")
}

test_an_institution_may_accept_it_inside_the_spe if {
	d := jobs.extract_decision({"risk": {"ok": false, "measured": true, "k": 1, "k_wanted": 5}, "layers": ["risk"]}, true)
	d.allow
	contains(d.reason, "accepted inside the SPE")
}

test_a_malformed_risk_is_not_within_the_threshold if {
	d := jobs.extract_decision({"risk": {"ok": "yes"}, "layers": ["risk"]}, false)
	not d.allow
}

test_without_layers_the_risk_layer_counts if {
	not jobs.extract_decision({"risk": {"ok": false}}, false).allow
}

outputs_of(id, roles, member) := jobs.decide_access({"action": "outputs", "subject": {"id": id, "roles": roles}, "job": job, "permit": null, "member": member})

test_a_permit_member_reads_the_outputs_but_not_the_job if {
	outputs_of("dave@demo", ["researcher"], true).allow
	not ask("read", "dave@demo", ["researcher"]).allow
	not ask("cancel", "dave@demo", ["researcher"]).allow
}

test_the_owner_and_checkers_read_the_outputs if {
	outputs_of("carol@demo", ["researcher"], false).allow
	outputs_of("olga@demo", ["output_checker"], false).allow
}

test_a_stranger_reads_no_outputs if {
	d := outputs_of("mallory@demo", ["researcher"], false)
	not d.allow
	contains(d.reason, "member of its permit")
	not jobs.decide_access({"action": "outputs", "subject": {"id": "mallory@demo", "roles": []}, "job": job, "permit": null}).allow
}

# ---- code the institution vets ------------------------------------------------------

sha := "aa00000000000000000000000000000000000000000000000000000000000000"

vetted(mode, approval, registry) := jobs.decide({
	"permit": good_permit, "limits": ok_limits, "environment": "statistics", "installed": ["statistics"],
	"node": {"id": "site-a", "code_review": mode, "registry": registry},
	"code": {"sha256": sha, "approval": approval},
})

test_without_a_setting_code_is_not_vetted if {
	d := jobs.decide(job_in(good_permit, ok_limits, in_statistics))
	d.allow
	not d.hold
	d.code_review == "none"
}

test_code_not_yet_approved_is_held_with_the_reason if {
	d := vetted("approval", null, [])
	d.allow
	d.hold
	d.code_review == "approval"
	contains(d.reason, concat("", ["the code (sha256 ", sha, ") awaits approval by site-a's approvers"]))
}

test_approved_code_runs_at_once if {
	d := vetted("approval", "approve", [])
	d.allow
	not d.hold
}

test_rejected_code_is_refused if {
	d := vetted("approval", "reject", [])
	not d.allow
	contains(d.reason, "rejected by site-a's approvers")
}

test_the_registry_allows_only_listed_code if {
	d := vetted("registry", null, [sha])
	d.allow
	not d.hold
	d2 := vetted("registry", "approve", ["bb"])
	not d2.allow
	contains(d2.reason, "not in site-a's registry")
}

test_an_unknown_review_mode_refuses_every_job if {
	d := vetted("aproval", "approve", [sha])
	not d.allow
	contains(d.reason, "not one of none, approval, registry")
}

test_the_permit_is_checked_before_the_code if {
	d := jobs.decide({"permit": object.union(good_permit, {"usable": false}), "limits": ok_limits,
		"node": {"id": "site-a", "code_review": "approval"}, "code": {"sha256": sha, "approval": "approve"}})
	not d.allow
	contains(d.reason, "not active")
}

reviewer(id, roles, inst) := {"id": id, "roles": roles, "institution": inst}

review(action, subject) := jobs.decide_review_access({
	"action": action, "subject": subject, "node": "site-a",
	"members": ["carol@demo"], "researchers": ["carol@demo"],
})

test_an_approver_of_the_institution_reviews if {
	review("list", reviewer("anna@demo", ["approver"], "site-a")).allow
	review("read", reviewer("anna@demo", ["approver"], "site-a")).allow
	review("decide", reviewer("anna@demo", ["approver"], "site-a")).allow
}

test_an_approver_of_another_institution_does_not if {
	d := review("decide", reviewer("bert@demo", ["approver"], "site-b"))
	not d.allow
	contains(d.reason, "only site-a's approvers")
}

test_a_researcher_does_not_review if {
	d := review("decide", reviewer("mallory@demo", ["researcher"], "site-a"))
	not d.allow
	contains(d.reason, "only an approver")
}

test_nobody_approves_their_own_code if {
	d := review("decide", reviewer("carol@demo", ["approver", "researcher"], "site-a"))
	not d.allow
	contains(d.reason, "own code")
}

test_nobody_approves_code_of_a_permit_they_are_named_on if {
	d := jobs.decide_review_access({
		"action": "decide", "subject": reviewer("dave@demo", ["approver"], "site-a"),
		"node": "site-a", "members": ["dave@demo"], "researchers": ["carol@demo"],
	})
	not d.allow
	contains(d.reason, "named on")
}

test_an_approver_without_an_institution_does_not_review if {
	not review("list", reviewer("anna@demo", ["approver"], null)).allow
}
