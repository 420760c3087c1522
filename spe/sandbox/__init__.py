"""The job sandbox: bubblewrap as a host uid of the job's own under a seccomp filter, with
no network, fresh namespaces, read-only extract and code, a writable scratch and output
directory with quotas, rlimits, cgroups and a wall-clock kill.

    from spe.sandbox import Limits, run
    result = run(code_dir, "main.py", extract_dir, output_dir, Limits(wall_seconds=60))
"""

from spe.sandbox.limits import Limits
from spe.sandbox.runner import (
    OutputEntry,
    SandboxError,
    SandboxResult,
    SandboxUnavailable,
    run,
)

__all__ = ["Limits", "OutputEntry", "SandboxError", "SandboxResult", "SandboxUnavailable",
           "run"]
