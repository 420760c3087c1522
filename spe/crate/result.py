"""A job's result as a Five Safes RO-Crate: the code that ran, the permit it ran under,
the released outputs, and every check and review the central audit log holds for the job
and its airlock request, each an `AssessAction` (sign-off, automatic and manual
disclosure checks, the release), packed as a BagIt bag with sha-512 manifests.

What the researcher may not read elsewhere is not in the crate either
(spe.airlock.review.schemas.researcher_view): no outputs before release, only the
released files after; no automatic verdicts or their reasons, which a job's outputs can
be made to say anything in; the automatic checks appear as done, with when."""

from __future__ import annotations

import json
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from spe.crate import terms
from spe.crate.bag import pack
from spe.crate.request import PERMIT_KEY, file_entity
from spe.wire.code_archive import CodeArchiveError, unpack_code

# Which audited actions are checks, and which phase each records.
CHECKS: dict[str, tuple[str, str]] = {
    "job.submit": (terms.SIGN_OFF, "Sign-off: the caller may use the permit, and the job "
                                   "went to its institutions"),
    "airlock.submit": (terms.DISCLOSURE, "Automatic disclosure checks of a site's outputs"),
    "airlock.review": (terms.DISCLOSURE, "An output checker may review the outputs"),
    "airlock.release": (terms.DISCLOSURE, "Release of the outputs"),
    "airlock.reject": (terms.DISCLOSURE, "Rejection of the outputs"),
    "airlock.close": (terms.DISCLOSURE, "Closing of a request every file of which was "
                                        "blocked"),
    "airlock.withhold": (terms.DISCLOSURE, "Withholding of the outputs"),
}
#: Checks whose audited reason counts what the job wrote: left out of the crate.
QUIET = {"airlock.submit"}


@dataclass
class Released:
    name: str  # <site>/<path>
    data: bytes


@dataclass
class JobFacts:
    id: str
    permit: str
    user: str
    entry: str
    code_sha256: str
    created_at: datetime
    nodes: dict[str, dict[str, Any]]
    hub: str  # the hub's URL: the publisher


def _ref(id_: str) -> dict[str, str]:
    return {"@id": id_}


def _iso(at: datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat(timespec="seconds")


def _version() -> str:
    try:
        return metadata.version("ehds-spe")
    except metadata.PackageNotFoundError:
        return "unknown"


def _agent(actor: str, graph: dict[str, dict[str, Any]], hub: str) -> dict[str, str]:
    """A person (a user id names its issuer: `alice@https://...`), else the service."""
    id_ = f"#agent-{actor}"
    if "@" in actor and actor.split("@", 1)[1].startswith("http"):
        graph.setdefault(id_, {"@id": id_, "@type": "Person", "name": actor})
    else:
        # A service of this system acting for the hub (the airlock's collector, say).
        graph.setdefault(id_, {"@id": id_, "@type": "SoftwareApplication", "name": actor,
                               "provider": _ref("#hub"), "url": hub,
                               "version": _version()})
    return _ref(id_)


def _state(job: JobFacts) -> str:
    states = {str(s.get("state") or "queued") for s in job.nodes.values() if s.get("job_id")}
    if not states:
        return terms.FAILED
    if states <= {"succeeded"}:
        return terms.COMPLETED
    if states & {"queued", "staging", "running"}:
        return terms.ACTIVE
    return terms.FAILED


def build(job: JobFacts, *, code: bytes | None, request: Any | None,
          audit: list[Any], released: list[Released]) -> bytes:
    """The zipped bag. `request` is the job's airlock request (or None), `audit` the
    central audit entries about the job and the request, `released` the released files'
    bytes (empty unless the request is released)."""
    graph: dict[str, dict[str, Any]] = {}

    def add(entity: dict[str, Any]) -> None:
        graph[entity["@id"]] = entity

    project = f"#project-{job.permit}"
    action = f"#run-{job.id}"
    with tempfile.TemporaryDirectory(prefix="spe-crate-") as tmp:
        payload = Path(tmp) / "crate"
        payload.mkdir()
        parts: list[dict[str, str]] = []
        main = None
        if code is not None:
            try:
                unpack_code(code, payload / terms.CODE)
            except CodeArchiveError:
                code = None
        if code is not None:
            files = sorted(p.relative_to(payload / terms.CODE).as_posix()
                           for p in (payload / terms.CODE).rglob("*") if p.is_file())
            main = terms.CODE + job.entry
            for f in files:
                entity = file_entity(terms.CODE + f, payload / terms.CODE / f,
                                     description="Part of the job's code.")
                if terms.CODE + f == main:
                    entity.update({"@type": ["File", "SoftwareSourceCode"],
                                   "description": "The entry point the sandbox ran.",
                                   "programmingLanguage": _ref(terms.PYTHON)})
                add(entity)
            add({"@id": terms.CODE, "@type": "Dataset", "name": "The job's code",
                 "description": f"The code that ran (SHA-256 of its archive: "
                                f"{job.code_sha256}).",
                 "hasPart": [_ref(terms.CODE + f) for f in files]})
            parts.append(_ref(terms.CODE))
            add(terms.PYTHON_ENTITY)
        results = []
        for out in released:
            path = payload / terms.OUTPUTS / out.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(out.data)
            id_ = terms.OUTPUTS + out.name
            add(file_entity(id_, path, description="An output released by the airlock."))
            results.append(_ref(id_))
        if results:
            add({"@id": terms.OUTPUTS, "@type": "Dataset", "name": "Released outputs",
                 "description": "The outputs two output checkers released, by site.",
                 "hasPart": results})
            parts.append(_ref(terms.OUTPUTS))

        add({"@id": "#hub", "@type": "Organization", "name": f"EHDS SPE hub at {job.hub}",
             "url": job.hub})
        add({"@id": project, "@type": "Project", "name": f"Data permit {job.permit}",
             "identifier": _ref(f"#permit-{job.permit}")})
        add({"@id": f"#permit-{job.permit}", "@type": "PropertyValue", "name": PERMIT_KEY,
             "value": job.permit})
        run = {"@id": action, "@type": "CreateAction", "name": f"Job {job.id}",
               "actionStatus": _state(job), "startTime": _iso(job.created_at),
               "agent": _agent(job.user, graph, job.hub)}
        if main:
            run["instrument"] = _ref(main)
        if results:
            run["result"] = results
        add(run)
        mentions = [_ref(action)]
        for node_id, sent in sorted(job.nodes.items()):
            id_ = f"#node-{node_id}"
            add({"@id": f"#org-{node_id}", "@type": "Organization", "name": node_id})
            add({"@id": id_, "@type": "AssessAction", "additionalType": _ref(terms.SIGN_OFF),
                 "name": f"{node_id}'s own policy on the job: "
                         + ("accepted" if sent.get("job_id") else "refused"),
                 "object": [_ref("./"), _ref(project)],
                 "agent": _ref(f"#org-{node_id}"),
                 "actionStatus": terms.COMPLETED if sent.get("job_id") else terms.FAILED})
            mentions.append(_ref(id_))
        for entry in audit:
            kind, label = CHECKS[entry.action]
            id_ = f"#audit-{entry.seq}"
            check = {"@id": id_, "@type": "AssessAction", "additionalType": _ref(kind),
                     "identifier": f"audit:{entry.seq}",
                     "name": f"{label}: {'allowed' if entry.decision == 'allow' else 'denied'}",
                     "endTime": _iso(entry.at), "object": _ref("./"),
                     "agent": _agent(entry.actor, graph, job.hub),
                     "actionStatus": (terms.COMPLETED if entry.decision == "allow"
                                      else terms.FAILED)}
            if kind == terms.DISCLOSURE:
                check["disclosureCheckType"] = ("automated" if entry.action == "airlock.submit"
                                                else "manual")
            if entry.action not in QUIET and entry.reason:
                check["description"] = entry.reason
            add(check)
            mentions.append(_ref(id_))
        if request is not None:
            for i, review in enumerate(sorted(request.reviews, key=lambda r: r.at), 1):
                id_ = f"#review-{i}"
                comment = f"#review-{i}-comment"
                add({"@id": id_, "@type": "AssessAction", "additionalType": _ref(
                        terms.DISCLOSURE), "disclosureCheckType": "manual",
                     "name": f"Output checker's review (round {review.round}): "
                             f"{review.decision}",
                     "endTime": _iso(review.at), "object": _ref("./"),
                     "agent": _agent(review.reviewer, graph, job.hub),
                     "actionStatus": (terms.COMPLETED if review.decision == "approve"
                                      else terms.FAILED),
                     **({"comment": _ref(comment)} if review.reason else {})})
                if review.reason:
                    add({"@id": comment, "@type": "Comment", "text": review.reason,
                         "dateCreated": _iso(review.at), "about": _ref(id_),
                         "author": _agent(review.reviewer, graph, job.hub)})
                mentions.append(_ref(id_))
        add({"@id": "#bagit", "@type": "UpdateAction",
             "additionalType": _ref(terms.GENERATE_CHECK_VALUE),
             "name": "BagIt manifests of the crate written", "object": _ref("./"),
             "instrument": _ref(terms.SHA512), "agent": _ref("#hub"),
             "startTime": _iso(datetime.now(UTC)), "actionStatus": terms.COMPLETED})
        add({"@id": terms.SHA512, "@type": "DefinedTerm", "name": "sha-512 algorithm"})
        mentions.append(_ref("#bagit"))
        add(terms.LICENCE_ENTITY)
        add({"@id": terms.FIVE_SAFES, "@type": ["CreativeWork", "Profile"],
             "name": "Five Safes RO-Crate profile", "version": "0.5"})
        root = {"@id": "./", "@type": "Dataset", "conformsTo": _ref(terms.FIVE_SAFES),
                "name": f"Results of job {job.id}",
                "description": f"Job {job.id} under data permit {job.permit}: its code, "
                               "its checks and reviews, and what was released.",
                "datePublished": _iso(datetime.now(UTC)), "publisher": _ref("#hub"),
                "license": _ref(terms.LICENCE), "executionType": "script",
                "mentions": mentions, "sourceOrganization": _ref(project)}
        if main:
            root["mainEntity"] = _ref(main)
        if parts:
            root["hasPart"] = parts
        meta = {"@context": terms.CONTEXTS, "@graph": [
            {"@id": "ro-crate-metadata.json", "@type": "CreativeWork", "about": _ref("./"),
             "conformsTo": _ref(terms.RO_CRATE)}, root, *graph.values()]}
        (payload / "ro-crate-metadata.json").write_text(json.dumps(meta, indent=2))
        identifier = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, job.hub + '/jobs/' + job.id)}"
        return pack(payload, name=f"job-{job.id}", identifier=identifier)
