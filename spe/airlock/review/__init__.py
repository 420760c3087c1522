"""The airlock's human review at the centre: a job's outputs, checked automatically
(`spe.airlock.check_outputs`), are stored centrally without what the checks blocked, in
one request per job with a section per site (a site arriving after reviews voids them; a
request that kept nothing is closed with its reasons for the requester); two
different output checkers, neither the requester nor anyone named on the permit, approve
them before the requester (or a member of the permit) may download them. Suspending or
revoking the permit withholds what is still pending. Every step asks `policies/airlock`.

    service.submit_outputs(session, job_id=..., node_id=..., pid=..., requester=...,
                           output_dir=..., storage_dir=..., rules=...,
                           awaiting=[...])                      # a site's outputs arrive
    service.settle_collected(session, job_id, awaiting, policy=...)  # closes or releases
    withhold.withhold_for_permit(session, pid, policy=..., audit=...)   # given to spe/permits

spe.airlock depends on spe.permits, never the reverse: the central app hands
`withhold_for_permit` to the permit service (`Permits(on_stopped=...)`).
"""
