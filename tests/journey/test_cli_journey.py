"""Every command of the README's "Commands" table, run as written against a running demo
with the environment the demo gives a user: its `spe.env` (the `export` lines it prints),
and `SPE_TOKEN` as its printed hint makes it (`spe token --user alice --role researcher`);
other roles' tokens from its `tokens.json`, as the README says. Nothing else of the test
run's environment (no `SPE_*`) and no folder of the checkout (commands run in a fresh one).

Placeholders (PID, JOB_ID, DIR, ...) are filled with what earlier commands gave; optional
parts are left out. A command fails the test on a traceback, on a non-zero exit where the
README documents success, or on an error without a reason. Which command form runs as
what is in tests/journey/glue.py (COMMANDS, SKIPS), and a README form not there fails
`test_every_readme_command_is_run_or_skipped_with_a_reason`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from spe.wire.rounds import GATE_REASONS
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


TOKEN_HINT = "export SPE_TOKEN=$(spe token --user alice --role researcher)"


def test_the_demo_writes_and_prints_the_exports_a_user_needs(demo):
    env_file = demo.data_dir / glue.ENV_FILE
    assert env_file.is_file(), f"no {env_file}"
    exports = demo.exports()
    assert {"SPE_HUB_URL", "SPE_OIDC_ISSUER", "SPE_DATA_DIR", "SPE_PKI_DIR",
            "SPE_CATALOGUE_NODES"} <= set(exports), exports
    assert exports["SPE_HUB_URL"] == demo.url
    assert exports["SPE_DATA_DIR"] == str(demo.data_dir)
    printed = demo.printed()
    assert f"source {env_file}" in printed
    assert TOKEN_HINT in printed
    shown = glue.parse_exports(printed)
    shown.pop("SPE_TOKEN", None)  # the hint, a command substitution
    assert shown == exports, (shown, exports)


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

    def argv(self, form: str, command: str | None = None) -> tuple[list[str], Path | None]:
        """The command's words as `python -m spe.cli ...` runs them (the `spe` script of
        this checkout), and the file its `> FILE` sends standard output to, if any."""
        words = shlex.split((command or glue.COMMANDS[form]).format(**self.values))
        assert words[0] == "spe"
        into = None
        if ">" in words:
            at = words.index(">")
            words, into = words[:at], Path(words[at + 1])
        return [sys.executable, "-m", "spe.cli", *words[1:]], into

    def env_for(self, form: str, role: str | None = None) -> dict[str, str]:
        # A second shell: the user's own environment (no SPE_*), then `source spe.env`.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPE_")}
        env.update({**self.env, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
        role = role or glue.AS_ROLE.get(form)
        if role:
            env["SPE_TOKEN"] = self.demo.tokens[role]
        return env

    def run(self, form: str, command: str | None = None, *, role: str | None = None,
            success: bool = True, timeout: float = 180) -> Run:
        argv, into = self.argv(form, command)
        started = time.monotonic()
        done = subprocess.run(argv, cwd=self.work, env=self.env_for(form, role),
                              capture_output=True, text=True, timeout=timeout)
        if into is not None:
            into.write_text(done.stdout)
            output = done.stderr
        else:
            output = done.stdout + done.stderr
        return self.judge(Run(form, argv, done.returncode, output,
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
        return subprocess.Popen(self.argv(form)[0], cwd=self.work, env=self.env_for(form),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish(self, form: str, proc: subprocess.Popen, started: float,
               timeout: float = 240) -> Run:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        return self.judge(Run(form, proc.args, proc.returncode, out,
                              time.monotonic() - started))

    def service(self, form: str, health: str | None = None, ready: str | None = None) -> Run:
        """A service: started, seen up (healthy, or saying `ready`), stopped with Ctrl-C."""
        started = time.monotonic()
        proc = self.start(form)
        lines: list[str] = []
        pump = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        pump.start()
        up = False
        deadline = time.monotonic() + 40
        while not up and time.monotonic() < deadline and proc.poll() is None:
            if ready is not None:
                up = any(ready in line for line in list(lines))
            else:
                try:
                    up = httpx.get(health, timeout=2).status_code == 200
                except httpx.HTTPError:
                    up = False
            if not up:
                time.sleep(0.2)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        pump.join(timeout=5)
        # Stopped with Ctrl-C, a service may say so in its exit status (130, or the signal).
        code = 0 if proc.returncode in (-signal.SIGINT, 130) else proc.returncode
        run = self.judge(Run(form, proc.args, code, "".join(lines),
                             time.monotonic() - started))
        if not up:
            self.problems.append(f"{form}: never came up\n{run.output[-2000:]}")
        return run


def _pump(stream, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


def _first(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found, f"no {pattern!r} in:\n{text}"
    return found.group(0)


def _free_port() -> int:
    from gateway.node.orthanc_process import free_port

    return free_port()


TOKEN_FORM = "spe token --user alice --role researcher [--institution site-a]"
JOB_SUBMIT = ("spe job submit --permit PID CODE_DIR [--entry main.py] [--node site-a ...] "
              "[--environment imaging] [--wall-seconds N --memory-mb N ...]")
QUERY = ("spe query QUERY.json [--granularity boolean|count|stratified|mean|...] "
         "[--by STRATUM] [--permit PID] [--json]")
ISSUE = "spe permit issue|refuse|suspend|resume|revoke PID [--reason R]"
PERMITS = "spe permit list [--mine] [--status S ...]"
WORKER = "spe node worker [--concurrency N] [--name NAME]"


def _fill_in(app: Path, datasets: list[str]) -> None:
    """What the applicant edits in the template: the declaration (false until they make
    it); the rest as the template has it, its `// field` comments left in."""
    filled = json.loads(app.read_text())
    assert filled["datasets"] == datasets, filled
    assert any(k.startswith("//") for k in filled), "the template has no comments"
    filled["declaration"] = True
    app.write_text(json.dumps(filled, indent=1))


def test_every_readme_command_runs_against_the_demo(demo, tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    jobs.write_inputs(work)
    datasets = [jobs.DATASET_A, jobs.DATASET_B]
    values = {"work": str(work), "demo": str(demo.data_dir), "node_a": demo.nodes["site-a"],
              "node_c": demo.nodes["site-c"], "carol": demo.uid("carol"),
              "free_port": str(_free_port()), "dataset_a": datasets[0],
              "dataset_b": datasets[1]}
    j = Journey(demo, demo.exports(), work, values)
    sandbox = bwrap_problem()
    skipped = dict(glue.SKIPS)
    todo = list(glue.COMMANDS)
    if sandbox:
        for form in todo:
            if form.startswith(("spe job ", "spe sandbox ", "spe fed ")):
                skipped[form] = f"jobs and federated rounds need the sandbox: {sandbox}"
    todo = [f for f in todo if f not in skipped]

    # Slow and independent: in the background from the start.
    background = {f: (j.start(f), time.monotonic()) for f in todo if f in glue.BACKGROUND}

    # The demo's hint first: `export SPE_TOKEN=$(spe token --user alice --role researcher)`.
    minted = j.run(TOKEN_FORM)
    assert minted.code == 0, minted.output
    j.env["SPE_TOKEN"] = minted.output.strip().splitlines()[-1]
    me = httpx.get(f"{demo.url}/api/v1/me", headers=jobs.bearer(j.env["SPE_TOKEN"]),
                   timeout=10)
    assert me.status_code == 200, f"the demo refuses its token: {me.status_code} {me.text}"

    for form in todo:
        if form in background or form == TOKEN_FORM or form == WORKER:
            continue
        if form in glue.SERVICES:
            j.service(form, health=f"http://127.0.0.1:{values['free_port']}/health")
            continue
        needs_result = form in glue.FED_NEEDS_RESULT and values.get("run_state") != "succeeded"
        run = j.run(form, success=not needs_result)
        if form.startswith("spe permit template"):
            _fill_in(work / "app.json", datasets)
        elif form.startswith("spe permit apply"):
            values["pid"] = _first(r"P-\d{4}-[0-9a-f]+", run.output)
            # A second, submitted at once, for the approver's "changes".
            second = j.run(form, "spe permit apply {work}/app2.json --submit")
            values["pid2"] = _first(r"P-\d{4}-[0-9a-f]+", second.output)
        elif form.startswith("spe permit approve"):
            # Every institution holding a dataset of the permit approves.
            j.run(form, role="approver:bea")
        elif form == ISSUE:
            # A member of the active permit asks in the permit tier.
            j.run(QUERY, "spe query {work}/query.json --permit {pid}")
        elif form == JOB_SUBMIT:
            values["job"] = run.output.split()[0] if run.code == 0 else "NO-JOB"
            if run.code == 0:
                jobs.wait_finished(demo.url, j.env["SPE_TOKEN"], values["job"])
        elif form.startswith("spe job outputs") and values.get("job") != "NO-JOB":
            # One airlock request for the job, its sites' outputs in it; two checkers
            # release it (no README command reviews), then the files show.
            requests = jobs.airlock_requests(demo.url, j.env["SPE_TOKEN"], values["job"])
            assert len(requests) == 1, requests
            jobs.release(demo.url, [demo.tokens["output_checker"],
                                    demo.tokens["output_checker:oscar"]], requests)
            released = j.run(form)
            if "table.csv" not in released.output:
                j.problems.append(f"spe job outputs: no table.csv once released\n"
                                  f"{released.output}")
        elif form.startswith("spe job download"):
            files = sorted(p.name for p in (work / "out").rglob("*") if p.is_file())
            if run.code == 0 and "table.csv" not in files:
                j.problems.append(f"spe job download: no table.csv in {work / 'out'}: {files}")
            # A second job, to cancel while it runs.
            second = j.run(JOB_SUBMIT, "spe job submit --permit {pid} {work}/sleeper")
            values["job2"] = second.output.split()[0] if second.code == 0 else "NO-JOB"
        elif form == glue.FED_RUN:
            found = re.search(r"\b[0-9a-f]{32}\b", run.output) if run.code == 0 else None
            values["run"] = found.group(0) if found else "NO-RUN"
            if found:
                ended = jobs.wait_run(demo.url, j.env["SPE_TOKEN"], values["run"])
                values["run_state"] = ended["state"]
                # Succeeded, or stopped by a node's gate in its own words (the small demo's
                # data); anything else (a hub error, a failed step) is a problem.
                told = {s["reason"] for r in ended["rounds"] for s in r["nodes"].values()
                        if s["state"] != "accepted"}
                if ended["state"] != "succeeded" and not (
                        ended["state"] == "failed" and told
                        and told <= {GATE_REASONS["min_patients"]}):
                    j.problems.append(f"spe fed run combat: the run {ended['state']}: "
                                      f"{ended.get('reason')}\n{json.dumps(ended['rounds'])}")
        elif form.startswith("spe fed outputs") and values.get("run_state") != "succeeded":
            if "nothing in the airlock yet" not in run.output:
                j.problems.append(f"spe fed outputs: a result of a run that did not succeed\n"
                                  f"{run.output}")
        elif form.startswith("spe fed outputs") and values.get("run") != "NO-RUN":
            # The run's result, one airlock request; two checkers release it.
            requests = jobs.run_requests(demo.url, j.env["SPE_TOKEN"], values["run"])
            if len(requests) != 1:
                j.problems.append(f"spe fed outputs: {len(requests)} airlock requests")
            else:
                jobs.release(demo.url, [demo.tokens["output_checker"],
                                        demo.tokens["output_checker:oscar"]], requests)
                released = j.run(form)
                if "combat_estimates.json" not in released.output:
                    j.problems.append(f"spe fed outputs: no combat_estimates.json once "
                                      f"released\n{released.output}")
        elif form.startswith("spe fed download"):
            files = sorted(p.name for p in (work / "fed-out").rglob("*") if p.is_file())
            if values.get("run_state") == "succeeded" and "combat_estimates.json" not in files:
                j.problems.append(f"spe fed download: no combat_estimates.json in "
                                  f"{work / 'fed-out'}: {files}")
            # A second run, to cancel while it runs.
            second = j.run(glue.FED_RUN)
            found = re.search(r"\b[0-9a-f]{32}\b", second.output)
            values["run2"] = found.group(0) if second.code == 0 and found else "NO-RUN"
        elif form.startswith("spe fed cancel") and run.code == 0:
            if "cancelled" not in run.output:
                j.problems.append(f"spe fed cancel: the run is not cancelled\n{run.output}")
        elif form.startswith("spe permit amend"):
            # Carol, a member now, looks for her permits (and so the centre has seen her).
            j.run(PERMITS, "spe permit list --mine", role="researcher:carol")
        elif form == "spe users list":
            line = next((x for x in run.output.splitlines() if "carol" in x), "")
            values["carol_uid"] = _first(r"\d+", line) if line else "NO-USER"
        elif form.startswith("spe pki list"):
            assert "site-a" in run.output, run.output
    # The access body's other decisions, on the permit the job ran under.
    if ISSUE in todo:
        for action in ("suspend", "resume", "revoke"):
            j.run(ISSUE, f"spe permit {action} {{pid}} --reason 'journey'")
    if WORKER in todo:
        # A worker of a node of its own (an empty SQLite node): the demo's nodes run theirs.
        j.env.update({"SPE_NODE_ID": "site-x", "SPE_NODE_WORKERS": "1",
                      "SPE_DATABASE_URL": f"sqlite:///{work}/node.db"})
        j.service(WORKER, ready="Ctrl-C stops")
    for form, (proc, started) in background.items():
        j.finish(form, proc, started)

    ran = {r.form for r in j.runs}
    assert ran == set(todo), set(todo) - ran  # nothing silently left out
    report = [f"environment from: {demo.data_dir / glue.ENV_FILE} and {TOKEN_HINT}",
              f"run: {len(todo)} forms ({len(j.runs)} commands); skipped: {skipped}"]
    report += [f"{r.seconds:6.1f}s exit {r.code}: {' '.join(['spe', *r.argv[3:]])}"
               for r in j.runs]
    (tmp_path / "commands.txt").write_text("\n".join(report) + "\n")
    print("\n".join(report))
    assert j.problems == [], "\n\n".join(j.problems)
