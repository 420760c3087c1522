"""What one sandboxed job may use: a pydantic `Limits` with sane defaults and hard caps."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MiB = 1024 * 1024

# The names a result reports in `limits_hit`, besides the fields below.
LIMIT_NAMES = ("cpu", "memory", "processes", "open_files", "file_size", "output", "scratch",
               "wall")


class Limits(BaseModel):
    """Per-job limits. Defaults suit an analysis job; every field has a hard cap (`le`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # RLIMIT_CPU (soft; SIGXCPU, then SIGKILL one second later). Per process.
    cpu_seconds: int = Field(default=900, ge=1, le=24 * 3600)
    # RLIMIT_AS: address space per process (a MemoryError, or a crash for C code).
    memory_mb: int = Field(default=4096, ge=64, le=64 * 1024)
    # A pids cgroup (pids.max) when one can be created, a process count watch where not,
    # and RLIMIT_NPROC a little above (per uid: each job has its own) as a backstop.
    processes: int = Field(default=128, ge=1, le=4096)
    # RLIMIT_NOFILE.
    open_files: int = Field(default=256, ge=16, le=65536)
    # RLIMIT_FSIZE: no single file larger than this (EFBIG, "File too large").
    file_size_mb: int = Field(default=1024, ge=1, le=64 * 1024)
    # Total apparent size of /output, polled during the run and checked after it.
    output_mb: int = Field(default=1024, ge=1, le=64 * 1024)
    # /scratch: a tmpfs of this size (kernel-enforced), or a polled quota on a given dir.
    scratch_mb: int = Field(default=1024, ge=1, le=64 * 1024)
    # Wall clock: the whole sandbox is killed (SIGKILL) after this many seconds.
    wall_seconds: float = Field(default=3600, gt=0, le=7 * 24 * 3600)

    @property
    def tmp_mb(self) -> int:
        """Size of /tmp and of /dev/shm (each a tmpfs, RAM-backed): small on purpose."""
        return min(self.scratch_mb, 256)


#: Limits as a job submission asks for them: bounded here, checked against `Limits` by the
#: node that runs the job (a refusal names the field).
RequestedLimits = Annotated[
    dict[Annotated[str, Field(max_length=32)],
         Annotated[int, Field(ge=0, le=2**53)] | Annotated[float, Field(ge=0, le=2**53)]],
    Field(max_length=len(Limits.model_fields)),
]
