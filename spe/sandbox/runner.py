"""Run one job in the sandbox and say how it ended.

`run(code_dir, entry, extract_dir, output_dir, limits)` starts `python /code/<entry>` under
bubblewrap (see `bwrap.py` for what the job sees) as a host uid of the job's own
(`hostuser.py`: never root, also outside its user namespace), under a seccomp filter
(`seccomp.py`), with rlimits set on the bwrap process (inherited by everything in the
sandbox), in its own session and, where they can be made, its own pids and memory cgroups.
While it runs, this process reads the job's stdout and stderr (keeping the last 64 KiB of
each), watches the wall clock and the size of /output (and of a given scratch directory),
and kills the whole sandbox on any breach: SIGKILL to bwrap's process group, which takes
the sandbox's PID namespace down with it (`--die-with-parent`), then a sweep of the cgroup
and of the job's uid.

Nothing of the job survives `run`, by construction: the job's uid, folders, pipes, cgroups
and processes are each a context manager around the monitor, so an exception anywhere in it
still kills and reaps the job, empties and removes its cgroups, gives its folders back to
the service and frees its uid.

If this process dies instead (a worker killed mid-job), bwrap gets SIGKILL from the kernel:
its parent-death signal is set here before exec, because bwrap sets its own only after it has
parsed its arguments and cloned the sandbox, and a death in between would leave it running.

The cgroups, the mounts of the job's view (`view.py`), the rlimits and the uid change are
applied in a `preexec_fn` (between fork and exec of bwrap, as root): plain syscalls only, but
still a `preexec_fn`, which CPython warns about in processes with threads.
"""
from __future__ import annotations

import ctypes
import os
import resource
import selectors
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from spe.sandbox.bwrap import GROUP, PASSWD, build_argv, find_bwrap, job_env
from spe.sandbox.cgroup import JobCgroup, MemoryCgroup, PidsCgroup
from spe.sandbox.hostuser import HostUser, job_user, kill_all, processes_of
from spe.sandbox.interpreter import Interpreter, InterpreterError, configured_python, resolve
from spe.sandbox.limits import Limits, MiB
from spe.sandbox.seccomp import filter_bpf
from spe.sandbox.view import View
from spe.settings import Settings, get_settings, untrusted_executable

TAIL_BYTES = 64 * 1024
POLL_SECONDS = 0.1
SIZE_POLL_SECONDS = 0.25
WATCH_SECONDS = 0.02
MAX_LISTED = 10_000
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
NPROC_MARGIN = 8
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
    host_uid: int = -1  # the uid the job ran as on the host (outside its user namespace)
    host_user: str = ""  # which user that is: the job's own, or the service's (fallback)

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


def _pipe_with(data: str | bytes) -> int:
    read, write = os.pipe()
    os.write(write, data.encode() if isinstance(data, str) else data)  # well under 64 KiB
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


def _return_to_service(root: str) -> None:
    """Give a job's folder back to the service once the job has ended: owner and group the
    service's, folders 0700, files 0600 (no set-id bit the job set). Each entry is opened
    without following a link and changed through its descriptor, so nothing outside the
    folder is touched whatever the job left in it; links themselves are only lchowned."""
    uid, gid = os.geteuid(), os.getegid()
    paths = [root]
    for current, dirs, files in os.walk(root):
        paths += [os.path.join(current, name) for name in dirs + files]
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # a link (ELOOP), or gone: never followed
            try:
                os.lchown(path, uid, gid)
            except OSError:
                pass
            continue
        try:
            mode = os.fstat(fd).st_mode
            os.fchown(fd, uid, gid)
            if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
                os.fchmod(fd, 0o700 if stat.S_ISDIR(mode) else 0o600)
        except OSError:
            pass
        finally:
            os.close(fd)


@contextmanager
def _sources(user: HostUser, folders: dict[str, str], interpreter: Interpreter
             ) -> Iterator[tuple[dict[str, str], View | None]]:
    """Where bwrap finds each thing it binds (sandbox path -> path), for this job's user.

    For a uid of the job's own: the extract and the code through the runner's view (seen as
    the job's, read-only), the output and a given scratch folder the job's own (chowned to
    it, 0700) until the block ends, when they are the service's again (0600/0700)."""
    binds = dict(interpreter.ro_binds)
    if not user.dedicated:
        yield {**folders, **{dest: src for src, dest in binds.items()}}, None
        return
    writable = [folders[p] for p in ("/output", "/scratch") if p in folders]
    view = View(user.uid, user.gid)
    try:
        sources = {}
        for dest, src in folders.items():
            rw = dest in ("/output", "/scratch")
            sources[dest] = view.add(src, dest.strip("/"), writable=rw, as_job=not rw)
        for src, dest in binds.items():
            sources[dest] = view.add(src, "interpreter" + dest)
        for folder in writable:
            for current, dirs, files in os.walk(folder):
                for name in dirs + files:
                    os.lchown(os.path.join(current, name), user.uid, user.gid)
            os.chown(folder, user.uid, user.gid)
            os.chmod(folder, 0o700)
        yield sources, view
    finally:
        try:
            for folder in writable:
                _return_to_service(folder)
        finally:
            view.close()


@contextmanager
def _pipes(*contents: bytes | str | None) -> Iterator[list[int | None]]:
    """Read ends of pipes holding `contents` (None: none), closed when the block ends."""
    fds = [None if c is None else _pipe_with(c) for c in contents]
    try:
        yield fds
    finally:
        for fd in fds:
            if fd is not None:
                os.close(fd)


@contextmanager
def _cgroups(limits: Limits, enabled: bool
             ) -> Iterator[tuple[PidsCgroup | None, MemoryCgroup | None]]:
    """The job's pids and memory cgroups (None where none can be made, or off); emptied and
    removed when the block ends."""
    made: list[JobCgroup] = []
    try:
        pids = PidsCgroup.create(limits.processes) if enabled else None
        if pids is not None:
            made.append(pids)
        memory = MemoryCgroup.create(limits.memory_mb * MiB) if enabled else None
        if memory is not None:
            made.append(memory)
        yield pids, memory
    finally:
        for group in made:
            try:
                group.kill_all()
            finally:
                group.remove()


class _Job:
    """bwrap's process, its output pipes and its PID namespace. Leaving the block kills
    everything of it that still runs and reaps bwrap, however the block ends."""

    def __init__(self, proc: subprocess.Popen, pids: PidsCgroup | None) -> None:
        self.proc = proc
        self.pids = pids
        self.status: int | None = None
        self.usage: resource.struct_rusage | None = None
        self.namespace: str | None = None

    def __enter__(self) -> _Job:
        return self

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.pids is not None:
            self.pids.kill_all()

    def reap(self) -> None:
        if self.status is None:
            _, self.status, self.usage = os.wait4(self.proc.pid, 0)
            self.proc.returncode = os.waitstatus_to_exitcode(self.status)

    def sweep(self) -> int:
        """Kill what is left in the job's PID namespace; how many could not be."""
        if self.namespace is None:
            return 0
        for _ in range(200):  # the namespace dies with its init; make sure it has
            left = processes_in(self.namespace)
            if not left:
                return 0
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        return len(processes_in(self.namespace))

    def __exit__(self, *exc: object) -> None:
        try:
            if self.status is None:
                self.kill()
                self.reap()
            self.sweep()
        finally:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


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
    settings: Settings | None = None,
) -> SandboxResult:
    """Run `python /code/<entry>` in the sandbox; block until it ends (or is killed).
    Setting `cancel` (from another thread: a revoked permit, a cancelled job) kills the
    job within a poll interval; it ends `killed` with the limit "cancelled"."""
    settings = settings or get_settings()
    limits = limits or Limits()
    production = settings.environment == "production"
    bwrap = find_bwrap(settings.sandbox_bwrap)
    if bwrap is None or not os.access(bwrap, os.X_OK):
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed: apt-get install "
                                 "bubblewrap, or set SPE_SANDBOX_BWRAP")
    if production and (why := untrusted_executable(bwrap)):
        raise SandboxUnavailable(f"production runs only a bubblewrap root controls: {why}")
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
        interpreter = resolve(python or configured_python(settings.sandbox_python))
    except InterpreterError as exc:
        raise SandboxUnavailable(str(exc)) from None
    try:
        environment = job_env(interpreter, env)
    except ValueError as exc:
        raise SandboxError(str(exc)) from None
    try:
        seccomp = filter_bpf() if settings.sandbox_seccomp else None
    except (OSError, ImportError, AttributeError) as exc:  # no libseccomp: fail closed
        raise SandboxUnavailable(f"the seccomp filter cannot be built: {exc}") from None

    with ExitStack() as stack:
        try:
            user = stack.enter_context(job_user(settings.sandbox_uid_base))
        except OSError as exc:
            raise SandboxUnavailable(f"no host user for the job: {exc}") from None
        if production and not user.dedicated:
            raise SandboxUnavailable("production runs each job as a uid of its own: the "
                                     "node's job runner must start as root")
        try:
            sources, view = stack.enter_context(_sources(
                user, {f"/{k}": v for k, v in named.items()}, interpreter))
        except OSError as exc:
            raise SandboxUnavailable(f"the job's folders cannot be shown to it: {exc}") \
                from None
        fds = stack.enter_context(_pipes(PASSWD, GROUP, interpreter.pyvenv_cfg, seccomp))
        argv = build_argv(bwrap, interpreter, sources=sources, entry=entry, limits=limits,
                          env=environment, passwd_fd=fds[0], group_fd=fds[1],
                          venv_cfg_fd=fds[2], seccomp_fd=fds[3])
        cgroup, memory = stack.enter_context(_cgroups(limits, settings.sandbox_cgroup))
        if production and (cgroup is None or memory is None):
            raise SandboxUnavailable("production bounds each job by its pids and memory "
                                     "cgroups, and none can be made here")
        job = stack.enter_context(_start(argv, [fd for fd in fds if fd is not None], user,
                                         limits, cgroup, memory, view))
        return _monitor(job, limits, output, scratch, cancel, cgroup, memory, user)


@contextmanager
def _start(argv: list[str], fds: list[int], user: HostUser, limits: Limits,
           cgroup: PidsCgroup | None, memory: MemoryCgroup | None, view: View | None
           ) -> Iterator[_Job]:
    """bwrap started in the job's cgroups, view, rlimits and uid (see `prepare`)."""
    rlimits = [
        (resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1)),
        (resource.RLIMIT_AS, (limits.memory_mb * MiB,) * 2),
        # Per uid, so per job now: a backstop a little above the pids cgroup (or the
        # process watch), which count exactly and name the limit when they refuse.
        (resource.RLIMIT_NPROC, (limits.processes + NPROC_MARGIN,) * 2),
        (resource.RLIMIT_NOFILE, (limits.open_files,) * 2),
        (resource.RLIMIT_FSIZE, (limits.file_size_mb * MiB,) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    ]
    parent = os.getpid()

    def prepare() -> None:  # in the child, between fork and exec: plain syscalls only
        if cgroup is not None:
            cgroup.enter()
        if memory is not None:
            memory.enter()
        if view is not None:
            view.attach()
        for which, value in rlimits:
            resource.setrlimit(which, value)
        if user.dedicated:  # bwrap runs as the job's uid: it cannot undo any of this
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
        # After the uid change, which clears it; kept across exec (bwrap is not set-id).
        if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != parent:
            raise OSError("the job's runner died before the sandbox started")

    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={}, cwd="/", pass_fds=fds,
                                start_new_session=True, preexec_fn=prepare)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxUnavailable(f"cannot start bubblewrap ({argv[0]}): {exc}") from None
    with _Job(proc, cgroup) as job:
        yield job


def _monitor(job: _Job, limits: Limits, output: str, scratch: str | None,
             cancel: threading.Event | None, cgroup: PidsCgroup | None,
             memory: MemoryCgroup | None, user: HostUser) -> SandboxResult:
    """Read the job's output, watch its limits until it ends, then say how it ended."""
    proc = job.proc
    started = time.monotonic()
    tails = {proc.stdout: _Tail(), proc.stderr: _Tail()}
    selector = selectors.DefaultSelector()
    for stream in tails:
        selector.register(stream, selectors.EVENT_READ)
    deadline = started + limits.wall_seconds
    ended_by: tuple[str, str] | None = None  # (state, limit) decided by the monitor
    next_size_check = started
    exited_at: float | None = None
    # Without a pids cgroup the process watch is all that bounds a fork bomb: look often.
    poll = POLL_SECONDS if cgroup is not None else WATCH_SECONDS
    try:
        while True:
            for key, _ in selector.select(timeout=poll):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    tails[key.fileobj].add(chunk)
                else:
                    selector.unregister(key.fileobj)
            if job.status is None:
                pid, raw, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    job.status, job.usage, exited_at = raw, ru, time.monotonic()
                    proc.returncode = os.waitstatus_to_exitcode(raw)
            if job.status is not None and not selector.get_map():
                break
            now = time.monotonic()
            if job.status is not None:
                if exited_at is not None and now - exited_at > 2:  # pipes held open: end it
                    job.kill()
                    break
                continue
            if job.namespace is None:
                job.namespace = _pid_namespace(proc.pid)
            if ended_by is not None:
                continue
            if cancel is not None and cancel.is_set():
                ended_by = ("killed", "cancelled")
            elif now >= deadline:
                ended_by = ("timed_out", "wall")
            elif cgroup is None and job.namespace is not None and \
                    len(processes_in(job.namespace)) > limits.processes + 1:  # + bwrap's init
                ended_by = ("killed", "processes")
            elif now >= next_size_check:
                next_size_check = now + SIZE_POLL_SECONDS
                if tree_size(Path(output)) > limits.output_mb * MiB:
                    ended_by = ("killed", "output")
                elif scratch and tree_size(Path(scratch)) > limits.scratch_mb * MiB:
                    ended_by = ("killed", "scratch")
            if ended_by is not None:
                job.kill()
    finally:
        selector.close()
    wall = time.monotonic() - started
    job.reap()  # after the break above that killed it

    # Everything of the job ends here; the blocks around `run` make sure of it again.
    oom_kills = memory.oom_kills() if memory is not None else 0
    refusals = cgroup.refusals() if cgroup is not None else 0
    leftover = 0
    if memory is not None:
        memory.kill_all()
    if cgroup is not None and not cgroup.kill_all():
        leftover = len(cgroup.pids())
    leftover = max(leftover, job.sweep())
    # Without a pids cgroup, nothing else lists every process of the job (job_user sweeps
    # the uid again on its way out either way).
    if cgroup is None and user.dedicated and not kill_all(user.uid):
        leftover = max(leftover, len(processes_of(user.uid)))

    listing: list[OutputEntry] = []
    output_bytes = tree_size(Path(output), listing)
    listing.sort(key=lambda e: e.path)
    stderr = tails[proc.stderr].text()
    usage = job.usage

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
        host_uid=user.uid, host_user=user.describe(),
    )
