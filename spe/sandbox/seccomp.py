"""The job's seccomp filter: an allowlist at least as strict as Docker's default profile.

Everything not listed below fails with EPERM, as in Docker's profile. Docker's allowlist for
a container without capabilities is the base here, less what it still allows that an
analysis job never needs and that reaches deep into the kernel: io_uring, ptrace and
`process_vm_*`, `name_to_handle_at`, fanotify, `memfd_secret`. Namespaces stay refused:
`unshare`, `setns`, `clone` with any CLONE_NEW* flag, and `clone3` answers ENOSYS (its
flags sit in memory a filter cannot read; libc then falls back to `clone`, as under Docker).
`personality` only with the values Docker allows (the default and its query). Syscalls of
another ABI (32-bit x86, x32) kill the process (libseccomp's bad-arch action).

The filter is compiled to BPF once per process by libseccomp (through `pyseccomp`, ctypes
bindings with the API of libseccomp's own) and handed to bubblewrap (`--seccomp FD`), which
loads it, with no_new_privs, just before it executes the job.
"""

from __future__ import annotations

import errno
import os
from functools import lru_cache

# Grouped by what they are for; x86_64 names (others are skipped where libseccomp does not
# know them on the machine's architecture).
ALLOWED: tuple[str, ...] = (
    # files and directories
    "access", "faccessat", "faccessat2", "open", "openat", "openat2", "creat", "close",
    "close_range", "read", "readv", "pread64", "preadv", "preadv2", "write", "writev",
    "pwrite64", "pwritev", "pwritev2", "lseek", "dup", "dup2", "dup3", "fcntl", "flock",
    "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "truncate", "ftruncate",
    "fallocate", "fadvise64", "readahead", "copy_file_range", "sendfile", "splice", "tee",
    "vmsplice", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
    "getdents", "getdents64", "getcwd", "chdir", "fchdir", "mkdir", "mkdirat", "rmdir",
    "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat", "unlink",
    "unlinkat", "readlink", "readlinkat", "chmod", "fchmod", "fchmodat", "chown", "fchown",
    "fchownat", "lchown", "umask", "utime", "utimes", "utimensat", "futimesat", "mknod",
    "mknodat", "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr",
    "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr", "fremovexattr",
    "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "ioctl",
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "mlock",
    "mlock2", "mlockall", "munlock", "munlockall", "membarrier", "memfd_create",
    "remap_file_pages", "pkey_alloc", "pkey_free", "pkey_mprotect",
    # processes and threads (clone and personality: conditional, below)
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "kill",
    "tkill", "tgkill", "getpid", "getppid", "gettid", "getpgid", "getpgrp", "setpgid",
    "getsid", "setsid", "set_tid_address", "set_robust_list", "get_robust_list", "futex",
    "futex_waitv", "rseq", "arch_prctl", "modify_ldt", "get_thread_area", "set_thread_area",
    "prctl", "capget", "capset", "getrlimit", "setrlimit", "prlimit64", "getrusage",
    "getpriority", "setpriority", "sched_yield", "sched_getaffinity", "sched_setaffinity",
    "sched_getattr", "sched_setattr", "sched_getparam", "sched_setparam",
    "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max",
    "sched_get_priority_min", "sched_rr_get_interval", "getcpu", "ioprio_get", "ioprio_set",
    "pidfd_open", "pidfd_send_signal", "process_mrelease", "seccomp", "restart_syscall",
    # identity (within the user namespace: uid 1000, no capabilities)
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
    "setfsgid", "setgroups",
    # signals and time
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack", "signalfd",
    "signalfd4", "pause", "alarm", "nanosleep", "clock_nanosleep", "clock_gettime",
    "clock_getres", "gettimeofday", "time", "times", "getitimer", "setitimer",
    "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime",
    "timerfd_create", "timerfd_gettime", "timerfd_settime", "adjtimex", "clock_adjtime",
    # waiting on descriptors, events, pipes, sockets (the network namespace has only lo)
    "select", "pselect6", "poll", "ppoll", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "pipe", "pipe2",
    "socketpair", "bind", "connect", "listen", "accept", "accept4", "getsockname",
    "getpeername", "getsockopt", "setsockopt", "shutdown", "sendto", "sendmsg", "sendmmsg",
    "recvfrom", "recvmsg", "recvmmsg",
    # System V and POSIX IPC (multiprocessing), asynchronous I/O (not io_uring)
    "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl",
    "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend",
    "mq_timedreceive", "mq_notify", "mq_getsetattr", "io_setup", "io_destroy",
    "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
    # the machine
    "uname", "sysinfo", "getrandom",
)

# Refused by default (EPERM) and named here because the tests try each from inside a job:
# keyrings, bpf, perf events, io_uring, new namespaces, mounts, ptrace, kexec, modules.
REFUSED: tuple[str, ...] = (
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "unshare", "setns", "mount", "umount2",
    "pivot_root", "ptrace", "process_vm_readv", "process_vm_writev", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "userfaultfd", "acct",
    "swapon", "swapoff", "reboot", "syslog", "quotactl", "open_by_handle_at",
    "name_to_handle_at", "open_tree", "move_mount", "fsopen", "fsmount", "chroot",
)

# <linux/sched.h>: the namespace flags clone must not carry (Docker's mask, 0x7E020000).
CLONE_NAMESPACES = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
                    | 0x20000000 | 0x40000000)
# personality(2): PER_LINUX, PER_LINUX|UNAME26, PER_LINUX32, PER_LINUX32|UNAME26, query.
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)


def _build():  # -> pyseccomp.SyscallFilter
    import pyseccomp as seccomp  # here: loads libseccomp, which only jobs need

    f = seccomp.SyscallFilter(seccomp.ERRNO(errno.EPERM))
    for name in ALLOWED:
        try:
            f.add_rule(seccomp.ALLOW, name)
        except (ValueError, RuntimeError, OSError):  # not a syscall on this architecture
            continue
    f.add_rule(seccomp.ALLOW, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NAMESPACES, 0))
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for value in PERSONALITIES:
        f.add_rule(seccomp.ALLOW, "personality", seccomp.Arg(0, seccomp.EQ, value))
    # socket() for any family but AF_VSOCK (40), the host's hypervisor sockets (Docker's).
    f.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.NE, 40))
    return f


@lru_cache(maxsize=1)
def filter_bpf() -> bytes:
    """The compiled filter (a `struct sock_filter` array), as `bwrap --seccomp` reads it."""
    fd = os.memfd_create("spe-seccomp", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as f:
        _build().export_bpf(f)
        f.seek(0)
        return f.read()
