"""The job sandbox, tried from inside as a hostile job would: each test writes a small Python
job into a temporary code folder, runs it under bubblewrap with small limits, and checks what
it could and could not do, and that nothing of it is left running afterwards."""

from __future__ import annotations

import json
import os
import platform
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
from spe.settings import REPO_ROOT, Settings, get_settings
from tests.conftest import IN_CI
from tests.processes import alive, cmdline, descendants

SMALL = Limits(cpu_seconds=10, memory_mb=512, processes=64, open_files=64, file_size_mb=20,
               output_mb=50, scratch_mb=64, wall_seconds=5)

pytestmark = pytest.mark.usefixtures("needs_sandbox")


@pytest.fixture
def box(tmp_path: Path):
    """Run a job's source with given limits; the job's last stdout line is its JSON report."""

    def go(source: str, limits: Limits = SMALL, *, entry: str = "main.py",
           env: dict[str, str] | None = None, settings: Settings | None = None,
           ) -> tuple[SandboxResult, dict | None]:
        code, extract, output = (tmp_path / n for n in ("code", "extract", "output"))
        for d in (code, extract, output):
            d.mkdir(exist_ok=True)
        (extract / "data.csv").write_text("age,sex\n54,F\n61,M\n")
        (code / entry).write_text(textwrap.dedent(source))
        result = run(code, entry, extract, output, limits, env=env, settings=settings)
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
    assert set(report["/"]) == _documented_root(), report["/"]
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
                                  "MPLCONFIGDIR", "XDG_CACHE_HOME", "JOB_PARAMETER", "PWD",
                                  "LD_LIBRARY_PATH"}


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


def test_a_fork_bomb_is_contained_without_a_cgroup(box) -> None:
    """Where no pids cgroup can be made, the process watch kills the job as soon as it has
    more processes than allowed."""
    token = f"bomb{uuid.uuid4().hex[:8]}"
    result, _ = box("""
        import os, time
        while True:
            try:
                os.fork()
            except OSError:
                pass
            time.sleep(0.002)
    """, entry=f"{token}.py", settings=Settings(sandbox_cgroup=False))
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


@pytest.fixture
def settings_from_env() -> Iterator[None]:
    """get_settings() reads the environment as the test sets it, and again after it."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("settings_from_env")
def test_a_missing_bwrap_is_reported(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPE_SANDBOX_BWRAP", str(tmp_path / "no-bwrap"))
    get_settings.cache_clear()
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
    """Jobs run in the node's default analysis environment (`SPE_SANDBOX_PYTHON`, built by
    `make analysis-env` from deploy/analysis/statistics/requirements.txt): its packages are
    importable, at the pinned versions, and none can be added (site-packages is read-only)."""
    python = os.environ.get("SPE_SANDBOX_PYTHON")
    if not python:
        if IN_CI:
            pytest.fail("SPE_SANDBOX_PYTHON is not set: make test builds the analysis env")
        pytest.skip("no analysis environment (make analysis-env; SPE_SANDBOX_PYTHON)")
    from spe.settings import REPO_ROOT

    pins = dict(line.split("==") for line in (
        REPO_ROOT / "deploy/analysis/statistics/requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#"))
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


# --- the job's host user, its seccomp filter, its root, its cleanup --------------------------

README_ROOT = "A listing of `/` inside shows exactly:"


def _documented_root() -> set[str]:
    """The entries of `/` inside a job that the README's Sandbox section names (the lib
    roots only where the host has them, as links into /usr or folders)."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert README_ROOT in readme
    line = readme.split(README_ROOT, 1)[1].split("\n\n", 1)[0]
    names = set(line.split("`")[1].split())
    assert "extract" in names  # the sentence was read, not something else
    return names | {n for n in ("lib32", "libx32") if os.path.lexists(f"/{n}")}


def _needs_root() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI runs as root: jobs must run as a uid of their own")
        pytest.skip("not root: jobs run as this user (the development fallback)")


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_the_job_runs_as_a_host_uid_of_its_own_never_root(tmp_path: Path) -> None:
    """Seen from the host through /proc: every process of the job, bwrap's included, has
    uids and gids that are not 0 (the old sandbox's job was host root in a namespace)."""
    _needs_root()
    token = f"uid{uuid.uuid4().hex[:8]}"
    for name in ("code", "extract", "output"):
        (tmp_path / name).mkdir()
    (tmp_path / "code" / f"{token}.py").write_text(
        "import time\nopen('/output/started', 'w').close()\ntime.sleep(60)\n")
    cancel = threading.Event()
    results: list[SandboxResult] = []
    worker = threading.Thread(target=lambda: results.append(run(
        tmp_path / "code", f"{token}.py", tmp_path / "extract", tmp_path / "output", SMALL,
        cancel=cancel)))
    worker.start()
    try:
        for _ in range(500):
            if (tmp_path / "output" / "started").exists():
                break
            time.sleep(0.02)
        job = _processes_with(token)
        assert job, "the job's processes were not found"
        seen = {}
        for pid in job:
            status = _status(pid)
            seen[pid] = (status["Uid"].split(), status["Gid"].split(), status["Groups"])
    finally:
        cancel.set()
        worker.join(timeout=20)
    (result,) = results
    for uids, gids, groups in seen.values():
        assert set(uids) == {str(result.host_uid)}, seen
        assert set(gids) == {str(result.host_uid)}, seen
        assert groups == "", seen
    assert result.host_uid >= Settings().sandbox_uid_base > 0
    assert "the job's own" in result.host_user
    assert result.leftover_processes == 0
    assert _processes_with(token) == []
    output = (tmp_path / "output").stat()  # the output is the service's again
    assert (output.st_uid, oct(output.st_mode & 0o777)) == (0, "0o700")
    assert (tmp_path / "output" / "started").stat().st_uid == 0


def test_a_job_reads_an_extract_only_the_service_can_read(tmp_path: Path) -> None:
    """The extract and the code are 0600 in 0700 folders under a 0700 parent, the service's,
    under a umask of 077: the job reads them (an idmapped mount shows them as its own), and
    nothing on disk changes."""
    _needs_root()
    for name in ("code", "extract", "output"):
        (tmp_path / name).mkdir(mode=0o700)
    (tmp_path / "extract" / "data.csv").write_text("age\n54\n61\n")
    (tmp_path / "code" / "main.py").write_text(
        "print(len(open('/extract/data.csv').read().splitlines()))\n")
    for path in (tmp_path / "extract" / "data.csv", tmp_path / "code" / "main.py"):
        path.chmod(0o600)
    tmp_path.chmod(0o700)
    umask = os.umask(0o077)  # the service's own (production sets one)
    try:
        result = run(tmp_path / "code", "main.py", tmp_path / "extract", tmp_path / "output",
                     SMALL)
    finally:
        os.umask(umask)
    assert result.state == "succeeded", result.stderr_tail
    assert result.stdout_tail.strip() == "3"
    data = (tmp_path / "extract" / "data.csv").stat()
    assert (data.st_uid, data.st_mode & 0o777) == (0, 0o600)
    assert (tmp_path / "extract").stat().st_mode & 0o777 == 0o700


X86_64_CALLS = {
    # name: (number, arguments that succeed or reach the kernel without a filter)
    "keyctl": (250, (0, -3, 1)),  # KEYCTL_GET_KEYRING_ID of the session keyring, create
    "add_key": (248, ("user", "k", "v", 1, -3)),
    "request_key": (249, ("user", "k", None, -3)),
    "unshare(CLONE_NEWUSER)": (272, (0x10000000,)),
    "unshare(CLONE_NEWNET)": (272, (0x40000000,)),
    "setns": (308, (0, 0)),
    "clone(CLONE_NEWUSER)": (56, (0x10000000 | 17, 0, 0, 0, 0)),
    "ptrace(PTRACE_TRACEME)": (101, (0, 0, 0, 0)),
    "bpf": (321, (0, 0, 0)),
    "perf_event_open": (298, (0, 0, -1, -1, 0)),
    "io_uring_setup": (425, (1, 0)),
    "io_uring_enter": (426, (0, 0, 0, 0, 0, 0)),
    "mount": (165, ("none", "/tmp", "tmpfs", 0, None)),
    "umount2": (166, ("/tmp", 0)),
    "pivot_root": (155, ("/tmp", "/tmp")),
    "kexec_load": (246, (0, 0, 0, 0)),
    "kexec_file_load": (320, (-1, -1, 0, None, 0)),
    "init_module": (175, (None, 0, "")),
    "finit_module": (313, (-1, "", 0)),
    "delete_module": (176, ("x", 0)),
    "process_vm_readv": (310, (1, None, 0, None, 0, 0)),
    "userfaultfd": (323, (0,)),
    "personality(ADDR_NO_RANDOMIZE)": (135, (0x0040000,)),
    "acct": (163, (None,)),
    "swapoff": (168, ("/tmp",)),
    "reboot": (169, (0, 0, 0, None)),
    "syslog": (103, (3, None, 0)),
    "quotactl": (179, (0, None, 0, None)),
    "open_by_handle_at": (304, (-1, None, 0)),
    "name_to_handle_at": (303, (-100, "/tmp", None, None, 0)),
    "clone3": (435, (None, 0)),
}


def test_seccomp_refuses_keyrings_namespaces_ptrace_bpf_mounts_and_modules(box) -> None:
    """From inside a job, each call Docker's default profile refuses (and io_uring, ptrace,
    name_to_handle_at besides) fails with EPERM (clone3: ENOSYS, so libc uses clone), and
    the job's /proc/self/status says Seccomp 2 (filter)."""
    if platform.machine() != "x86_64":
        pytest.skip("the syscall numbers below are x86_64's")
    assert len(X86_64_CALLS) > 20
    result, report = box(f"""
        import ctypes, errno, json, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        def arg(a):
            return a.encode() if isinstance(a, str) else a
        out = {{}}
        for name, (number, args) in {X86_64_CALLS!r}.items():
            ctypes.set_errno(0)
            r = libc.syscall(ctypes.c_long(number), *[
                ctypes.c_long(a) if isinstance(a, int) else arg(a) for a in args])
            out[name] = "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
        status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
        out["Seccomp"] = status["Seccomp"].strip()
        import threading, subprocess  # threads and processes still start (clone, fork)
        t = threading.Thread(target=lambda: None); t.start(); t.join()
        out["fork"] = subprocess.run(["/usr/bin/true"]).returncode
        print(json.dumps(out))
    """, SMALL.model_copy(update={"wall_seconds": 30}))
    assert result.state == "succeeded", result.stderr_tail
    assert report.pop("Seccomp") == "2"
    assert report.pop("fork") == 0
    assert report.pop("clone3") == "ENOSYS"
    assert report == dict.fromkeys(report, "EPERM")
    assert set(report) == set(X86_64_CALLS) - {"clone3"}


def test_the_analysis_packages_work_under_the_filter(box) -> None:
    """numpy, pandas, scipy, scikit-learn, pydicom and acro compute under seccomp, as the
    job's uid, with /root unseen."""
    if not os.environ.get("SPE_SANDBOX_PYTHON"):
        if IN_CI:
            pytest.fail("SPE_SANDBOX_PYTHON is not set: make test builds the analysis env")
        pytest.skip("no analysis environment (make analysis-env; SPE_SANDBOX_PYTHON)")
    result, report = box("""
        import io, json, os
        import numpy as np, pandas as pd, scipy.stats, pydicom
        from sklearn.linear_model import LinearRegression
        from acro import ACRO
        x = np.arange(40.0)
        df = pd.DataFrame({"x": x, "y": 2 * x + 1, "g": ["a", "b"] * 20})
        fit = LinearRegression().fit(df[["x"]], df.y)
        ds = pydicom.Dataset(); ds.PatientAge = "040Y"
        acro = ACRO(suppress=True)
        table = acro.crosstab(df.g, df.x > 10)
        print(json.dumps({"slope": round(float(fit.coef_[0]), 6),
                          "t": round(float(scipy.stats.ttest_1samp(x, 0).pvalue), 6),
                          "age": ds.PatientAge, "cells": int(table.size),
                          "root": os.path.exists("/root")}))
    """, SMALL.model_copy(update={"wall_seconds": 120, "memory_mb": 2048}))
    assert result.state == "succeeded", result.stderr_tail
    assert report["slope"] == 2.0
    assert report["age"] == "040Y"
    assert report["cells"] > 0
    assert report["root"] is False


def test_an_error_in_the_monitor_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    """The monitor loop raises while the job runs: run() raises it, and by then the job's
    processes are dead, its cgroups removed, its folders the service's again, its uid free
    of processes and its view gone."""
    from spe.sandbox import runner
    from spe.sandbox.hostuser import processes_of

    token = f"broken{uuid.uuid4().hex[:8]}"
    for name in ("code", "extract", "output"):
        (tmp_path / name).mkdir()
    (tmp_path / "code" / f"{token}.py").write_text(
        "import os, time\nopen('/output/started', 'w').close()\n"
        "if os.fork() == 0:\n    os.setsid()\ntime.sleep(60)\n")
    made: list = []
    for cls in (PidsCgroup, MemoryCgroup):
        def create(*args, _create=cls.create):
            group = _create(*args)
            made.append(group)
            return group
        monkeypatch.setattr(cls, "create", create)
    users: list = []
    real_user = runner.job_user

    @runner.contextmanager
    def job_user(base):
        with real_user(base) as user:
            users.append(user)
            yield user
    monkeypatch.setattr(runner, "job_user", job_user)
    seen: list[list[int]] = []

    def tree_size(root, listing=None):
        if (tmp_path / "output" / "started").exists():
            for _ in range(100):  # the forked child too
                seen.append(_processes_with(token))
                if len(seen[-1]) >= 3:
                    break
                time.sleep(0.02)
            raise RuntimeError("the monitor broke")
        return 0
    monkeypatch.setattr(runner, "tree_size", tree_size)

    with pytest.raises(RuntimeError, match="the monitor broke"):
        run(tmp_path / "code", f"{token}.py", tmp_path / "extract", tmp_path / "output",
            SMALL.model_copy(update={"wall_seconds": 30}))
    assert seen
    assert seen[-1], "the job was not running when the monitor broke"
    assert _processes_with(token) == []
    assert not any(alive(pid) for pid in seen[-1])
    groups = [g for g in made if g is not None]
    if IN_CI:
        assert groups, "no cgroup was made"
    for group in groups:
        assert not group.path.exists(), group.path
    (user,) = users
    assert processes_of(user.uid) == [] or not user.dedicated
    if user.dedicated:
        assert (tmp_path / "output").stat().st_uid == os.geteuid()
        assert (tmp_path / "output" / "started").stat().st_uid == os.geteuid()
        view = Path(f"/run/spe-sandbox/view-{user.uid}")
        mounted = Path("/proc/self/mountinfo").read_text()
        assert str(view) not in mounted  # nothing of the job's view is on the host


def test_without_root_or_with_uid_base_0_the_job_runs_as_the_service_and_says_so(box) -> None:
    result, _ = box("print('{}')", settings=Settings(sandbox_uid_base=0))
    assert result.state == "succeeded", result.stderr_tail
    assert result.host_uid == os.getuid()
    assert "the service's own user" in result.host_user
    if os.geteuid() == 0:
        assert "SPE_SANDBOX_UID_BASE=0" in result.host_user


PRODUCTION = {"environment": "production", "secret_key": "k" + uuid.uuid4().hex * 2,
              "oidc_issuer": "https://id.example.org", "oidc_jwks_url":
              "https://id.example.org/jwks", "database_url": "postgresql://spe@db/spe"}


@pytest.mark.parametrize(("setting", "value", "reason"), [
    ("sandbox_cgroup", False, "SPE_SANDBOX_CGROUP is off"),
    ("sandbox_seccomp", False, "SPE_SANDBOX_SECCOMP is off"),
    ("sandbox_uid_base", 0, "SPE_SANDBOX_UID_BASE is 0"),
    ("sandbox_bwrap", "bwrap", "not an absolute path"),
])
def test_production_refuses_a_weakened_sandbox(setting: str, value: object,
                                               reason: str) -> None:
    from spe.settings import InsecureConfiguration

    with pytest.raises(InsecureConfiguration, match=reason):
        Settings(**PRODUCTION, **{setting: value})
    Settings(**{**PRODUCTION, "environment": "development"}, **{setting: value})


def test_production_refuses_a_bwrap_root_does_not_control(tmp_path: Path) -> None:
    from spe.settings import InsecureConfiguration

    _needs_root()
    planted = tmp_path / "bwrap"
    planted.write_bytes(Path("/usr/bin/bwrap").read_bytes())
    planted.chmod(0o755)
    os.chown(planted, 12345, 12345)
    with pytest.raises(InsecureConfiguration, match="not owned by root"):
        Settings(**PRODUCTION, sandbox_bwrap=str(planted))
    os.chown(planted, 0, 0)
    planted.chmod(0o777)
    with pytest.raises(InsecureConfiguration, match="written by others"):
        Settings(**PRODUCTION, sandbox_bwrap=str(planted))
    assert Settings(**PRODUCTION, sandbox_bwrap="/usr/bin/bwrap").sandbox_bwrap


def test_production_refuses_to_run_a_job_as_the_services_user(tmp_path: Path) -> None:
    for name in ("code", "extract", "output"):
        (tmp_path / name).mkdir()
    (tmp_path / "code" / "main.py").write_text("print(1)\n")
    # e.g. a node not started as root (copied, so not validated: run() refuses on its own)
    weak = Settings().model_copy(update={"environment": "production", "sandbox_uid_base": 0})
    with pytest.raises(SandboxUnavailable, match="uid of its own"):
        run(tmp_path / "code", "main.py", tmp_path / "extract", tmp_path / "output", SMALL,
            settings=weak)
    assert list((tmp_path / "output").iterdir()) == []


def test_the_output_is_the_services_again_without_set_id_bits(box, tmp_path: Path) -> None:
    """While the job runs its output folder is its own; after, every file is the service's
    0600 (a set-uid bit the job set is gone), folders 0700, and a link the job left to a
    host file changed nothing of that file."""
    _needs_root()
    host_file = tmp_path / "host.txt"
    host_file.write_text("the host's\n")
    host_file.chmod(0o644)
    result, report = box(f"""
        import json, os
        os.makedirs("/output/sub")
        with open("/output/sub/tool", "w") as f:
            f.write("#!/bin/sh\\n")
        os.chmod("/output/sub/tool", 0o6755)
        os.symlink({str(host_file)!r}, "/output/link")
        st = os.stat("/output")
        print(json.dumps({{"owner": st.st_uid, "mode": oct(st.st_mode & 0o777),
                          "tool": oct(os.stat("/output/sub/tool").st_mode & 0o7777)}}))
    """)
    assert result.state == "succeeded", result.stderr_tail
    assert report == {"owner": 1000, "mode": "0o700", "tool": "0o6755"}  # the job's own
    out = tmp_path / "output"
    tool = (out / "sub" / "tool").stat()
    assert (tool.st_uid, tool.st_gid, oct(tool.st_mode & 0o7777)) == (0, 0, "0o600")
    assert oct((out / "sub").stat().st_mode & 0o7777) == "0o700"
    assert (out / "link").lstat().st_uid == 0
    assert oct(host_file.stat().st_mode & 0o777) == "0o644"


def test_two_jobs_at_once_run_as_two_uids(tmp_path: Path) -> None:
    """Each running job holds a uid of its own: two at once are two host users, so neither
    can signal, trace or read the other's processes."""
    _needs_root()
    cancel = threading.Event()
    results: list[SandboxResult] = []
    workers = []
    for n in range(2):
        root = tmp_path / f"job{n}"
        for name in ("code", "extract", "output"):
            (root / name).mkdir(parents=True)
        (root / "code" / "main.py").write_text(
            "import time\nopen('/output/started', 'w').close()\ntime.sleep(60)\n")
        workers.append(threading.Thread(target=lambda r=root: results.append(run(
            r / "code", "main.py", r / "extract", r / "output", SMALL, cancel=cancel))))
    for worker in workers:
        worker.start()
    try:
        for _ in range(500):
            if all((tmp_path / f"job{n}" / "output" / "started").exists() for n in (0, 1)):
                break
            time.sleep(0.02)
        else:
            pytest.fail("the two jobs did not both start")
    finally:
        cancel.set()
        for worker in workers:
            worker.join(timeout=20)
    assert len(results) == 2
    assert results[0].host_uid != results[1].host_uid
    assert all(r.state == "killed" and r.leftover_processes == 0 for r in results)


def test_no_job_runs_when_the_filter_cannot_be_built(tmp_path: Path, monkeypatch) -> None:
    """Fail closed: without libseccomp the job is refused, never run unfiltered."""
    from spe.sandbox import runner

    def broken() -> bytes:
        raise OSError("libseccomp.so.2: cannot open shared object file")
    monkeypatch.setattr(runner, "filter_bpf", broken)
    for name in ("code", "extract", "output"):
        (tmp_path / name).mkdir()
    (tmp_path / "code" / "main.py").write_text("open('/output/ran', 'w').close()\n")
    with pytest.raises(SandboxUnavailable, match="seccomp"):
        run(tmp_path / "code", "main.py", tmp_path / "extract", tmp_path / "output", SMALL)
    assert not (tmp_path / "output" / "ran").exists()
