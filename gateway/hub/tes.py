"""GA4GH TES v1.1 onto the hub's jobs, both ways: a task into a job submission (`plan`),
a job's view into a task (`task_of`, `task_state`). A task is one job
(gateway/hub/jobs.py), created, read, listed and cancelled through `jobs.submit`,
`jobs.status`, `jobs.mine` and `jobs.cancel` (gateway/hub/tes_service.py), so the permit,
the targets, the access policy and the audit are theirs.

What a task may say, and what it may not (each refusal a 400 naming the field and why):

- one executor; its `image` names an analysis environment the hub lists (its
  requirements files, gateway/hub/environments.py), bare
  (`statistics`) or in the SPE's own repository (`spe/analysis:statistics`): no other
  image is pulled or run. Its `command` is `["python", ENTRY]` (or `python3`), ENTRY one
  of the inputs, as `/code/main.py` or `main.py`; no arguments. No `env`, no `stdin`,
  `stdout` or `stderr` (what the job prints is its log, an output for the airlock);
  `workdir` unset or `/scratch` (the sandbox's working directory).
- `inputs` are the code: files given inline (`content`) at paths under `/code/`. An input
  by `url` is refused: the hub fetches no URL a task names (SSRF), and the data is the
  permit's extract at each node (`/extract`), never an input.
- `outputs` are refused: a job's outputs go to the central airlock and reach the
  researcher only after two output checkers approve (`GET /api/v1/jobs/{id}/outputs`),
  never to a URL a task names.
- `tags`: `permit` (required) is the data permit; `nodes` (optional, comma-separated)
  the institutions to run at (default: all of the permit's). Other tags are kept.
- `resources`: `ram_gb` -> `memory_mb`, `disk_gb` -> `scratch_mb`; `backend_parameters`
  may set any sandbox limit by its name (spe.sandbox.limits.Limits); `cpu_cores` and
  `preemptible` are kept but change nothing (the sandbox limits CPU time, not cores);
  `zones` are refused (name institutions with the tag `nodes`). `volumes` are refused.
"""

from __future__ import annotations

import base64
import math
import tempfile
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.hub import jobs
from spe.errors import SPEError, validation_reason
from spe.jobs.models import TesTaskRecord
from spe.sandbox.limits import Limits
from spe.wire.code_archive import CodeArchiveError, pack_code
from spe.wire.jobs import MAX_ARCHIVE_BYTES, CodeTooLarge
from spe.wire.tes import (
    State,
    TesExecutorOut,
    TesInputOut,
    TesResourcesOut,
    TesTask,
    TesTaskIn,
    TesTaskLog,
    View,
)

#: The SPE's own image repository: `spe/analysis:<environment>` names one of them too.
IMAGE_REPOSITORY = "spe/analysis"
CODE_ROOT = "/code"
WORKDIR = "/scratch"
PYTHONS = frozenset({"python", "python3"})
#: Inline inputs of one task, together (bigger code goes as a tar.gz: `spe job submit`).
MAX_INLINE_CHARS = 8 * 1024 * 1024
#: GET /tasks: the specification's default page size and bound ("less than 2048").
DEFAULT_PAGE_SIZE = 256
MAX_PAGE_SIZE = 2047
OUTPUTS_REFUSED = ("outputs go to the central airlock and are released to the researcher "
                   "only after two output checkers approve (GET /api/v1/jobs/{id}/outputs); "
                   "a task may not name where its outputs go")
URL_INPUT_REFUSED = ("the hub fetches no URL a task names; give the file's text in "
                     "`content` (the data is the permit's extract at /extract, not an input)")


class TesBadRequest(SPEError):
    """A task this service will not run, or a request it cannot read (TES: 400)."""

    status_code = 400
    error = "invalid_task"


# --- a task into a job submission ---------------------------------------------------------

def environment_of(image: str, environments: Collection[str]) -> str:
    name = image.removeprefix(f"{IMAGE_REPOSITORY}:")
    if name not in environments:
        allowed = ", ".join(sorted(environments))
        raise TesBadRequest(
            f"executors[0].image: {image[:80]!r} is not an analysis environment of this "
            f"SPE; use one of {allowed} (or {IMAGE_REPOSITORY}:<name>)")
    return name


def _relative(path: str, where: str) -> str:
    """`path` under the code root, as a relative path of the code archive."""
    if not path.startswith(CODE_ROOT + "/"):
        raise TesBadRequest(f"{where}: {path[:80]!r} is not under {CODE_ROOT}/ (the code)")
    parts = path[len(CODE_ROOT) + 1:].split("/")
    if any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
        raise TesBadRequest(f"{where}: {path[:80]!r} is not a plain path under "
                            f"{CODE_ROOT}/")
    return "/".join(parts)


def code_of(task: TesTaskIn) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The inputs as files of the code folder (relative path -> text), and as kept."""
    files: dict[str, str] = {}
    kept: list[dict[str, Any]] = []
    for i, item in enumerate(task.inputs or []):
        where = f"inputs[{i}]"
        if item.url is not None:
            raise TesBadRequest(f"{where}.url: {URL_INPUT_REFUSED}")
        if item.type != "FILE":
            raise TesBadRequest(f"{where}.type: only FILE inputs given inline are taken")
        if item.content is None:
            raise TesBadRequest(f"{where}.content: required (the file's text)")
        relative = _relative(item.path, f"{where}.path")
        if relative in files:
            raise TesBadRequest(f"{where}.path: {item.path!r} is given twice")
        files[relative] = item.content
        kept.append(item.model_dump(exclude_none=True, exclude={"streamable"}))
    if not files:
        raise TesBadRequest(f"inputs: the code is required, as files under {CODE_ROOT}/ "
                            "given inline (content)")
    if sum(len(text) for text in files.values()) > MAX_INLINE_CHARS:
        raise TesBadRequest(f"inputs: over {MAX_INLINE_CHARS // (1024 * 1024)} MiB of "
                            "inline content; send larger code with `spe job submit`")
    return files, kept


def entry_of(task: TesTaskIn, files: dict[str, str]) -> str:
    executor = task.executors[0]
    command = executor.command
    if len(command) != 2 or command[0] not in PYTHONS:
        raise TesBadRequest(
            "executors[0].command: must be [\"python\", ENTRY] with ENTRY one of the "
            f"inputs (e.g. [\"python\", \"{CODE_ROOT}/main.py\"]); arguments are not "
            "passed (read parameters from a file among the inputs)")
    entry = command[1].removeprefix("./")
    relative = (_relative(entry, "executors[0].command[1]") if entry.startswith("/")
                else _relative(f"{CODE_ROOT}/{entry}", "executors[0].command[1]"))
    if relative not in files:
        raise TesBadRequest(f"executors[0].command[1]: {command[1][:80]!r} is not one of "
                            "the inputs")
    if executor.workdir not in (None, WORKDIR):
        raise TesBadRequest(f"executors[0].workdir: the job runs in {WORKDIR} (writable, "
                            f"private; {CODE_ROOT} is read-only); leave it unset")
    if executor.env:
        raise TesBadRequest("executors[0].env: not taken; the sandbox's environment is "
                            "fixed (put settings in a file among the inputs)")
    for stream in ("stdin", "stdout", "stderr"):
        if getattr(executor, stream) is not None:
            raise TesBadRequest(
                f"executors[0].{stream}: not taken; what the job prints becomes its log, "
                "an output reviewed in the airlock like the others")
    return relative


def limits_of(task: TesTaskIn) -> dict[str, int | float]:
    """The sandbox limits a task's resources ask for (the rest: the nodes' defaults)."""
    resources = task.resources
    if resources is None:
        return {}
    if resources.zones:
        raise TesBadRequest("resources.zones: not taken; name institutions with the tag "
                            "`nodes` (comma-separated)")
    limits: dict[str, int | float] = {}
    if resources.ram_gb is not None:
        limits["memory_mb"] = math.ceil(resources.ram_gb * 1024)
    if resources.disk_gb is not None:
        limits["scratch_mb"] = math.ceil(resources.disk_gb * 1024)
    fields = Limits.model_fields
    for key, value in (resources.backend_parameters or {}).items():
        # Unknown keys are refused whether or not backend_parameters_strict is set: a
        # limit asked for and silently not applied is not a limit.
        if key not in fields:
            raise TesBadRequest(f"resources.backend_parameters: {key[:64]!r} is not a "
                                f"sandbox limit; known: {', '.join(fields)}")
        if key in limits:
            raise TesBadRequest(f"resources.backend_parameters.{key}: given twice (by "
                                "ram_gb or disk_gb too)")
        try:
            number = float(value)
        except ValueError:
            raise TesBadRequest(f"resources.backend_parameters.{key}: not a number"
                                ) from None
        if not math.isfinite(number):
            raise TesBadRequest(f"resources.backend_parameters.{key}: not a number")
        limits[key] = number if fields[key].annotation is float else math.ceil(number)
    try:
        Limits(**limits)
    except ValidationError as exc:
        raise TesBadRequest("resources: " + validation_reason(exc.errors())) from None
    return limits


def targets_of(task: TesTaskIn) -> tuple[str, list[str] | None]:
    tags = task.tags or {}
    permit = tags.get("permit", "").strip()
    if not permit:
        raise TesBadRequest("tags.permit: required, the data permit the task runs under")
    if len(permit) > 32:
        raise TesBadRequest("tags.permit: not a permit id (at most 32 characters)")
    nodes = None
    if "nodes" in tags:
        nodes = sorted({n.strip() for n in tags["nodes"].split(",") if n.strip()})
        if not nodes or len(nodes) > 100 or any(len(n) > 64 for n in nodes):
            raise TesBadRequest("tags.nodes: institution ids, comma-separated")
    return permit, nodes


def plan(task: TesTaskIn, environments: Collection[str]
         ) -> tuple[jobs.JobSubmission, dict[str, Any]]:
    """The job submission for `task`, and what the TES record keeps; a `TesBadRequest`
    naming the first thing this service will not run. `environments`: the names an
    image may give (the hub's list, so a new environment needs no change here)."""
    if len(task.executors) != 1:
        raise TesBadRequest("executors: exactly one is taken (one analysis per task)")
    if task.outputs:
        raise TesBadRequest(f"outputs: {OUTPUTS_REFUSED}")
    if task.volumes:
        raise TesBadRequest("volumes: not taken; one executor, which writes to /output "
                            "(its outputs) and /scratch")
    environment = environment_of(task.executors[0].image, environments)
    files, kept = code_of(task)
    entry = entry_of(task, files)
    limits = limits_of(task)
    permit, nodes = targets_of(task)
    with tempfile.TemporaryDirectory(prefix="tes-code-") as folder:
        root = Path(folder)
        try:  # a file where a folder is wanted, a name too long, text that is not UTF-8
            for relative, text in files.items():
                target = root / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
            packed = pack_code(root)
        except (CodeArchiveError, OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (
                "not UTF-8 text" if isinstance(exc, UnicodeError) else str(exc))
            raise TesBadRequest(f"inputs: not a code folder: {reason}") from None
    if len(packed) > MAX_ARCHIVE_BYTES:
        raise CodeTooLarge("the packed inputs are over the code limit")
    try:
        submission = jobs.JobSubmission(
            permit=permit, code=base64.b64encode(packed).decode(), entry=entry,
            limits=limits, nodes=nodes, environment=environment)
    except ValidationError as exc:  # an entry path over the jobs' bound, say
        raise TesBadRequest(validation_reason(exc.errors())) from None
    executor = task.executors[0].model_dump(exclude_none=True,
                                            include={"image", "command", "workdir"})
    resources = (task.resources.model_dump(exclude_none=True, exclude={"zones"})
                 if task.resources else {})
    return submission, {"name": task.name, "description": task.description,
                        "tags": dict(task.tags or {}), "environment": environment,
                        "executor": executor, "inputs": kept, "resources": resources}


# --- the job's state as TES's --------------------------------------------------------------

#: A part's state at its node (or what kept the hub from learning it) -> TES.
PART_STATES: dict[str, State] = {
    "queued": "QUEUED", "staging": "INITIALIZING", "running": "RUNNING",
    # Held until the institution's approvers approve the code: waiting, like a queued job.
    "awaiting_approval": "QUEUED",
    "succeeded": "COMPLETE", "failed": "EXECUTOR_ERROR", "timed_out": "EXECUTOR_ERROR",
    "cancelled": "CANCELED", "refused": "SYSTEM_ERROR", "unreachable": "SYSTEM_ERROR",
    "error": "SYSTEM_ERROR", "not submitted": "SYSTEM_ERROR",
}
ACTIVE: tuple[State, ...] = ("RUNNING", "INITIALIZING", "QUEUED")  # first found wins


def task_state(view: jobs.JobView) -> State:
    """The task's state from its parts': while a part is active, the most advanced active
    state (CANCELING if another part was cancelled); once none is, CANCELED if a part was
    cancelled, else EXECUTOR_ERROR if one failed or timed out, else SYSTEM_ERROR if one was
    refused, unreachable or never sent, else COMPLETE (every part succeeded)."""
    states = {PART_STATES.get(n.state, "UNKNOWN") for n in view.nodes}
    if not states:
        return "UNKNOWN"
    active = [s for s in ACTIVE if s in states]
    if active:
        return "CANCELING" if "CANCELED" in states else active[0]
    for final in ("UNKNOWN", "CANCELED", "EXECUTOR_ERROR", "SYSTEM_ERROR"):
        if final in states:
            return final  # type: ignore[return-value]
    return "COMPLETE"


def _when(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _part_log(node: jobs.NodeJobView, full: bool) -> TesTaskLog:
    metadata = {"node": node.node_id, "state": node.state}
    if node.reason:
        metadata["reason"] = node.reason
    if node.airlock:
        metadata["airlock_request"] = node.airlock
    system_logs = None
    if full:
        said = f"{node.node_id}: {node.state}" + (f" ({node.reason})" if node.reason else "")
        system_logs = [said]
        if node.airlock:
            system_logs.append(
                f"{node.node_id}: outputs in airlock request {node.airlock} "
                f"({node.outputs or 'collected'}); released to the researcher only after "
                "two output checkers approve: GET /api/v1/jobs/{id}/outputs")
        elif node.outputs:
            system_logs.append(f"{node.node_id}: {node.outputs}")
    # No executor log: what the job printed is an output (the airlock's), and its exit
    # code is not told (spe.wire.jobs); no output file log: outputs have no URL.
    return TesTaskLog(metadata=metadata, start_time=_when(node.started_at),
                      end_time=_when(node.finished_at), system_logs=system_logs)


def task_of(record: TesTaskRecord, view: jobs.JobView, shown: View) -> TesTask:
    state = task_state(view)
    if shown == "MINIMAL":
        return TesTask(id=view.id, state=state)
    full = shown == "FULL"
    inputs = [TesInputOut(**{k: v for k, v in item.items()
                             if full or k != "content"}) for item in record.inputs]
    return TesTask(
        id=view.id, state=state, name=record.name, description=record.description,
        inputs=inputs, resources=TesResourcesOut(**record.resources),
        executors=[TesExecutorOut(**record.executor)], tags=dict(record.tags),
        logs=[_part_log(n, full) for n in view.nodes], creation_time=view.created_at)


__all__ = ["PART_STATES", "TesBadRequest", "plan", "task_of", "task_state"]
