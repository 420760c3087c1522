package federated_test

import rego.v1

import data.federated

permit := {"id": "P1", "known": true, "usable": true, "member": true, "covers_node": true}

test_round_allowed if {
	d := federated.decide_round({"permit": permit, "limits": {}, "app": "combat"})
	d.allow
	d.min_patients == 10
}

test_round_needs_a_permit if {
	not federated.decide_round({"permit": null, "limits": {}, "app": "combat"}).allow
}

test_round_needs_a_member if {
	d := federated.decide_round({"permit": object.union(permit, {"member": false}), "limits": {}, "app": "flower"})
	not d.allow
	contains(d.reason, "does not name the caller")
}

test_round_limits if {
	not federated.decide_round({"permit": permit, "limits": {"memory_mb": 99999}, "app": "combat"}).allow
}

test_gate_min_patients if {
	d := federated.decide_gate({"n": 9, "extract_patients": 100, "epsilon_before": 0, "epsilon_after": null})
	not d.allow
	d.code == "min_patients"
}

test_gate_count if {
	federated.decide_gate({"n": 101, "extract_patients": 100, "epsilon_before": 0, "epsilon_after": null}).code == "count"
}

test_gate_budget if {
	federated.decide_gate({"n": 50, "extract_patients": 100, "epsilon_before": 8, "epsilon_after": 3}).code == "budget"
}

test_gate_allowed if {
	federated.decide_gate({"n": 50, "extract_patients": 100, "epsilon_before": 1, "epsilon_after": 3}).allow
}
