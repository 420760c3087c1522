"""The airlock's human review at the centre: a job's outputs, checked automatically
(`spe.airlock.check_outputs`), are stored centrally without what the checks blocked; two
different output checkers, neither the requester nor anyone named on the permit, approve
them before the requester (or a member of the permit) may download them. Suspending or
revoking the permit withholds what is still pending. Every step asks `policies/airlock`.

    service.submit_outputs(session, job_id=..., node_id=..., pid=..., requester=...,
                           output_dir=..., storage_dir=..., rules=...)  # the job side
    withhold.withhold_for_permit(session, pid, policy=..., audit=...)   # spe/permits

Modules are imported by name (no re-exports here), so `spe.permits.service` can import
`withhold` without importing `service`, which imports it.
"""
