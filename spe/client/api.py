"""The hub's API as JSON: one method per call the CLI and the notebook client make. The
`Client` turns these answers into DataFrames; the CLI prints them. Inputs that can be
checked here are, before anything is sent (`InvalidInput`)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from spe.client.errors import ClientError, InvalidInput
from spe.client.transport import Hub

#: Effective statuses of an issued permit (the API filters on the stored one, `issued`).
ISSUED = {"active", "not_yet_active", "expired"}
#: A job part's states that will not change: the node's final ones, and the hub's for a
#: part no node holds ("not submitted") or that its node refused to show ("refused").
ENDED = {"succeeded", "failed", "timed_out", "cancelled", "not submitted", "refused"}


def job_path(job_id: str, tail: str = "") -> str:
    job_id = str(job_id).strip()
    if not job_id or not job_id.isalnum():
        raise InvalidInput(f"{job_id!r} is not a job id")
    return f"/api/v1/jobs/{job_id}{tail}"


def permit_path(pid: str, tail: str = "") -> str:
    pid = str(pid).strip()
    if not pid or "/" in pid or "?" in pid or "#" in pid:
        raise InvalidInput(f"{pid!r} is not a permit id")
    return f"/api/v1/permits/{pid}{tail}"


def run_path(run_id: str, tail: str = "") -> str:
    run_id = str(run_id).strip()
    if not run_id or not run_id.isalnum():
        raise InvalidInput(f"{run_id!r} is not a run id")
    return f"/api/v1/fed/runs/{run_id}{tail}"


def invalid(what: str, exc) -> InvalidInput:
    """A pydantic ValidationError, one line per field, in the API's words (spe.errors)."""
    from spe.errors import field_name, human_message

    lines = []
    for e in exc.errors():
        where = field_name(e["loc"])
        message = human_message(e)
        lines.append(f"  {where}: {message}" if e["loc"] else f"  {message}")
    return InvalidInput(f"{what} is not valid:\n" + "\n".join(lines))


def validated_query(data: dict, kind: str | None = None, by: list[str] | None = None) -> dict:
    """The query as the hub takes it, `kind` and `by` overriding its `answer`."""
    from pydantic import ValidationError

    from spe.wire.query import Query

    if not isinstance(data, dict):
        raise InvalidInput("a query is a JSON object with `where` (and `answer`)")
    if kind or by:
        answer = dict(data.get("answer") or {})
        answer["kind"] = kind or ("stratified" if by else answer.get("kind", "count"))
        if by:
            answer["by"] = list(by)
        data = {**data, "answer": answer}
    try:
        return Query.model_validate(data).model_dump(mode="json")
    except ValidationError as exc:
        raise invalid("the query", exc) from None


def validated_application(application: dict) -> dict:
    """An application as POST /api/v1/permits takes it (`// field` comments dropped)."""
    from pydantic import ValidationError

    from spe.permits.schemas import ApplicationIn

    try:
        return ApplicationIn.model_validate(application).model_dump(mode="json",
                                                                    exclude_unset=True)
    except ValidationError as exc:
        raise invalid("the application", exc) from None


def validated_review(decision: str, reason: str = "",
                     conditions: list[str] | None = None) -> dict:
    from pydantic import ValidationError

    from spe.permits.schemas import ReviewIn

    try:
        return ReviewIn(decision=decision, reason=reason,
                        conditions=conditions or []).model_dump(mode="json")
    except ValidationError as exc:
        raise invalid("the review", exc) from None


def pack_job_code(code: str | Path, entry: str = "main.py") -> tuple[dict[str, str], str]:
    """The submission's code: a folder packed (`code`), or a script file or Python source
    sent as `script`. Returns the body's part and the entry."""
    from spe.wire.code_archive import CodeArchiveError, pack_code

    if isinstance(code, str) and "\n" in code:  # the source itself
        return {"script": code}, entry
    path = Path(code)
    if path.is_file():
        try:
            return {"script": path.read_text()}, path.name if entry == "main.py" else entry
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{path}: {exc}") from None
    if not path.is_dir():
        raise InvalidInput(f"{path}: no such folder (CODE_DIR is the folder of the job's "
                           f"code)")
    if not (path / entry).is_file():
        raise InvalidInput(f"{path / entry}: no such file: the script the job runs, "
                           f"relative to {path} (--entry, default main.py)")
    try:
        return {"code": base64.b64encode(pack_code(path)).decode()}, entry
    except (CodeArchiveError, OSError) as exc:
        raise InvalidInput(str(exc)) from None


def _inside(folder: Path, relative: str) -> Path:
    """`folder / relative`, refusing a path that would leave `folder`."""
    parts = relative.split("/")
    if any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise ClientError(f"refusing an unsafe file name from the hub: {relative!r}")
    return folder.joinpath(*parts)


class HubApi:
    """The central API's calls a researcher (or an approver, the access body) makes."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    # ---- catalogue (public: no token sent) -------------------------------------------

    def catalogue(self, timeout: float | None = None) -> list[dict]:
        rows = self.hub.call("GET", "/api/v1/catalogue", auth=False, timeout=timeout)
        if not isinstance(rows, list):
            raise ClientError("the hub's catalogue is not a list of datasets")
        return rows

    def catalogue_search(self, params: dict[str, Any]) -> dict:
        return self.hub.call("GET", "/api/v1/catalogue/search", params=params, auth=False)

    def dataset(self, identifier: str) -> dict:
        return self.hub.call("GET", f"/api/v1/catalogue/datasets/{quote(identifier)}",
                             auth=False)

    # ---- federated queries and statistics --------------------------------------------

    def query(self, body: dict, permit: str | None = None,
              timeout: float | None = None) -> dict:
        return self.hub.call("POST", "/api/v1/query", json=body, timeout=timeout,
                             params={"permit": permit} if permit else None)

    # ---- permits ---------------------------------------------------------------------

    def permits(self, status: list[str] | None = None, mine: bool = False,
                timeout: float | None = None) -> list[dict]:
        wanted = [s.strip() for s in status or [] if s.strip()]
        if len(wanted) > 12:
            raise InvalidInput("at most 12 --status")
        asked = sorted({"issued" if s in ISSUED else s for s in wanted})
        params: dict[str, Any] = {"status": asked} if asked else {}
        if mine:
            params["mine"] = "true"
        rows = self.hub.call("GET", "/api/v1/permits", params=params, timeout=timeout)
        if wanted:  # `issued` stands for the three effective statuses; keep those asked
            rows = [p for p in rows if p["status"] in wanted
                    or ("issued" in wanted and p["status"] in ISSUED)]
        return rows

    def permit(self, pid: str, timeout: float | None = None) -> dict:
        return self.hub.call("GET", permit_path(pid), timeout=timeout)

    def apply(self, application: dict, submit: bool = False,
              timeout: float | None = None) -> dict:
        """Save an application as a draft (and submit it); the permit as the hub has it."""
        body = validated_application(application)
        created = self.hub.call("POST", "/api/v1/permits", json=body, timeout=timeout)
        if submit:
            pid = created["id"]
            created = self.hub.call("POST", permit_path(pid, "/submit"), timeout=timeout,
                                    who=f"draft {pid} was saved, but the hub")
        return created

    def submit_permit(self, pid: str, timeout: float | None = None) -> dict:
        return self.hub.call("POST", permit_path(pid, "/submit"), timeout=timeout)

    def amend(self, pid: str, members: list[str], datasets: list[str], reason: str,
              timeout: float | None = None) -> dict:
        from pydantic import ValidationError

        from spe.permits.schemas import AmendmentIn

        try:
            body = AmendmentIn(members=members, datasets=datasets,
                               reason=reason).model_dump(mode="json")
        except ValidationError as exc:
            raise invalid("the amendment", exc) from None
        return self.hub.call("POST", permit_path(pid, "/amendments"), json=body,
                             timeout=timeout)

    def review(self, pid: str, decision: str, reason: str = "",
               conditions: list[str] | None = None, timeout: float | None = None) -> dict:
        body = validated_review(decision, reason, conditions)
        return self.hub.call("POST", permit_path(pid, "/reviews"), json=body,
                             timeout=timeout)

    def decide(self, action: str, pid: str, reason: str = "",
               timeout: float | None = None) -> dict:
        if len(reason) > 5_000:
            raise InvalidInput("--reason is longer than 5000 characters")
        return self.hub.call("POST", permit_path(pid, f"/{action}"),
                             json={"reason": reason}, timeout=timeout)

    # ---- jobs ------------------------------------------------------------------------

    def submit_job(self, code: str | Path, permit: str, *, entry: str = "main.py",
                   nodes: list[str] | None = None, limits: dict[str, Any] | None = None,
                   environment: str | None = None, timeout: float | None = None) -> dict:
        part, entry = pack_job_code(code, entry)
        body: dict[str, Any] = {"permit": permit, **part, "entry": entry,
                                "limits": {k: v for k, v in (limits or {}).items()
                                           if v is not None},
                                "nodes": list(nodes) if nodes else None}
        if environment is not None:  # sent only when given: else the hub's default
            body["environment"] = environment
        return self.hub.call("POST", "/api/v1/jobs", json=body, timeout=timeout)

    def submit_crate(self, crate: bytes, timeout: float | None = None) -> dict:
        """Send a Five Safes request crate (a zipped BagIt bag, spe.crate) as a job."""
        return self.hub.call("POST", "/api/v1/jobs/crate", content=crate,
                             content_type="application/zip", timeout=timeout)

    def result_crate(self, job_id: str, timeout: float | None = None) -> bytes:
        """The job's result as a Five Safes RO-Crate (a zipped BagIt bag)."""
        return self.hub.request("GET", job_path(job_id, "/crate"), timeout=timeout).content

    def job(self, job_id: str, timeout: float | None = None) -> dict:
        return self.hub.call("GET", job_path(job_id), timeout=timeout)

    def jobs(self, timeout: float | None = None) -> list[dict]:
        """Your jobs, newest first."""
        jobs = self.hub.call("GET", "/api/v1/jobs", timeout=timeout)
        if not isinstance(jobs, list):
            raise ClientError("the hub's answer is not a list of jobs")
        return sorted(jobs, key=lambda j: str(j.get("created_at", "")), reverse=True)

    def cancel(self, job_id: str, timeout: float | None = None) -> dict:
        return self.hub.call("POST", job_path(job_id, "/cancel"), timeout=timeout)

    def outputs(self, job_id: str, timeout: float | None = None) -> list[dict]:
        return self.hub.call("GET", job_path(job_id, "/outputs"), timeout=timeout)

    # ---- federated runs in rounds ---------------------------------------------------------

    def start_run(self, body: dict, timeout: float | None = None) -> dict:
        """A federated run (`spe fed run` builds the body: app, permit, nodes, rounds...)."""
        return self.hub.call("POST", "/api/v1/fed/runs", json=body, timeout=timeout)

    def run(self, run_id: str, timeout: float | None = None) -> dict:
        return self.hub.call("GET", run_path(run_id), timeout=timeout)

    def runs(self, timeout: float | None = None) -> list[dict]:
        return self.hub.call("GET", "/api/v1/fed/runs", timeout=timeout)

    def cancel_run(self, run_id: str, timeout: float | None = None) -> dict:
        return self.hub.call("POST", run_path(run_id, "/cancel"), timeout=timeout)

    def run_outputs(self, run_id: str, timeout: float | None = None) -> list[dict]:
        return self.hub.call("GET", run_path(run_id, "/outputs"), timeout=timeout)

    # ---- administration (an admin's token) ------------------------------------------------

    def federation_nodes(self) -> list[dict]:
        return self.hub.call("GET", "/api/v1/federation/nodes")

    def add_node(self, node_id: str, url: str, reason: str = "") -> dict:
        return self.hub.call("POST", "/api/v1/federation/nodes",
                             json={"node_id": node_id, "url": url, "reason": reason})

    def remove_node(self, node_id: str, revoke: bool = False, reason: str = "") -> dict:
        return self.hub.call("DELETE", f"/api/v1/federation/nodes/{quote(node_id, safe='')}",
                             params={"revoke": str(revoke).lower(), "reason": reason})

    def users(self, limit: int = 500) -> list[dict]:
        return self.hub.call("GET", "/api/v1/users", params={"limit": limit})

    def set_suspension(self, uid: int, suspended: bool, reason: str = "") -> dict:
        return self.hub.call("PUT", f"/api/v1/users/{int(uid)}/suspension",
                             json={"suspended": suspended, "reason": reason})

    def file(self, request_id: str, name: str, sha256: str,
             timeout: float | None = None) -> bytes:
        """One released file of an airlock request, its checksum checked."""
        resp = self.hub.request("GET", f"/api/v1/airlock/requests/{request_id}/files/"
                                f"{quote(name)}", timeout=timeout)
        if hashlib.sha256(resp.content).hexdigest() != sha256:
            raise ClientError(f"{name}: checksum mismatch; not written")
        return resp.content

    def download_released(self, found: list[dict], what: str, to: Path,
                          nodes: list[str] | None = None, timeout: float | None = None
                          ) -> Iterator[tuple[Path, dict, int]]:
        """The released files of airlock requests `found` written into `to/<site>/<file>`,
        checksums checked; yields each (path, the file's entry, bytes) as written."""
        released = [(req, f) for req in found if req["state"] == "released"
                    for f in req["files"] if f["stored"] and (not nodes
                                                              or f["node_id"] in nodes)]
        if not released:
            states = ", ".join(f"request {r['id'][:12]}: {r['state']}" for r in found) \
                or "none yet"
            raise ClientError(f"no released outputs for {what} ({states})")
        for req, f in released:
            content = self.file(req["id"], f["name"], f["sha256"], timeout=timeout)
            target = _inside(Path(to), f["name"])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            yield target, f, len(content)


def part_line(n: dict) -> str:
    """One job part's state in a few words: "staging (dicom, 40%)", "failed: time limit"."""
    words = n["state"]
    progress = n.get("progress")
    if n["state"] == "staging" and progress:
        words += f" ({progress['step']}, {progress['percent']}%)"
    if n.get("reason") and n["state"] not in ("queued", "staging", "running"):
        words += f": {n['reason']}"
    return words


def ended(job: dict) -> bool:
    return all(n["state"] in ENDED for n in job["nodes"])
