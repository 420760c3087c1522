"""The demo and the CLI share one configuration: the demo writes and prints its settings
(`<data-dir>/spe.env`), and the README's commands work against it after `source`-ing
that file; Ctrl-C at any moment of the demo's start stops it cleanly."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_demo import _free_ports_below_ephemeral, _wait_healthy

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def start_demo(tmp_path: Path, port: int) -> subprocess.Popen:
    # A user's shell: no SPE_* of the test run; `spe` on the PATH as after `make setup`.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPE_")}
    env.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "250", "PYTHONPATH": str(REPO)})
    return subprocess.Popen(
        [sys.executable, "-m", "spe.cli", "demo", "--data-dir", str(tmp_path / "demo"),
         "--institutions", "1", "--patients", "20", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
        start_new_session=True)  # Ctrl-C reaches it only when the test sends one


def read_until(proc: subprocess.Popen, marker: str, output: list[str],
               seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            pytest.fail("demo exited early:\n" + "".join(output))
        output.append(line)
        if marker in line:
            return
    pytest.fail(f"demo never printed {marker!r}:\n" + "".join(output))


def stop(proc: subprocess.Popen, output: list[str]) -> str:
    """Ctrl-C; the rest of what it said. Fails unless it stops within 20 s."""
    proc.send_signal(signal.SIGINT)
    try:
        rest, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, _ = proc.communicate()
        pytest.fail("demo did not stop within 20 s of Ctrl-C:\n" + "".join(output) + rest)
    return rest


def shell(script: str, cwd: Path, *, cli_on_path: bool = True) -> subprocess.CompletedProcess:
    """`script` in bash, as a user types it, with the CLI on the PATH (or, without
    `cli_on_path`, a new shell's PATH: the script activates the virtualenv itself)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SPE_") and k != "VIRTUAL_ENV"}
    if cli_on_path:
        env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    else:
        env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":")
                               if p and Path(p).resolve() != BIN.resolve())
    env.update({"COLUMNS": "250", "PYTHONPATH": str(REPO)})
    return subprocess.run(["bash", "-c", f"set -e\n{script}"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_readme_commands_work_against_the_demo_with_its_env_file(tmp_path: Path):
    port = _free_ports_below_ephemeral()
    proc = start_demo(tmp_path, port)
    output: list[str] = []
    try:
        read_until(proc, "press Ctrl-C to stop", output)
        text = "".join(output)
        env_file = tmp_path / "demo" / "spe.env"
        assert f"source {env_file}" in text  # the demo says how
        assert f"export SPE_HUB_URL=http://127.0.0.1:{port}" in text
        assert env_file.stat().st_mode & 0o077 == 0
        _wait_healthy(f"http://127.0.0.1:{port}/health")
        _wait_healthy(f"https://127.0.0.1:{port + 1}/health",
                      verify=__import__("spe.pki", fromlist=["x"]).client_ssl_context(
                          tmp_path / "demo" / "pki", "hub"))
        # A new shell has no `spe`: the demo prints how to activate the one it runs from.
        activate = [line.strip() for line in text.splitlines()
                    if line.strip().startswith(". ") and line.strip().endswith("/activate")]
        assert len(activate) == 1, text
        source = f"{activate[0]}\nsource {shlex.quote(str(env_file))}\n"
        # The README's token command, as written: the running demo accepts its token.
        token = shell(source + "spe token --user alice --role researcher", tmp_path,
                      cli_on_path=False)
        assert token.returncode == 0, token.stderr
        mine = httpx.get(f"http://127.0.0.1:{port}/api/v1/permits",
                         headers={"Authorization": f"Bearer {token.stdout.strip()}"})
        assert mine.status_code == 200, mine.text
        cli = shell(source + "export SPE_TOKEN=$(spe token --user alice --role researcher)\n"
                    "spe permit list", tmp_path)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        # The nodes' mutual TLS and the central database come from the same file.
        harvest = shell(source + "spe catalogue harvest", tmp_path)
        assert harvest.returncode == 0, harvest.stdout + harvest.stderr
        assert "updated" in harvest.stdout + harvest.stderr
        verify = shell(source + "spe audit verify", tmp_path)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "audit log intact" in verify.stdout + verify.stderr
        # No key and no database of the CLI's own anywhere but the demo's folder.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
        assert [p.name for p in (tmp_path / "demo" / "keys").glob("issuer*")] == [
            "issuer.jwk.json"]
    finally:
        rest = stop(proc, output)
    assert proc.returncode == 0, "".join(output) + rest
    assert "demo stopped" in rest
    assert "Traceback" not in rest


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["generating", "press Ctrl-C to stop"])
def test_ctrl_c_at_any_moment_of_the_start_stops_the_demo(tmp_path: Path, moment: str):
    """At once after the line: while it makes its data, and in the first second of
    serving (once ignored: the signal came before the servers' handler was in)."""
    port = _free_ports_below_ephemeral()
    proc = start_demo(tmp_path, port)
    output: list[str] = []
    try:
        read_until(proc, moment, output)
    finally:
        rest = stop(proc, output)
    said = "".join(output) + rest
    assert proc.returncode in (0, 130), said
    assert "Traceback" not in said
    assert "stopped" in rest
    for i in range(2):  # every server let go of its port
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port + i}/health", timeout=2)
