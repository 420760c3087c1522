"""Run one job in the sandbox and say how it ended.

`run(code_dir, entry, extract_dir, output_dir, limits)` starts `python /code/<entry>` under
bubblewrap (see `bwrap.py` for what the job sees) with rlimits set on the bwrap process
(inherited by everything in the sandbox), in its own session and, where one can be made, its
own pids cgroup. While it runs, this process reads the job's stdout and stderr (keeping the
last 64 KiB of each), watches the wall clock and the size of /output (and of a given
scratch directory), and kills the whole sandbox on any breach: SIGKILL to bwrap's process
group, which takes the sandbox's PID namespace down with it (`--die-with-parent`), then a
sweep of the cgroup. Nothing of the job survives `run`.

If this process dies instead (a worker killed mid-job), bwrap gets SIGKILL from the kernel:
its parent-death signal is set here before exec, because bwrap sets its own only after it has
parsed its arguments and cloned the sandbox, and a death in between would leave it running.

The rlimits and the cgroup are applied in a `preexec_fn` (between fork and exec of bwrap):
plain syscalls only, but still a `preexec_fn`, which CPython warns about in processes with
threads; a threaded caller (the future job runner) may prefer one runner process.
"""

from __future__ import annotations

import ctypes
import os
import resource
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from spe.sandbox.bwrap import GROUP, PASSWD, build_argv, find_bwrap, job_env
from spe.sandbox.cgroup import MemoryCgroup, PidsCgroup
from spe.sandbox.interpreter import InterpreterError, configured_python, resolve
from spe.sandbox.limits import Limits, MiB

TAIL_BYTES = 64 * 1024
POLL_SECONDS = 0.1
SIZE_POLL_SECONDS = 0.25
WATCH_SECONDS = 0.02
MAX_LISTED = 10_000
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_libc = ctypes.CDLL(None, use_errno=True)

State = Literal["succeeded", "failed", "timed_out", "killed"]

# What a job's own error output says when an rlimit stopped it. Only a hint: the job writes
# its stderr, so a limit named from it is reported with source "stderr".
_STDERR_HINTS = (
    ("MemoryError", "memory"),
    ("Cannot allocate memory", "memory"),
    ("std::bad_alloc", "memory"),
    ("[Errno 27] File too large", "file_size"),
    ("[Errno 24] Too many open files", "open_files"),
    ("[Errno 11] Resource temporarily unavailable", "processes"),
)


class SandboxError(RuntimeError):
    """The job could not be started: bad directories, entry or environment."""


class SandboxUnavailable(SandboxError):
    """bubblewrap (or the interpreter the jobs need) is not available on this machine."""


@dataclass
class OutputEntry:
    path: str  # relative to the output directory
    kind: Literal["file", "dir", "symlink", "other"]
    size: int  # apparent size (0 for directories); symlinks are never followed
    target: str | None = None  # a symlink's target, as written


@dataclass
class SandboxResult:
    state: State
    exit_code: int | None  # the job's exit status (None when it ended by a signal)
    signal: int | None  # the signal that ended the job, when it did
    limits_hit: list[str]  # the limit that ended the job first, then any others seen
    limit_source: str | None  # how the first limit is known: monitor|signal|cgroup|stderr
    wall_seconds: float
    cpu_seconds: float  # of the processes that were reaped (the job's, ours exactly)
    stdout_tail: str
    stderr_tail: str
    stdout_bytes: int
    stderr_bytes: int
    output_bytes: int
    outputs: list[OutputEntry] = field(default_factory=list)
    outputs_truncated: bool = False
    processes_enforced_by: str = ""  # "pids cgroup" | "process watch"
    memory_enforced_by: str = ""  # whether the job's processes share one memory limit
    leftover_processes: int = 0  # processes still alive after the final sweep (0 expected)

    @property
    def limit(self) -> str | None:
        return self.limits_hit[0] if self.limits_hit else None

    @property
    def symlinks(self) -> list[OutputEntry]:
        return [e for e in self.outputs if e.kind == "symlink"]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["limit"] = self.limit
        return out


def signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def tree_size(root: Path, listing: list[OutputEntry] | None = None) -> int:
    """Apparent size of everything under `root`, never following a symlink."""
    total = 0
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            kind: str
            target = None
            if entry.is_symlink():
                kind = "symlink"
                try:
                    target = os.readlink(entry.path)
                except OSError:
                    target = None
                size = st.st_size
            elif entry.is_dir(follow_symlinks=False):
                kind, size = "dir", 0
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                kind, size = "file", st.st_size
            else:
                kind, size = "other", 0
            total += size
            if listing is not None and len(listing) <= MAX_LISTED:
                listing.append(OutputEntry(os.path.relpath(entry.path, root), kind, size,
                                           target))  # type: ignore[arg-type]
    return total


def _directory(path: Path | str, what: str, *, writable: bool = False) -> str:
    p = Path(path)
    if not p.is_dir():
        raise SandboxError(f"the {what} directory {p} does not exist or is not a directory")
    if writable and not os.access(p, os.W_OK):
        raise SandboxError(f"the {what} directory {p} is not writable")
    return os.path.realpath(p)


def _entry(code: str, entry: str) -> str:
    if not entry or entry.startswith("/") or ".." in Path(entry).parts:
        raise SandboxError(f"the entry must be a relative path inside the code: {entry!r}")
    target = os.path.realpath(os.path.join(code, entry))
    if not (target.startswith(code + "/") and os.path.isfile(target)):
        raise SandboxError(f"the entry {entry} is not a file inside the code directory")
    return Path(entry).as_posix()


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _pipe_with(data: str) -> int:
    read, write = os.pipe()
    os.write(write, data.encode())  # small: well under the pipe buffer
    os.close(write)
    return read


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # no CONFIG_PROC_CHILDREN: look for the parent pid in /proc/*/stat
        found = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    stat = Path(f"/proc/{name}/stat").read_text()
                except OSError:
                    continue
                if stat.rpartition(")")[2].split()[1] == str(pid):
                    found.append(name)
        return found


def _pid_namespace(bwrap_pid: int) -> str | None:
    """The PID namespace of bwrap's child (the sandbox's init), as /proc names it."""
    for child in _children(bwrap_pid):
        try:
            return os.readlink(f"/proc/{child}/ns/pid")
        except OSError:
            continue
    return None


def processes_in(namespace: str) -> list[int]:
    """Host PIDs of the live processes in a PID namespace (`pid:[...]`); zombies, dead and
    waiting for a reaper outside, are not counted."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") != namespace:
                    continue
                state = Path(f"/proc/{name}/stat").read_text().rpartition(")")[2].split()[0]
            except (OSError, IndexError):
                continue
            if state not in ("Z", "X"):
                found.append(int(name))
    return found


class _Tail:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.buf += chunk
        if len(self.buf) > TAIL_BYTES:
            del self.buf[:-TAIL_BYTES]

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")


def run(
    code_dir: Path | str,
    entry: str,
    extract_dir: Path | str,
    output_dir: Path | str,
    limits: Limits | None = None,
    *,
    scratch_dir: Path | str | None = None,
    env: dict[str, str] | None = None,
    python: str | None = None,
    cancel: threading.Event | None = None,
) -> SandboxResult:
    """Run `python /code/<entry>` in the sandbox; block until it ends (or is killed).
    Setting `cancel` (from another thread: a revoked permit, a cancelled job) kills the
    job within a poll interval; it ends `killed` with the limit "cancelled"."""
    limits = limits or Limits()
    bwrap = find_bwrap()
    if bwrap is None or not os.access(bwrap, os.X_OK):
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed: apt-get install "
                                 "bubblewrap, or set SPE_SANDBOX_BWRAP")
    code = _directory(code_dir, "code")
    extract = _directory(extract_dir, "extract")
    output = _directory(output_dir, "output", writable=True)
    scratch = _directory(scratch_dir, "scratch", writable=True) if scratch_dir else None
    named = {"code": code, "extract": extract, "output": output}
    if scratch:
        named["scratch"] = scratch
    for a, pa in named.items():
        for b, pb in named.items():
            if a < b and _overlap(pa, pb):
                raise SandboxError(f"the {a} and {b} directories overlap ({pa}, {pb})")
    entry = _entry(code, entry)
    try:
        interpreter = resolve(python or configured_python())
    except InterpreterError as exc:
        raise SandboxUnavailable(str(exc)) from None
    try:
        environment = job_env(interpreter, env)
    except ValueError as exc:
        raise SandboxError(str(exc)) from None

    fds = [_pipe_with(PASSWD), _pipe_with(GROUP)]
    if interpreter.pyvenv_cfg is not None:
        fds.append(_pipe_with(interpreter.pyvenv_cfg))
    argv = build_argv(bwrap, interpreter, code_dir=code, entry=entry, extract_dir=extract,
                      output_dir=output, scratch_dir=scratch, limits=limits, env=environment,
                      passwd_fd=fds[0], group_fd=fds[1],
                      venv_cfg_fd=fds[2] if len(fds) > 2 else None)
    cgroup = PidsCgroup.create(limits.processes)
    memory = MemoryCgroup.create(limits.memory_mb * MiB)  # the job's processes together
    rlimits = [
        (resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1)),
        (resource.RLIMIT_AS, (limits.memory_mb * MiB,) * 2),
        (resource.RLIMIT_NPROC, (limits.processes,) * 2),
        (resource.RLIMIT_NOFILE, (limits.open_files,) * 2),
        (resource.RLIMIT_FSIZE, (limits.file_size_mb * MiB,) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    ]

    parent = os.getpid()

    def prepare() -> None:  # in the child, between fork and exec: plain syscalls only
        # Kept across exec (bwrap is not set-id); a parent already gone is checked after.
        if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != parent:
            raise OSError("the job's runner died before the sandbox started")
        if cgroup is not None:
            cgroup.enter()
        if memory is not None:
            memory.enter()
        for which, value in rlimits:
            resource.setrlimit(which, value)

    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={}, cwd="/", pass_fds=fds,
                                start_new_session=True, preexec_fn=prepare)
    except OSError as exc:
        for group in (cgroup, memory):
            if group is not None:
                group.remove()
        raise SandboxUnavailable(f"cannot start bubblewrap ({bwrap}): {exc}") from None
    finally:
        for fd in fds:
            os.close(fd)

    tails = {proc.stdout: _Tail(), proc.stderr: _Tail()}
    selector = selectors.DefaultSelector()
    for stream in tails:
        selector.register(stream, selectors.EVENT_READ)
    deadline = started + limits.wall_seconds
    ended_by: tuple[str, str] | None = None  # (state, limit) decided by the monitor
    status: int | None = None
    usage = None
    next_size_check = started
    exited_at: float | None = None
    namespace: str | None = None

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if cgroup is not None:
            cgroup.kill_all()

    # Without a pids cgroup the process watch is all that bounds a fork bomb: look often.
    poll = POLL_SECONDS if cgroup is not None else WATCH_SECONDS
    while True:
        for key, _ in selector.select(timeout=poll):
            chunk = os.read(key.fd, 65536)
            if chunk:
                tails[key.fileobj].add(chunk)
            else:
                selector.unregister(key.fileobj)
        if status is None:
            pid, raw, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, usage, exited_at = raw, ru, time.monotonic()
        if status is not None and not selector.get_map():
            break
        now = time.monotonic()
        if status is not None:
            if exited_at is not None and now - exited_at > 2:  # pipes held open: end it
                kill()
                break
            continue
        if namespace is None:
            namespace = _pid_namespace(proc.pid)
        if ended_by is not None:
            continue
        if cancel is not None and cancel.is_set():
            ended_by = ("killed", "cancelled")
        elif now >= deadline:
            ended_by = ("timed_out", "wall")
        elif cgroup is None and namespace is not None and \
                len(processes_in(namespace)) > limits.processes + 1:  # + bwrap's init
            ended_by = ("killed", "processes")
        elif now >= next_size_check:
            next_size_check = now + SIZE_POLL_SECONDS
            if tree_size(Path(output)) > limits.output_mb * MiB:
                ended_by = ("killed", "output")
            elif scratch and tree_size(Path(scratch)) > limits.scratch_mb * MiB:
                ended_by = ("killed", "scratch")
        if ended_by is not None:
            kill()
    wall = time.monotonic() - started
    if status is None:  # the break above after killing: reap bwrap now
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for stream in tails:
        stream.close()
    selector.close()

    leftover = 0
    refusals = 0
    oom_kills = 0
    if memory is not None:
        oom_kills = memory.oom_kills()
        memory.kill_all()
        memory.remove()
    if cgroup is not None:
        refusals = cgroup.refusals()
        if not cgroup.kill_all():
            leftover = len(cgroup.pids())
        cgroup.remove()
    elif namespace is not None:  # the namespace dies with its init; make sure it has
        for _ in range(200):
            left = processes_in(namespace)
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        leftover = len(processes_in(namespace))

    listing: list[OutputEntry] = []
    output_bytes = tree_size(Path(output), listing)
    listing.sort(key=lambda e: e.path)
    stderr = tails[proc.stderr].text()

    # How it ended. bwrap exits with the job's status, or 128 + the signal that killed it.
    code_: int | None = proc.returncode
    sig: int | None = None
    if code_ < 0:  # bwrap itself was killed (by us, or from outside)
        sig, code_ = -code_, None
    elif code_ > 128 and signal_name(code_ - 128) != str(code_ - 128):
        sig, code_ = code_ - 128, None
    hits: list[str] = []
    source: str | None = None
    if ended_by is not None:
        state: State = ended_by[0]  # type: ignore[assignment]
        hits.append(ended_by[1])
        source = "monitor"
    elif output_bytes > limits.output_mb * MiB:
        state, source = "killed", "monitor"
        hits.append("output")
    elif sig is not None:
        state = "killed"
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and usage is not None and
                                     usage.ru_utime + usage.ru_stime >= limits.cpu_seconds):
            hits.append("cpu")
            source = "signal"
        elif sig == signal.SIGXFSZ:
            hits.append("file_size")
            source = "signal"
    elif code_ == 0:
        state = "succeeded"
    else:
        state = "failed"
    if refusals and "processes" not in hits:
        hits.append("processes")
        source = source or "cgroup"
    if oom_kills and "memory" not in hits:
        hits.append("memory")
        source = source or "cgroup"
    if state != "succeeded":
        for needle, name in _STDERR_HINTS:
            if needle in stderr and name not in hits:
                hits.append(name)
                source = source or "stderr"
    return SandboxResult(
        state=state, exit_code=code_, signal=sig, limits_hit=hits, limit_source=source,
        wall_seconds=round(wall, 3),
        cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3) if usage else 0.0,
        stdout_tail=tails[proc.stdout].text(), stderr_tail=stderr,
        stdout_bytes=tails[proc.stdout].total, stderr_bytes=tails[proc.stderr].total,
        output_bytes=output_bytes, outputs=listing[:MAX_LISTED],
        outputs_truncated=len(listing) > MAX_LISTED,
        processes_enforced_by="pids cgroup" if cgroup is not None else "process watch",
        memory_enforced_by=("memory cgroup and per-process limit" if memory is not None
                            else "per-process limit"),
        leftover_processes=leftover,
    )
