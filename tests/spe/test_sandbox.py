"""The job sandbox, tried from inside as a hostile job would: each test writes a small Python
job into a temporary code folder, runs it under bubblewrap with small limits, and checks what
it could and could not do, and that nothing of it is left running afterwards."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spe.cli.main import app as cli
from spe.sandbox import Limits, SandboxError, SandboxResult, SandboxUnavailable, run
from spe.sandbox.cgroup import MemoryCgroup, PidsCgroup
from spe.settings import REPO_ROOT
from tests.conftest import IN_CI
from tests.processes import alive, cmdline, descendants

SMALL = Limits(cpu_seconds=10, memory_mb=512, processes=64, open_files=64, file_size_mb=20,
               output_mb=50, scratch_mb=64, wall_seconds=5)

pytestmark = pytest.mark.usefixtures("needs_sandbox")


@pytest.fixture
def box(tmp_path: Path):
    """Run a job's source with given limits; the job's last stdout line is its JSON report."""

    def go(source: str, limits: Limits = SMALL, *, entry: str = "main.py",
           env: dict[str, str] | None = None) -> tuple[SandboxResult, dict | None]:
        code, extract, output = (tmp_path / n for n in ("code", "extract", "output"))
        for d in (code, extract, output):
            d.mkdir(exist_ok=True)
        (extract / "data.csv").write_text("age,sex\n54,F\n61,M\n")
        (code / entry).write_text(textwrap.dedent(source))
        result = run(code, entry, extract, output, limits, env=env)
        lines = result.stdout_tail.strip().splitlines()
        try:
            report = json.loads(lines[-1]) if lines else None
        except ValueError:
            report = None
        return result, report

    return go


def _processes_with(token: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if token.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    found.append(int(name))
            except OSError:
                continue
    return found


@pytest.fixture
def host_server() -> Iterator[int]:
    """A real TCP server on the host's loopback; counts the connections it accepted."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=2):  # it does answer the host
        pass
    yield port
    stop.set()
    thread.join(2)
    server.close()
    assert len(accepted) == 1, "the sandbox reached the host's server"


def test_a_normal_job_reads_the_extract_and_writes_a_csv(box) -> None:
    result, report = box("""
        import csv, json, os
        rows = list(csv.DictReader(open("/extract/data.csv")))
        with open("/output/summary.csv", "w") as f:
            f.write("n,mean_age\\n%d,%.1f\\n" % (len(rows), sum(int(r["age"]) for r in rows) / 2))
        import numpy, pandas  # the analysis environment is there
        print(json.dumps({"cwd": os.getcwd(), "home": os.environ["HOME"],
                          "numpy": numpy.__version__, "uid": os.getuid()}))
    """)
    assert result.state == "succeeded", result.stderr_tail
    assert result.exit_code == 0
    assert result.limit is None
    assert [(e.path, e.kind) for e in result.outputs] == [("summary.csv", "file")]
    assert report["home"] == report["cwd"] == "/scratch"
    assert report["uid"] == 1000
    assert result.leftover_processes == 0


def test_no_network_at_all(box, host_server: int) -> None:
    result, report = box(f"""
        import json, socket
        out = {{}}
        for name, addr in [("loopback", ("127.0.0.1", {host_server})),
                           ("outside", ("1.1.1.1", 53))]:
            try:
                socket.create_connection(addr, timeout=2).close()
                out[name] = "connected"
            except OSError as exc:
                out[name] = type(exc).__name__
        try:
            socket.getaddrinfo("example.org", 443)
            out["dns"] = "resolved"
        except OSError as exc:
            out["dns"] = type(exc).__name__
        import os
        out["interfaces"] = sorted(os.listdir("/proc/sys/net/ipv4/conf"))
        out["hostname"] = socket.gethostname()
        print(json.dumps(out))
    """)
    assert result.state == "succeeded", result.stderr_tail
    assert report["loopback"] == "ConnectionRefusedError"
    assert report["outside"] != "connected"
    assert report["dns"] == "gaierror"
    assert set(report["interfaces"]) <= {"all", "default", "lo"}
    assert report["hostname"] == "sandbox"


def test_nothing_else_of_the_host_is_visible(box, tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "keys").mkdir(parents=True)
    (host / "permit-2").mkdir()
    (host / "node.db").write_bytes(b"SQLite format 3\0")
    (host / "keys" / "node.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    (host / "permit-2" / "extract.csv").write_text("someone else's data\n")
    paths = [str(host / "node.db"), str(host / "keys" / "node.key"),
             str(host / "permit-2" / "extract.csv"), "/etc/shadow", "/etc/hosts",
             "/etc/resolv.conf", "/root/.ssh", str(Path.cwd()), "/var", "/home", "/sys",
             str(Path(__file__))]
    result, report = box(f"""
        import json, os
        out = {{}}
        for p in {paths!r}:
            try:
                open(p, "rb").read() if os.path.isfile(p) else os.listdir(p)
                out[p] = "read"
            except OSError as exc:
                out[p] = type(exc).__name__
        out["/"] = sorted(os.listdir("/"))
        out["/etc"] = sorted(os.listdir("/etc"))
        print(json.dumps(out))
    """)
    assert result.state == "succeeded", result.stderr_tail
    for p in paths:
        assert report[p] == "FileNotFoundError", p
    # /root only when the interpreter lives there (pyenv), and then only its installation
    assert set(report["/"]) <= {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr",
                                "venv", "root", "etc", "proc", "dev", "tmp", "code",
                                "extract", "scratch", "output"}, report["/"]
    assert report["/etc"] == ["group", "passwd"]


def test_the_hosts_environment_is_not_passed(box, monkeypatch) -> None:
    monkeypatch.setenv("SPE_SECRET_KEY", "host-secret-do-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret-do-not-leak")
    result, report = box("""
        import json, os
        leaked = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if b"host-secret" in open(f"/proc/{pid}/environ", "rb").read():
                        leaked.append(pid)
                except OSError:
                    pass
        print(json.dumps({"env": dict(os.environ), "leaked": leaked}))
    """, env={"JOB_PARAMETER": "42"})
    assert result.state == "succeeded", result.stderr_tail
    assert "host-secret" not in json.dumps(report)
    assert report["leaked"] == []
    assert report["env"]["JOB_PARAMETER"] == "42"
    assert set(report["env"]) <= {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ",
                                  "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
                                  "MPLCONFIGDIR", "XDG_CACHE_HOME", "JOB_PARAMETER", "PWD"}


def test_only_output_scratch_and_tmp_are_writable(box, tmp_path: Path) -> None:
    result, report = box("""
        import json, os
        out = {}
        for p in ["/code/x", "/extract/x", "/extract/data.csv", "/usr/x", "/venv/x",
                  "/etc/passwd", "/x", "/root/x", "/proc/x", "/dev/x",
                  "/output/ok", "/scratch/ok", "/tmp/ok", "/dev/shm/ok"]:
            try:
                with open(p, "a") as f:
                    f.write("x")
                out[p] = "written"
            except OSError as exc:
                out[p] = type(exc).__name__
        try:
            os.chmod("/extract/data.csv", 0o777)
            out["chmod"] = "changed"
        except OSError as exc:
            out["chmod"] = type(exc).__name__
        print(json.dumps(out))
    """)
    assert result.state == "succeeded", result.stderr_tail
    for p in ("/output/ok", "/scratch/ok", "/tmp/ok", "/dev/shm/ok"):
        assert report.pop(p) == "written"
    assert "written" not in report.values(), report
    assert report["chmod"] != "changed"
    assert not (tmp_path / "code" / "x").exists()
    assert not (tmp_path / "extract" / "x").exists()
    assert (tmp_path / "extract" / "data.csv").read_text().startswith("age,sex")
    assert [e.path for e in result.outputs] == ["ok"]  # /scratch and /tmp went with the job


def test_a_fork_bomb_is_contained(box) -> None:
    token = f"bomb{uuid.uuid4().hex[:8]}"
    limits = SMALL.model_copy(update={"wall_seconds": 3})
    result, _ = box("""
        import os, time
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
    """, limits, entry=f"{token}.py")
    assert result.state in ("timed_out", "killed"), result
    assert "processes" in result.limits_hit or result.processes_enforced_by != "pids cgroup"
    assert result.leftover_processes == 0
    assert _processes_with(token) == []
    assert subprocess.run(["true"], timeout=10).returncode == 0  # the host still forks


def test_a_fork_bomb_is_contained_without_a_cgroup(box, monkeypatch) -> None:
    """Where no pids cgroup can be made (and RLIMIT_NPROC does not bind uid 0), the process
    watch kills the job as soon as it has more processes than allowed."""
    monkeypatch.setenv("SPE_SANDBOX_CGROUP", "off")
    token = f"bomb{uuid.uuid4().hex[:8]}"
    result, _ = box("""
        import os, time
        while True:
            try:
                os.fork()
            except OSError:
                pass
            time.sleep(0.002)
    """, entry=f"{token}.py")
    assert result.processes_enforced_by == "process watch"
    assert result.state == "killed", result
    assert result.limit == "processes"
    assert result.wall_seconds < 4
    assert result.leftover_processes == 0
    assert _processes_with(token) == []


def test_nothing_is_left_running_after_the_job_ends(box) -> None:
    token = f"daemon{uuid.uuid4().hex[:8]}"
    result, _ = box(f"""
        import subprocess, sys
        # a detached grandchild, in its own session, that would outlive the job
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "{token}"],
                         start_new_session=True)
        print("{{}}")
    """)
    assert result.state == "succeeded", result.stderr_tail
    assert _processes_with(token) == []


def test_ten_gigabytes_of_memory_are_refused(box) -> None:
    result, _ = box("""
        block = bytearray(10 * 1024 ** 3)
        print("allocated")
    """)
    assert result.state in ("failed", "killed")
    assert "allocated" not in result.stdout_tail
    assert "MemoryError" in result.stderr_tail
    assert result.limit == "memory"


def test_an_endless_loop_is_stopped_by_the_wall_clock(box) -> None:
    result, _ = box("""
        import time
        while True:
            time.sleep(0.05)
    """, SMALL.model_copy(update={"wall_seconds": 1.5}))
    assert result.state == "timed_out"
    assert result.limit == "wall"
    assert 1.5 <= result.wall_seconds < 4


def test_an_endless_busy_loop_is_stopped_by_the_cpu_limit(box) -> None:
    result, _ = box("""
        while True:
            pass
    """, SMALL.model_copy(update={"cpu_seconds": 1}))
    assert result.state == "killed", result
    assert result.limit == "cpu"
    assert result.signal is not None
    assert result.wall_seconds < 4


def test_a_five_gigabyte_file_stops_at_the_file_size_limit(box, tmp_path: Path) -> None:
    result, _ = box("""
        chunk = b"x" * (1024 * 1024)
        with open("/output/big.bin", "wb") as f:
            for _ in range(5 * 1024):
                f.write(chunk)
        print("wrote 5 GB")
    """)
    assert result.state == "failed"
    assert result.limit == "file_size", result.stderr_tail
    assert "wrote 5 GB" not in result.stdout_tail
    big = tmp_path / "output" / "big.bin"
    assert big.stat().st_size <= SMALL.file_size_mb * 1024 * 1024


def test_a_sparse_file_beyond_the_size_limit_is_refused(box, tmp_path: Path) -> None:
    result, _ = box("""
        with open("/output/sparse.bin", "wb") as f:
            f.seek(5 * 1024 ** 3)
            f.write(b"x")
    """)
    assert result.state == "failed"
    assert result.limit == "file_size"
    assert (tmp_path / "output" / "sparse.bin").stat().st_size == 0


def test_the_output_quota_kills_the_job(box) -> None:
    result, _ = box("""
        import time
        for i in range(40):
            with open(f"/output/part{i}.bin", "wb") as f:
                f.write(b"x" * (5 * 1024 * 1024))
            time.sleep(0.02)
    """)
    assert result.state == "killed"
    assert result.limit == "output"
    assert result.limit_source == "monitor"


def test_a_full_scratch_is_refused_by_its_tmpfs(box) -> None:
    result, _ = box("""
        with open("/scratch/fill.bin", "wb") as f:
            for _ in range(200):
                f.write(b"x" * (1024 * 1024))
    """, SMALL.model_copy(update={"file_size_mb": 500}))
    assert result.state == "failed"
    assert "No space left on device" in result.stderr_tail


def test_a_symlink_left_in_the_output_is_listed_not_followed(box) -> None:
    result, _ = box("""
        import os
        os.symlink("/etc/passwd", "/output/passwd")
        os.symlink("/", "/output/root")
    """)
    assert result.state == "succeeded"
    links = {e.path: e.target for e in result.symlinks}
    assert links == {"passwd": "/etc/passwd", "root": "/"}
    assert all(e.kind == "symlink" for e in result.outputs)  # / was not walked


def test_bad_directories_and_entries_are_refused(tmp_path: Path) -> None:
    code, data, out = (tmp_path / n for n in ("code", "data", "out"))
    for d in (code, data, out):
        d.mkdir()
    (code / "main.py").write_text("print(1)\n")
    with pytest.raises(SandboxError, match="does not exist"):
        run(code, "main.py", tmp_path / "missing", out, SMALL)
    with pytest.raises(SandboxError, match="entry"):
        run(code, "../main.py", data, out, SMALL)
    with pytest.raises(SandboxError, match="entry"):
        run(code, "absent.py", data, out, SMALL)
    with pytest.raises(SandboxError, match="overlap"):
        run(code, "main.py", data, code / "..", SMALL)


def test_a_missing_bwrap_is_reported(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPE_SANDBOX_BWRAP", str(tmp_path / "no-bwrap"))
    (tmp_path / "main.py").write_text("")
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        run(tmp_path, "main.py", tmp_path, tmp_path, SMALL)
    result = CliRunner().invoke(cli, ["sandbox", "run", "--extract", str(tmp_path),
                                      "--code", str(tmp_path), "--output", str(tmp_path)])
    assert result.exit_code == 2
    assert "bubblewrap" in result.output


def test_limits_have_hard_caps() -> None:
    with pytest.raises(ValueError, match="memory_mb"):
        Limits(memory_mb=10**6)
    with pytest.raises(ValueError, match="wall_seconds"):
        Limits(wall_seconds=0)
    with pytest.raises(ValueError, match="extra"):
        Limits(network=True)


def test_the_cli_runs_one_job(tmp_path: Path) -> None:
    code, data, out = (tmp_path / n for n in ("code", "data", "out"))
    for d in (code, data, out):
        d.mkdir()
    (data / "x.csv").write_text("a\n1\n")
    (code / "job.py").write_text("open('/output/copy.csv', 'w').write("
                                 "open('/extract/x.csv').read())\n")
    args = ["sandbox", "run", "--extract", str(data), "--code", str(code), "--output",
            str(out), "--entry", "job.py", "--wall-seconds", "10", "--memory-mb", "512"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["state"] == "succeeded"
    assert body["outputs"][0]["path"] == "copy.csv"
    (code / "job.py").write_text("raise SystemExit(3)\n")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "failed" in result.output
    result = CliRunner().invoke(cli, ["sandbox", "run", "--extract", str(tmp_path / "nope"),
                                      "--code", str(code), "--output", str(out)])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_the_jobs_processes_share_one_memory_limit(box) -> None:
    """Four processes of 300 MB each fit the per-process limit (512 MB) one by one; the
    job's memory cgroup holds them to 512 MB together."""
    probe = MemoryCgroup.create(64 * 1024 * 1024)
    if probe is None:
        pytest.skip("no memory cgroup can be created here (per-process limits only)")
    probe.remove()
    result, _ = box("""
        import json, os, time
        kids = []
        for i in range(4):
            pid = os.fork()
            if pid == 0:
                block = bytearray(300 * 1024 * 1024)
                for j in range(0, len(block), 4096):
                    block[j] = 1
                print("held", i, flush=True)
                time.sleep(2)
                os._exit(0)
            kids.append(pid)
        print(json.dumps({"exits": [os.waitpid(p, 0)[1] for p in kids]}))
    """)
    assert result.memory_enforced_by == "memory cgroup and per-process limit"
    assert result.stdout_tail.count("held") < 4, result.stdout_tail
    assert "memory" in result.limits_hit
    assert result.leftover_processes == 0


def test_the_pids_cgroup_is_used_where_it_can_be_made() -> None:
    cgroup = PidsCgroup.create(8)
    if cgroup is None:
        pytest.skip("no pids cgroup can be created here (the process watch is used)")
    cgroup.remove()
    assert not cgroup.path.exists()


def test_a_cancelled_job_is_killed_at_once_and_leaves_nothing(tmp_path: Path):
    """What a revoked permit or a cancelled job asks of a running sandbox."""
    import threading
    import time

    for name in ("code", "extract", "output"):
        (tmp_path / name).mkdir()
    (tmp_path / "code" / "main.py").write_text(
        "import time\nopen('/output/started', 'w').close()\ntime.sleep(60)\n")
    cancel = threading.Event()
    results = []
    worker = threading.Thread(target=lambda: results.append(run(
        tmp_path / "code", "main.py", tmp_path / "extract", tmp_path / "output", SMALL,
        cancel=cancel)))
    worker.start()
    for _ in range(200):
        if (tmp_path / "output" / "started").exists():
            break
        time.sleep(0.02)
    cancel.set()
    worker.join(timeout=10)
    assert not worker.is_alive()
    (result,) = results
    assert result.state == "killed"
    assert result.limit == "cancelled"
    assert result.leftover_processes == 0


ANALYSIS = {"numpy", "pandas", "scipy", "sklearn", "pydicom", "acro"}


def test_the_pinned_analysis_environment_and_nothing_to_install(box) -> None:
    """Jobs run in the node's analysis environment (`SPE_SANDBOX_PYTHON`, built by `make
    analysis-env` from deploy/analysis/requirements.txt): its packages are importable, at
    the pinned versions, and none can be added (site-packages is read-only)."""
    python = os.environ.get("SPE_SANDBOX_PYTHON")
    if not python:
        if IN_CI:
            pytest.fail("SPE_SANDBOX_PYTHON is not set: make test builds the analysis env")
        pytest.skip("no analysis environment (make analysis-env; SPE_SANDBOX_PYTHON)")
    from spe.settings import REPO_ROOT

    pins = dict(line.split("==") for line in (REPO_ROOT / "deploy/analysis/requirements.txt")
                .read_text().splitlines() if "==" in line and not line.startswith("#"))
    limits = SMALL.model_copy(update={"wall_seconds": 60, "memory_mb": 2048})
    result, report = box("""
        import importlib, json, os, site
        import importlib.metadata as md
        names = {"numpy": "numpy", "pandas": "pandas", "scipy": "scipy",
                 "sklearn": "scikit-learn", "pydicom": "pydicom", "acro": "acro"}
        for module in names:
            importlib.import_module(module)
        target = site.getsitepackages()[0]
        try:
            open(os.path.join(target, "planted.py"), "w").write("x = 1")
            planted = True
        except OSError:
            planted = False
        print(json.dumps({"versions": {m: md.version(d) for m, d in names.items()},
                          "planted": planted}))
    """, limits)
    assert result.state == "succeeded", result.stderr_tail
    assert set(report["versions"]) == ANALYSIS
    names = {"sklearn": "scikit-learn"}
    for module, version in report["versions"].items():
        assert pins[names.get(module, module)] == version, module
    assert report["planted"] is False


RUNNER = """
import sys
from spe.sandbox import Limits, run
code, extract, output = sys.argv[1:4]
run(code, "main.py", extract, output, Limits(wall_seconds=60))
"""


def test_a_runner_killed_while_bwrap_starts_leaves_nothing_running(tmp_path: Path) -> None:
    """A worker killed in the instant bwrap has started but not yet built the sandbox
    (bwrap binds itself to its parent's life only after that): the kernel kills bwrap all
    the same, so no sandbox lives on. Several tries, each killing as early as it can."""
    code, extract = tmp_path / "code", tmp_path / "extract"
    for d in (code, extract):
        d.mkdir()
    (code / "main.py").write_text("import time\ntime.sleep(60)\n")
    survivors: list[bytes] = []
    for attempt in range(8):
        output = tmp_path / f"output-{attempt}"
        output.mkdir()
        runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(code), str(extract),
                                   str(output)], cwd=REPO_ROOT, stderr=subprocess.DEVNULL)
        seen: set[int] = set()
        deadline = time.monotonic() + 20
        while True:  # no sleep: the window is milliseconds wide
            found = descendants(runner.pid)
            seen |= found
            if any(cmdline(p).split(b"\0")[0].endswith(b"bwrap") for p in found):
                break
            assert runner.poll() is None, "the runner ended before starting bwrap"
            assert time.monotonic() < deadline, "bwrap never started"
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        deadline = time.monotonic() + 5
        while any(alive(p) for p in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in seen:
            if alive(pid):
                survivors.append(cmdline(pid)[:80])
                os.kill(pid, signal.SIGKILL)
    PidsCgroup.reap_orphans()
    MemoryCgroup.reap_orphans()
    assert survivors == []


def test_a_dead_workers_sandbox_leftovers_are_reaped() -> None:
    """What a killed worker's sandbox leaves running in its pids cgroup is killed by the
    next sweep on the machine (PidsCgroup.reap_orphans, from Worker.requeue_stale)."""
    cgroup = PidsCgroup.create(16)
    if cgroup is None:
        if IN_CI:
            pytest.fail("no pids cgroup can be made here")
        pytest.skip("no pids cgroup can be made here")
    gone = subprocess.Popen(["true"])
    gone.wait()
    leftover = subprocess.Popen(["sleep", "60"], preexec_fn=cgroup.enter)
    try:
        orphaned = cgroup.path.with_name(f"spe-sandbox-{gone.pid}-{uuid.uuid4().hex[:8]}")
        cgroup.path.rename(orphaned)
        mine = PidsCgroup.create(16)  # a live process's cgroup is left alone
        assert mine is not None
        assert PidsCgroup.reap_orphans() >= 1
        assert leftover.wait(5) == -9
        assert not orphaned.exists()
        assert mine.path.exists()
        mine.remove()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_a_job_using_acro_is_read_back_by_the_airlock(box, tmp_path: Path) -> None:
    """The real ACRO of the analysis environment, inside the sandbox: its verdicts reach the
    airlock (a failed table is blocked with ACRO's reason; its session summaries, marked DO
    NOT RELEASE, are blocked; results.json goes to the output checker)."""
    if not os.environ.get("SPE_SANDBOX_PYTHON"):
        if IN_CI:
            pytest.fail("SPE_SANDBOX_PYTHON is not set: make test builds the analysis env")
        pytest.skip("no analysis environment (make analysis-env; SPE_SANDBOX_PYTHON)")
    from spe.airlock import OutputRules, check_outputs

    limits = SMALL.model_copy(update={"wall_seconds": 60, "memory_mb": 2048})
    result, _ = box("""
        import pandas as pd
        from acro import ACRO
        df = pd.DataFrame({"site": ["a"] * 40 + ["b"] * 3,
                           "modality": ["CT"] * 20 + ["MR"] * 20 + ["CT"] * 3})
        acro = ACRO(suppress=False)
        acro.crosstab(df.site, df.modality)
        acro.finalise("/output/acro", "json")
    """, limits)
    assert result.state == "succeeded", result.stderr_tail
    report = check_outputs(tmp_path / "output", rules=OutputRules())
    files = {f.path: f for f in report.files}
    table = files["acro/output_0_0.csv"]
    assert table.verdict == "blocked"
    # the table's own small cell (3) blocks it; ACRO's "fail" too, in the airlock's words
    assert "ACRO's results.json (written inside the job) marks it fail" in table.reasons
    assert any("below the threshold of 10" in r for r in table.reasons), table.reasons
    for summary in ("acro/session_summary.json", "acro/session_summary.csv"):
        assert files[summary].verdict == "blocked"
        assert any("DO NOT RELEASE" in r for r in files[summary].reasons)
    assert files["acro/results.json"].kind == "acro-metadata"
    assert files["acro/results.json"].verdict == "review"
