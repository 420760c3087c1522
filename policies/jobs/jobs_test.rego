package jobs_test

import rego.v1

import data.jobs

good_permit := {"id": "p1", "known": true, "usable": true, "member": true, "covers_node": true}

ok_limits := {"wall_seconds": 60, "memory_mb": 1024, "cpu_seconds": 60}

test_a_job_under_a_good_permit_within_limits_runs if {
	d := jobs.decide({"permit": good_permit, "limits": ok_limits})
	d.allow
	contains(d.reason, "p1")
}

test_the_maximum_itself_is_allowed if {
	jobs.decide({"permit": good_permit, "limits": {"wall_seconds": 3600, "memory_mb": 4096}}).allow
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
