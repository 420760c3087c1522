package authz_test

import rego.v1

import data.authz

req(service, method, route, roles) := {
	"service": service,
	"method": method,
	"route": route,
	"subject": {"id": "u@issuer", "roles": roles, "institution": null},
}

test_admin_may_verify_the_audit_log if {
	authz.decide(req("central", "GET", "/api/v1/audit/verify", ["admin"])).allow
}

test_researcher_may_not_verify_the_audit_log if {
	not authz.decide(req("central", "GET", "/api/v1/audit/verify", ["researcher"])).allow
}

test_denial_names_the_roles if {
	d := authz.decide(req("central", "GET", "/api/v1/audit", ["researcher"]))
	not d.allow
	contains(d.reason, "researcher")
}

test_any_role_may_read_me if {
	authz.decide(req("central", "GET", "/api/v1/me", ["output_checker"])).allow
}

test_any_signed_in_user_lists_the_analysis_environments if {
	authz.decide(req("central", "GET", "/api/v1/environments", ["researcher"])).allow
	authz.decide(req("central", "GET", "/api/v1/environments", ["approver"])).allow
	not authz.decide(req("central", "GET", "/api/v1/environments", [])).allow
}

test_no_role_may_not_read_me if {
	not authz.decide(req("central", "GET", "/api/v1/me", [])).allow
}

test_unknown_endpoint_is_denied if {
	d := authz.decide(req("central", "DELETE", "/api/v1/everything", ["admin"]))
	not d.allow
	contains(d.reason, "not a known endpoint")
}

test_node_endpoints_are_separate if {
	not authz.decide(req("node", "GET", "/api/v1/me", ["admin"])).allow
	authz.decide(req("node", "GET", "/api/v1/index/summary", ["hdab"])).allow
	not authz.decide(req("node", "GET", "/api/v1/index/summary", ["researcher"])).allow
}

test_method_matters if {
	not authz.decide(req("node", "POST", "/api/v1/index/summary", ["admin"])).allow
}

test_missing_subject_is_denied if {
	not authz.decide({"service": "central", "method": "GET", "route": "/api/v1/me"}).allow
}

test_hdab_may_harvest_node_descriptors if {
	authz.decide(req("node", "GET", "/api/v1/descriptors", ["hdab"])).allow
	authz.decide(req("node", "GET", "/api/v1/descriptors", ["admin"])).allow
}

test_researcher_may_not_read_node_descriptors_directly if {
	d := authz.decide(req("node", "GET", "/api/v1/descriptors", ["researcher"]))
	not d.allow
	contains(d.reason, "researcher")
}

test_descriptors_are_a_node_endpoint_only if {
	not authz.decide(req("central", "GET", "/api/v1/descriptors", ["hdab"])).allow
}

test_approver_may_reach_the_curation_door if {
	authz.decide(req("central", "PATCH", "/api/v1/catalogue/datasets/{identifier:path}", ["approver"])).allow
}

test_hdab_may_not_curate_a_catalogue_dataset if {
	not authz.decide(req("central", "PATCH", "/api/v1/catalogue/datasets/{identifier:path}", ["hdab"])).allow
}

test_researcher_may_not_curate_a_catalogue_dataset if {
	not authz.decide(req("central", "PATCH", "/api/v1/catalogue/datasets/{identifier:path}", ["researcher"])).allow
}

test_researchers_may_ask_federated_queries if {
	authz.decide(req("central", "POST", "/api/v1/query", ["researcher"])).allow
	authz.decide(req("central", "POST", "/api/v1/beacon/individuals", ["researcher"])).allow
	authz.decide(req("central", "GET", "/api/v1/beacon/individuals", ["researcher"])).allow
	not authz.decide(req("central", "GET", "/api/v1/beacon/individuals", ["approver"])).allow
	not authz.decide(req("central", "POST", "/api/v1/query", ["approver"])).allow
}

test_permit_steps_are_gated_by_role if {
	authz.decide(req("central", "POST", "/api/v1/permits", ["researcher"])).allow
	not authz.decide(req("central", "POST", "/api/v1/permits", ["hdab"])).allow
	authz.decide(req("central", "POST", "/api/v1/permits/{pid}/reviews", ["approver"])).allow
	not authz.decide(req("central", "POST", "/api/v1/permits/{pid}/reviews", ["researcher"])).allow
	authz.decide(req("central", "POST", "/api/v1/permits/{pid}/{action}", ["hdab"])).allow
	not authz.decide(req("central", "POST", "/api/v1/permits/{pid}/{action}", ["approver"])).allow
	authz.decide(req("central", "GET", "/api/v1/permits", ["output_checker"])).allow
}

test_researchers_submit_jobs_and_output_checkers_may_read_them if {
	authz.decide(req("central", "POST", "/api/v1/jobs", ["researcher"])).allow
	not authz.decide(req("central", "POST", "/api/v1/jobs", ["output_checker"])).allow
	authz.decide(req("central", "GET", "/api/v1/jobs/{job_id}", ["output_checker"])).allow
	authz.decide(req("central", "POST", "/api/v1/jobs/{job_id}/cancel", ["researcher"])).allow
	not authz.decide(req("central", "POST", "/api/v1/jobs/{job_id}/cancel", ["hdab"])).allow
	authz.decide(req("central", "POST", "/api/v1/fed/runs", ["researcher"])).allow
	not authz.decide(req("central", "POST", "/api/v1/fed/runs", ["output_checker"])).allow
	authz.decide(req("central", "GET", "/api/v1/fed/runs/{run_id}", ["output_checker"])).allow
}

test_tes_tasks_are_jobs_to_the_door if {
	authz.decide(req("central", "POST", "/ga4gh/tes/v1/tasks", ["researcher"])).allow
	not authz.decide(req("central", "POST", "/ga4gh/tes/v1/tasks", ["output_checker"])).allow
	authz.decide(req("central", "GET", "/ga4gh/tes/v1/tasks/{id}", ["output_checker"])).allow
	not authz.decide(req("central", "GET", "/ga4gh/tes/v1/tasks/{id}", ["hdab"])).allow
	authz.decide(req("central", "POST", "/ga4gh/tes/v1/tasks/{id}:cancel", ["researcher"])).allow
	not authz.decide(req("central", "POST", "/ga4gh/tes/v1/tasks/{id}:cancel", ["admin"])).allow
}

test_output_checker_reviews_airlock_requests if {
	authz.decide(req("central", "POST", "/api/v1/airlock/requests/{rid}/reviews", ["output_checker"])).allow
}

test_researcher_may_not_review_airlock_requests if {
	not authz.decide(req("central", "POST", "/api/v1/airlock/requests/{rid}/reviews", ["researcher"])).allow
}

test_researcher_downloads_airlock_files if {
	authz.decide(req("central", "GET", "/api/v1/airlock/requests/{rid}/files/{path:path}", ["researcher"])).allow
}

test_output_checker_may_not_download_airlock_files if {
	not authz.decide(req("central", "GET", "/api/v1/airlock/requests/{rid}/files/{path:path}", ["output_checker"])).allow
}

test_both_list_airlock_requests if {
	authz.decide(req("central", "GET", "/api/v1/airlock/requests", ["output_checker"])).allow
	authz.decide(req("central", "GET", "/api/v1/airlock/requests/{rid}", ["researcher"])).allow
}

test_hdab_may_read_the_harvest_status if {
	authz.decide(req("central", "GET", "/api/v1/catalogue/harvest", ["hdab"])).allow
}

test_researcher_may_not_start_a_harvest if {
	not authz.decide(req("central", "POST", "/api/v1/catalogue/harvest", ["researcher"])).allow
}
