"""GA4GH Task Execution Service (TES) v1.1 messages, as the specification's OpenAPI
document (ga4gh/task-execution-schemas, tag v1.1, `openapi/task_execution_service.
openapi.yaml`) names them: `tesTask` and its parts, `tesCreateTaskResponse`,
`tesListTasksResponse`, `tesServiceInfo` and the `tesState` enum.

What a client sends is read strictly: a field the specification does not name is refused
(a 400 naming it), never silently dropped, and every string and list has a bound. The
read-only fields of a task (`id`, `state`, `logs`, `creation_time`) are accepted and
ignored, as OpenAPI's `readOnly` says, so that a task read back can be sent again.
What the service answers carries only the specification's fields, so that a client that
maps them strictly (py-tes does) reads it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Where the API is served, as the specification's `servers` says.
TES_PREFIX = "/ga4gh/tes/v1"
TES_VERSION = "1.1.0"

State = Literal["UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "COMPLETE",
                "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED", "CANCELING"]
STATES: tuple[str, ...] = State.__args__  # type: ignore[attr-defined]
View = Literal["MINIMAL", "BASIC", "FULL"]
FileType = Literal["FILE", "DIRECTORY"]

#: Bounds of what a client sends (the specification sets none; the code's own limits are
#: spe.wire.jobs').
MAX_CONTENT_CHARS = 1024 * 1024  # one inline input (the spec asks for at least 128 KiB)
MAX_INPUTS = 200
MAX_TAGS = 50

Short = Annotated[str, Field(max_length=255)]
Text = Annotated[str, Field(max_length=4096)]
Path = Annotated[str, Field(min_length=1, max_length=1024)]
Url = Annotated[str, Field(max_length=2048)]
TagKey = Annotated[str, Field(min_length=1, max_length=128)]
TagValue = Annotated[str, Field(max_length=1024)]


class _In(BaseModel):
    """What a client sends: every field the specification names, nothing else."""

    model_config = ConfigDict(extra="forbid")


class TesInput(_In):
    name: Short | None = None
    description: Text | None = None
    url: Url | None = None
    path: Path
    type: FileType = "FILE"
    content: Annotated[str, Field(max_length=MAX_CONTENT_CHARS)] | None = None
    streamable: bool | None = None


class TesOutput(_In):
    name: Short | None = None
    description: Text | None = None
    url: Url | None = None  # required by the specification; refused here in any case
    path: Path | None = None
    path_prefix: Path | None = None
    type: FileType = "FILE"


class TesResources(_In):
    cpu_cores: Annotated[int, Field(ge=0, le=4096)] | None = None
    preemptible: bool | None = None
    ram_gb: Annotated[float, Field(ge=0, le=1024 * 1024)] | None = None
    disk_gb: Annotated[float, Field(ge=0, le=1024 * 1024)] | None = None
    zones: list[Short] | None = Field(default=None, max_length=50)
    backend_parameters: dict[Annotated[str, Field(max_length=64)], Short] | None = Field(
        default=None, max_length=50)
    backend_parameters_strict: bool | None = None


class TesExecutor(_In):
    image: Annotated[str, Field(min_length=1, max_length=255)]
    command: list[Annotated[str, Field(max_length=1024)]] = Field(min_length=1,
                                                                   max_length=64)
    workdir: Path | None = None
    stdin: Path | None = None
    stdout: Path | None = None
    stderr: Path | None = None
    env: dict[Annotated[str, Field(max_length=255)], Text] | None = Field(
        default=None, max_length=100)
    ignore_error: bool | None = None


class TesTaskIn(_In):
    """`tesTask` as a client creates it."""

    name: Short | None = None
    description: Text | None = None
    inputs: list[TesInput] | None = Field(default=None, max_length=MAX_INPUTS)
    outputs: list[TesOutput] | None = Field(default=None, max_length=100)
    resources: TesResources | None = None
    executors: list[TesExecutor] = Field(min_length=1, max_length=20)
    volumes: list[Path] | None = Field(default=None, max_length=50)
    tags: dict[TagKey, TagValue] | None = Field(default=None, max_length=MAX_TAGS)
    # Read-only: the server sets them; accepted and ignored.
    id: Annotated[str, Field(max_length=64)] | None = None
    state: State | None = None
    logs: list[Annotated[dict[Annotated[str, Field(max_length=64)], Any],
                         Field(max_length=20)]] | None = Field(default=None, max_length=100)
    creation_time: Annotated[str, Field(max_length=64)] | None = None


# --- what the service answers (None fields are left out) ----------------------------------

class TesInputOut(BaseModel):
    name: str | None = None
    description: str | None = None
    path: str
    type: FileType = "FILE"
    content: str | None = None  # FULL view only


class TesExecutorOut(BaseModel):
    image: str
    command: list[str]
    workdir: str | None = None


class TesResourcesOut(BaseModel):
    cpu_cores: int | None = None
    preemptible: bool | None = None
    ram_gb: float | None = None
    disk_gb: float | None = None
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: bool | None = None


class TesExecutorLog(BaseModel):
    start_time: datetime | None = None
    end_time: datetime | None = None
    # Required by the specification; never set here: a job's exit code is not told
    # (spe.wire.jobs), so there is no executor log entry to give.
    exit_code: int


class TesOutputFileLog(BaseModel):
    url: str
    path: str
    size_bytes: str


class TesTaskLog(BaseModel):
    logs: list[TesExecutorLog] = Field(default_factory=list)
    metadata: dict[str, str] | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    outputs: list[TesOutputFileLog] = Field(default_factory=list)
    system_logs: list[str] | None = None  # FULL view only


class TesTask(BaseModel):
    """`tesTask` as the service answers it, in the view asked for."""

    id: str
    state: State
    name: str | None = None
    description: str | None = None
    inputs: list[TesInputOut] | None = None
    resources: TesResourcesOut | None = None
    executors: list[TesExecutorOut] | None = None
    tags: dict[str, str] | None = None
    logs: list[TesTaskLog] | None = None
    creation_time: datetime | None = None


class TesCreateTaskResponse(BaseModel):
    id: str


class TesCancelTaskResponse(BaseModel):
    pass


class TesListTasksResponse(BaseModel):
    tasks: list[TesTask]
    next_page_token: str | None = None


class TesServiceType(BaseModel):
    group: str = "org.ga4gh"
    artifact: Literal["tes"] = "tes"
    version: str = TES_VERSION


class TesOrganization(BaseModel):
    name: str
    url: str


class TesServiceInfo(BaseModel):
    """GA4GH service-info 1.0.0's `Service` with TES's additions."""

    id: str
    name: str
    type: TesServiceType = Field(default_factory=TesServiceType)
    description: str | None = None
    organization: TesOrganization
    contactUrl: str | None = None  # noqa: N815 - the specification's spelling
    documentationUrl: str | None = None  # noqa: N815
    createdAt: str | None = None  # noqa: N815
    updatedAt: str | None = None  # noqa: N815
    environment: str | None = None
    version: str
    storage: list[str] = Field(default_factory=list)
    tesResources_backend_parameters: list[str] = Field(default_factory=list)  # noqa: N815


__all__ = [
    "MAX_CONTENT_CHARS", "STATES", "TES_PREFIX", "TES_VERSION", "FileType", "State",
    "TesCancelTaskResponse", "TesCreateTaskResponse", "TesExecutor", "TesExecutorLog",
    "TesExecutorOut", "TesInput", "TesInputOut", "TesListTasksResponse", "TesOutput",
    "TesOutputFileLog", "TesResources", "TesResourcesOut", "TesServiceInfo", "TesTask",
    "TesTaskIn", "TesTaskLog", "View",
]
