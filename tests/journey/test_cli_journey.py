"""Every command of the README's "Commands" table, run as written against a running demo
with the environment the demo gives a user (its env file or printed exports; on main,
what the test has to set itself, see glue.fallback_env).

Placeholders (PID, JOB_ID, DIR, ...) are filled with what earlier commands gave; optional
parts are left out. A command fails the test on a traceback, on a non-zero exit where the
README documents success, or on an error without a reason. Which command form runs as
what is in tests/journey/glue.py (COMMANDS, SKIPS), and a README form not there fails
`test_every_readme_command_is_run_or_skipped_with_a_reason`.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import bwrap_problem
from tests.journey import glue, jobs

pytestmark = pytest.mark.slow

# What a raw validation dump, rather than a sentence, looks like.
RAW = re.compile(r"validation errors? for|input_value=|errors\.pydantic\.dev|Traceback")


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    forms = glue.readme_commands()
    assert len(forms) > 40, forms  # the table was found and read
    covered = set(glue.COMMANDS) | set(glue.SKIPS)
    assert [f for f in forms if f not in covered] == [], "README commands no journey runs"
    assert sorted(covered - set(forms)) == [], "journey commands the README no longer has"
    for form, run in glue.COMMANDS.items():
        words = shlex.split(run)
        path = glue.command_path(form)
        assert words[:len(path)] == path, (form, run)
        for option in glue.required_options(form):
            assert option in words, (form, run, option)
    assert all(len(reason) > 20 for reason in glue.SKIPS.values())


@pytest.mark.xfail(strict=False, reason=glue.PENDING["env-file"])
def test_the_demo_writes_and_prints_the_exports_a_user_needs(demo):
    env_file = demo.data_dir / glue.ENV_FILE
    assert env_file.is_file(), f"no {env_file}"
    exports = glue.parse_exports(env_file.read_text())
    assert {"SPE_HUB_URL", "SPE_TOKEN"} <= set(exports), exports
    assert exports["SPE_HUB_URL"] == demo.url
    assert "export SPE_HUB_URL=" in demo.printed()
    assert str(env_file) in demo.printed()


@dataclass
class Run:
    form: str
    argv: list[str]
    code: int
    output: str
    seconds: float


@dataclass
class Journey:
    demo: object
    env: dict[str, str]
    work: Path
    values: dict[str, str]
    runs: list[Run] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def argv(self, form: str, command: str | None = None) -> list[str]:
        words = shlex.split((command or glue.COMMANDS[form]).format(**self.values))
        assert words[0] == "spe"
        return [sys.executable, "-m", "spe.cli", *words[1:]]

    def env_for(self, form: str, role: str | None = None) -> dict[str, str]:
        env = {**os.environ, **self.env, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
        role = role or glue.AS_ROLE.get(form)
        if role:
            env["SPE_TOKEN"] = self.demo.tokens[role]
        return env

    def run(self, form: str, command: str | None = None, *, role: str | None = None,
            success: bool = True, timeout: float = 180) -> Run:
        argv = self.argv(form, command)
        started = time.monotonic()
        done = subprocess.run(argv, cwd=self.work, env=self.env_for(form, role),
                              capture_output=True, text=True, timeout=timeout)
        return self.judge(Run(form, argv, done.returncode, done.stdout + done.stderr,
                              time.monotonic() - started), success)

    def judge(self, run: Run, success: bool = True) -> Run:
        self.runs.append(run)
        shown = " ".join(["spe", *run.argv[3:]])
        if "Traceback" in run.output:
            self.problems.append(f"{shown}: a traceback\n{run.output[-2000:]}")
        elif run.code != 0 and success:
            self.problems.append(f"{shown}: exit {run.code} where the README documents "
                                 f"success\n{run.output[-2000:]}")
        elif run.code != 0 and (not run.output.strip() or RAW.search(run.output)):
            self.problems.append(f"{shown}: exit {run.code} without a reason\n{run.output}")
        return run

    def start(self, form: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(form), cwd=self.work, env=self.env_for(form),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish(self, form: str, proc: subprocess.Popen, started: float,
               timeout: float = 240, stopped: bool = False) -> Run:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        # A service stopped with Ctrl-C may say so in its exit status (130, or the signal).
        code = 0 if stopped and proc.returncode in (-signal.SIGINT, 130) else proc.returncode
        return self.judge(Run(form, proc.args, code, out, time.monotonic() - started))

    def service(self, form: str, health: str | None) -> Run:
        """A service: started, seen up (healthy, or alive after a few seconds), Ctrl-C."""
        started = time.monotonic()
        proc = self.start(form)
        up = False
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and proc.poll() is None:
            if health is None:
                time.sleep(4)
                up = proc.poll() is None
                break
            try:
                up = httpx.get(health, timeout=2).status_code == 200
            except httpx.HTTPError:
                up = False
            if up:
                break
            time.sleep(0.3)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        run = self.finish(form, proc, started, timeout=30, stopped=True)
        if not up:
            self.problems.append(f"{form}: never came up\n{run.output[-2000:]}")
        return run


def _first(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found, f"no {pattern!r} in:\n{text}"
    return found.group(0)


def _free_port() -> int:
    from gateway.node.orthanc_process import free_port

    return free_port()


def test_every_readme_command_runs_against_the_demo(demo, tmp_path: Path):
    env, source = demo.exports()
    work = tmp_path / "work"
    work.mkdir()
    jobs.write_inputs(work)
    values = {"work": str(work), "demo": str(demo.data_dir), "node_a": demo.nodes["site-a"],
              "node_c": demo.nodes["site-c"], "carol": demo.uid("carol"),
              "free_port": str(_free_port())}
    j = Journey(demo, env, work, values)
    sandbox = bwrap_problem()
    skipped = dict(glue.SKIPS)
    todo = list(glue.COMMANDS)
    if sandbox:
        for form in todo:
            if form.startswith(("spe job ", "spe sandbox ")):
                skipped[form] = f"jobs need the sandbox: {sandbox}"
    todo = [f for f in todo if f not in skipped]

    # Slow and independent: in the background from the start.
    background = {f: (j.start(f), time.monotonic()) for f in todo if f in glue.BACKGROUND}
    for form in todo:
        if form in background:
            continue
        if form in glue.SERVICES:
            health = (f"http://127.0.0.1:{values['free_port']}/health"
                      if form.startswith("spe serve") else None)
            j.service(form, health)
            continue
        if form == "spe node worker [--concurrency N] [--name NAME]":
            continue
        run = j.run(form)
        if form.startswith("spe permit apply"):
            values["pid"] = _first(r"P-\d{4}-[0-9a-f]+", run.output)
            # A second, submitted at once, for the approver's "changes".
            second = j.run(form, "spe permit apply {work}/app2.json --submit")
            values["pid2"] = _first(r"P-\d{4}-[0-9a-f]+", second.output)
        elif form.startswith("spe permit approve"):
            # Every institution holding a dataset of the permit approves.
            j.run(form, role="approver:bea")
        elif form.startswith("spe job submit"):
            values["job"] = run.output.split()[0] if run.code == 0 else "NO-JOB"
            if run.code == 0:
                jobs.wait_finished(demo.url, demo.tokens["researcher"], values["job"])
        elif form.startswith("spe job outputs") and values.get("job") != "NO-JOB":
            requests = jobs.airlock_requests(demo.url, demo.tokens["researcher"],
                                             values["job"])
            jobs.release(demo.url, [demo.tokens["output_checker"],
                                    demo.tokens["output_checker:oscar"]], requests)
            j.run(form)  # released now: the files
        elif form.startswith("spe job download"):
            files = [p for p in (work / "out").rglob("*") if p.is_file()]
            if run.code == 0 and not files:
                j.problems.append(f"spe job download: nothing in {work / 'out'}")
            # A second job, to cancel while it runs.
            second = j.run("spe job submit --permit PID CODE_DIR [--entry main.py] "
                           "[--node site-a ...] [--wall-seconds N --memory-mb N ...]",
                           "spe job submit --permit {pid} {work}/sleeper")
            values["job2"] = second.output.split()[0] if second.code == 0 else "NO-JOB"
        elif form.startswith("spe permit issue"):
            pass
        elif form.startswith("spe token"):
            minted = run.output.strip().splitlines()[-1] if run.code == 0 else ""
            me = httpx.get(f"{demo.url}/api/v1/me", headers=jobs.bearer(minted), timeout=10)
            if me.status_code != 200:
                j.problems.append(f"spe token: the demo refuses its token ({source} "
                                  f"environment): {me.status_code} {me.text}")
        elif form == "spe users list":
            line = next((x for x in run.output.splitlines() if "carol" in x), "")
            values["carol_uid"] = _first(r"\d+", line) if line else "NO-USER"
        elif form.startswith("spe pki list"):
            assert "site-a" in run.output, run.output
    # The access body's other decisions, on the permit the job ran under.
    issue_form = "spe permit issue|refuse|suspend|resume|revoke PID [--reason R]"
    if issue_form in todo:
        for action in ("suspend", "resume", "revoke"):
            j.run(issue_form, f"spe permit {action} {{pid}} --reason 'journey'")
    worker = "spe node worker [--concurrency N] [--name NAME]"
    if worker in todo:
        # A worker of a node of its own (an empty SQLite node): the demo's nodes run theirs.
        j.env.update({"SPE_NODE_ID": "site-x", "SPE_NODE_WORKERS": "1",
                      "SPE_DATABASE_URL": f"sqlite:///{work}/node.db"})
        j.service(worker, None)
    for form, (proc, started) in background.items():
        j.finish(form, proc, started)

    ran = {r.form for r in j.runs}
    assert ran == set(todo), set(todo) - ran  # nothing silently left out
    report = [f"environment from: {source}; skipped: {skipped}"]
    report += [f"{r.seconds:6.1f}s exit {r.code}: {' '.join(['spe', *r.argv[3:]])}"
               for r in j.runs]
    (tmp_path / "commands.txt").write_text("\n".join(report) + "\n")
    print("\n".join(report))
    assert j.problems == [], "\n\n".join(j.problems)
