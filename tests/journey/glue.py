"""The glue between the journey tests and what they drive, kept in one place so a change of
a page's selectors, of the demo's environment file or of a README command needs one edit.

- Where the demo writes the `export` lines a user needs (`ENV_FILE`) and how they are read
  (`parse_exports`).
- The shared navigation every page carries (`NAV`, `nav_link`, `nav_click`).
- The README "Commands" table parsed (`readme_commands`), and, for each command form it
  lists, the concrete command run (`COMMANDS`) or why it is skipped here (`SKIPS`).
"""

from __future__ import annotations

import re
import shlex

from spe.settings import REPO_ROOT

README = REPO_ROOT / "README.md"

# ---- the demo's environment ----------------------------------------------------------------

#: The file in the demo's data dir holding `export NAME=value` lines, which the demo also
#: prints (with the hint `export SPE_TOKEN=$(spe token --user alice --role researcher)`).
ENV_FILE = "spe.env"


def parse_exports(text: str) -> dict[str, str]:
    """`export NAME=value` lines (shell-quoted values) as a dict."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("export "):
            continue
        for word in shlex.split(line[len("export "):]):
            if "=" in word:
                name, value = word.split("=", 1)
                env[name] = value
    return env


# ---- pages ---------------------------------------------------------------------------------

#: The shared navigation's links: `a[data-nav=NAME]` on every page (spe/web/static/nav.js).
NAV = ("home", "catalogue", "query", "permits", "permit-new", "jobs", "fed", "airlock",
       "docs")


def nav_link(page, name: str):
    return page.locator(f'[data-testid="site-nav"] a[data-nav="{name}"]')


def nav_click(page, name: str) -> None:
    """Follow the shared navigation's link `name`."""
    nav_link(page, name).click()


# ---- the README's commands -----------------------------------------------------------------


def _command_path(span: str) -> list[str]:
    words = []
    for word in span.split():
        if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
            break
        words.append(word)
    return words


def readme_commands(text: str | None = None) -> list[str]:
    """Every command form of the README's "Commands" table, in its order: the spans of a row
    after the first are its group's subcommands (`submit PID` of `spe permit ...`) or its
    first command's options (`--ca-only` of `spe pki init`), written out in full."""
    text = README.read_text() if text is None else text
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    # The section's first table (its prose comes first): past its header and rule.
    start = next(i for i, line in enumerate(lines) if line.startswith("| command |"))
    forms = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cell = line.split(" | ", 1)[0]
        spans = [s.replace("\\|", "|") for s in re.findall(r"`([^`]+)`", cell)]
        if not spans:
            continue
        first = spans[0]
        forms.append(first)
        for span in spans[1:]:
            if span.startswith("spe "):
                forms.append(span)
            elif span.startswith("-"):
                forms.append(" ".join([*_command_path(first), span]))
            else:
                forms.append(" ".join([*first.split()[:2], span]))
    return forms


def required_options(form: str) -> list[str]:
    """The `--options` of a form outside its [optional] parts."""
    while True:
        stripped = re.sub(r"\[[^\[\]]*\]", "", form)
        if stripped == form:
            break
        form = stripped
    return [w for w in form.split() if w.startswith("--")]


def command_path(form: str) -> list[str]:
    """The leading words of a form that every run of it must start with (`spe permit show`)."""
    return _command_path(form)


#: The README's form of `spe fed run` (its options, all optional but the permit).
FED_RUN = ("spe fed run APP --permit PID [--node site-a ...] [--rounds N] "
           "[--set KEY=VALUE ...] [--on-failure stop|retry|skip] [--retries N] "
           "[--min-nodes N] [--covariates age,sex,diagnosis] "
           "[--diagnosis J44] [--modality DX] [--body-part CHEST] "
           "[--dp-clip C --dp-noise Z [--dp-delta D]] [--round-timeout SECONDS] [--wait] "
           "[--json]")

#: README form -> the command run, `{name}` filled from the values earlier steps gave.
#: Ordered: a step may use what an earlier one made (PID, JOB_ID, CSR, ...).
COMMANDS: dict[str, str] = {
    # First (after `spe token`): right after the demo's start, the central database's chain,
    # and a node's head, which the hub witnesses within seconds of the node's start.
    "spe audit verify [--database-url URL] [--target central|node] [--witness FILE] [--key PEM]":
        "spe audit verify",
    "spe audit verify --node NODE [--node-database-url URL]": "spe audit verify --node site-a",
    "spe synth --institutions 3 --patients 300 --seed 1 --out DIR":
        "spe synth --institutions 3 --patients 300 --seed 1 --out {work}/synth",
    "spe node sync --database-url URL --dicom SPEC --fhir SPEC":
        "spe node sync --database-url sqlite:///{work}/node.db "
        "--dicom folder:{demo}/synth/site-a/dicom --fhir ndjson:{demo}/synth/site-a/fhir",
    "spe token --user alice --role researcher [--institution site-a]":
        "spe token --user alice --role researcher",
    "spe audit witness --node NODE [--out FILE]":
        "spe audit witness --node site-a --out {work}/witness-site-a.json",
    "spe audit prune": "spe audit prune",
    "spe db upgrade --target central|node [--url URL]":
        "spe db upgrade --target node --url sqlite:///{work}/node.db",
    "spe policy test": "spe policy test",
    "spe deid dicom SRC DST --key-file F [--permit ID] [--option NAME ...] "
    "[--safe-private LIST.json] [--workers N] [--report R.json]":
        "spe deid dicom {demo}/synth/site-a/dicom {work}/deid-dicom "
        "--key-file {work}/pseudonym.key",
    "spe deid fhir SRC DST --key-file F [--permit ID] [--rules RULES.json] [--workers N] "
    "[--report R.json]":
        "spe deid fhir {demo}/synth/site-a/fhir {work}/deid-fhir --key-file {work}/pseudonym.key",
    "spe identity client-jwks --key hub.key [--kid K]":
        "spe identity client-jwks --key {demo}/pki/hub.key",
    "spe catalogue harvest [--node URL ...] [--token T]": "spe catalogue harvest",
    "spe catalogue search [Q] [--modality MR ...] [--institution site-a ...] "
    "[--condition C71 ...] [--page N] [--json]": "spe catalogue search imaging --modality MR",
    # Again with --permit PID once the permit is issued (the permit tier).
    "spe query QUERY.json [--granularity boolean|count|stratified|mean|...] [--by STRATUM] "
    "[--permit PID] [--json]": "spe query {work}/query.json",
    # The datasets of site-a and site-b (default: all three); the test then fills in what
    # the template leaves to the applicant (the declaration), as its comments ask.
    "spe permit template [--dataset D ...] [--member U ...] > APP.json":
        "spe permit template --dataset {dataset_a} --dataset {dataset_b} > {work}/app.json",
    "spe permit apply APP.json [--submit]": "spe permit apply {work}/app.json",
    "spe permit submit PID": "spe permit submit {pid}",
    "spe permit show PID": "spe permit show {pid}",
    "spe permit list [--mine] [--status S ...]": "spe permit list",
    "spe permit approve PID [--condition C ...]": "spe permit approve {pid}",
    "spe permit issue|refuse|suspend|resume|revoke PID [--reason R]": "spe permit issue {pid}",
    "spe job submit --permit PID CODE_DIR [--entry main.py] [--node site-a ...] "
    "[--environment imaging] [--wall-seconds N --memory-mb N ...]":
        "spe job submit --permit {pid} {work}/code",
    "spe job status JOB_ID [--json]": "spe job status {job}",
    "spe job status JOB_ID --wait [--timeout SECONDS]":
        "spe job status {job} --wait --timeout 600",
    "spe job list [--json]": "spe job list",
    "spe job outputs JOB_ID [--json]": "spe job outputs {job}",
    "spe job logs JOB_ID": "spe job logs {job}",
    "spe job download JOB_ID [--to DIR] [--node site-a]": "spe job download {job} --to {work}/out",
    # The first job's code as a Five Safes request crate, sent; the first job's result crate.
    "spe job crate CODE_DIR --permit PID --out FILE [--entry main.py] [--node site-a ...]":
        "spe job crate {work}/code --permit {pid} --out {work}/request.zip",
    "spe job submit-crate FILE": "spe job submit-crate {work}/request.zip",
    "spe job result-crate JOB_ID --out FILE": "spe job result-crate {job} --out {work}/result.zip",
    "spe job cancel JOB_ID": "spe job cancel {job2}",
    # A ComBat run with the CLI's defaults (DX chest radiographs, COPD J44) over the permit's
    # two institutions, followed until it ends; if it succeeds, its result released by two
    # checkers, then read and downloaded; a second run cancelled while it runs. On the
    # journey's small demo (60 patients per institution; site-a has 10 with a chest
    # radiograph, fewer with every covariate known) a node's gate may refuse the round
    # (min_patients): then the run must have failed in the gate's words, and `status --wait`
    # and `download` must exit 1 saying why, as the README documents (FED_NEEDS_RESULT).
    # `spe demo`'s default of 300 patients per institution is enough. The Flower form (a
    # folder instead of `combat`) is not run here: tests/federated/test_flower_federated.py
    # runs the example app through the hub over three nodes.
    FED_RUN: "spe fed run combat --permit {pid}",
    "spe fed status RUN_ID --wait [--timeout SECONDS]": "spe fed status {run} --wait --timeout 600",
    "spe fed status RUN_ID [--json]": "spe fed status {run}",
    "spe fed list [--json]": "spe fed list",
    "spe fed outputs RUN_ID [--json]": "spe fed outputs {run}",
    "spe fed download RUN_ID [--to DIR]": "spe fed download {run} --to {work}/fed-out",
    "spe fed cancel RUN_ID": "spe fed cancel {run2}",
    "spe permit amend PID [--member U] [--dataset D] --reason R":
        "spe permit amend {pid} --member {carol} --reason 'Carol joins the analysis'",
    "spe permit reject|changes PID --reason R":
        "spe permit changes {pid2} --reason 'Say which years'",
    "spe risk EXTRACT [--k 5] [--max-risk 0.09] [--reduce [--out DIR]] [--json]":
        "spe risk {demo}/synth/site-a",
    "spe pki init --out DIR --node site-a [--node ...] [--hub hub] "
    "[--host site-a=node-a.example.org ...] [--days 825] [--force]":
        "spe pki init --out {work}/pki --node site-a",
    "spe pki init --ca-only": "spe pki init --out {work}/ca --ca-only",
    "spe pki request --name site-a --out DIR [--host node-a.example.org ...] [--rotate]":
        "spe pki request --name site-a --out {work}/site-a",
    "spe pki sign CSR --ca DIR [--role node|hub] [--days 825] [--out CERT]":
        "spe pki sign {work}/site-a/site-a.csr --ca {work}/ca --out {work}/site-a/site-a.crt",
    "spe pki install CERT --dir DIR [--ca-cert ca.crt] [--hub-cert hub.crt]":
        "spe pki install {work}/site-a/site-a.crt --dir {work}/site-a --ca-cert {work}/ca/ca.crt",
    "spe pki list --ca DIR": "spe pki list --ca {work}/ca",
    "spe pki revoke SERIAL|CERT --ca DIR --reason R":
        "spe pki revoke {work}/site-a/site-a.crt --ca {work}/ca --reason superseded",
    "spe federation list": "spe federation list",
    "spe federation remove NODE [--revoke] [--reason R]":
        "spe federation remove site-c --reason 'maintenance'",
    "spe federation add NODE URL [--reason R]": "spe federation add site-c {node_c}",
    "spe users list": "spe users list",
    "spe users suspend UID --reason R":
        "spe users suspend {carol_uid} --reason 'left the project'",
    "spe users reinstate UID [--reason R]": "spe users reinstate {carol_uid}",
    "spe sandbox run --extract DIR --code DIR --output DIR [--entry main.py] [--cpu-seconds N "
    "--memory-mb N --processes N --open-files N --file-size-mb N --output-mb N --scratch-mb N "
    "--wall-seconds N] [--json]":
        "spe sandbox run --extract {demo}/synth/site-a --code {work}/code "
        "--output {work}/sandbox-out",
    "spe serve central|node [--host H] [--port P] [--tls-cert F --tls-key F]":
        "spe serve central --port {free_port}",
    "spe node worker [--concurrency N] [--name NAME]": "spe node worker",
}

#: `spe fed` forms that succeed only once the run has succeeded (else: exit 1 with a reason).
FED_NEEDS_RESULT = {"spe fed status RUN_ID --wait [--timeout SECONDS]",
                    "spe fed download RUN_ID [--to DIR]"}

#: README form -> why it is not run here.
SKIPS: dict[str, str] = {
    "spe demo [--orthanc] [--patients N] [--institutions N]":
        "run by the session fixture (spe demo --data-dir TMP --port FREE --institutions 3 "
        "--patients 60): it is the demo every other command talks to",
    "spe job test CODE_DIR --permit PID [--entry main.py] [--environment NAME] "
    "[--wall-seconds N --memory-mb N ...] [--patients 100] [--seed 1] "
    "[--shape FILE | --save-shape FILE] [--work DIR] [--json]":
        "synthesises, stages and runs three dummy sites on this machine (minutes on the "
        "journey's shared CPUs): tests/gateway/test_job_dry_run.py runs it as written against "
        "a permit's shape and compares its verdicts with the nodes'",
    "spe identity check":
        "needs an OpenID Connect provider with a client registered for the centre "
        "(SPE_OIDC_TOKEN_URL, SPE_OIDC_CLIENT_ID): the demo has only its own issuer "
        "(tests/identity runs it against a real provider)",
}

#: Commands that are services: started, seen alive (and healthy), stopped with Ctrl-C.
SERVICES = {"spe serve central|node [--host H] [--port P] [--tls-cert F --tls-key F]",
            "spe node worker [--concurrency N] [--name NAME]"}

#: Commands run in the background from the start (slow, independent), checked at the end.
BACKGROUND = {"spe synth --institutions 3 --patients 300 --seed 1 --out DIR",
              "spe policy test"}

#: Who runs a command (a key of the demo's tokens.json), when not the researcher.
AS_ROLE: dict[str, str] = {
    "spe permit approve PID [--condition C ...]": "approver",
    "spe permit issue|refuse|suspend|resume|revoke PID [--reason R]": "hdab",
    "spe permit reject|changes PID --reason R": "approver",
    "spe federation list": "admin",
    "spe federation remove NODE [--revoke] [--reason R]": "admin",
    "spe federation add NODE URL [--reason R]": "admin",
    "spe users list": "admin",
    "spe users suspend UID --reason R": "admin",
    "spe users reinstate UID [--reason R]": "admin",
}

__all__ = ["AS_ROLE", "BACKGROUND", "COMMANDS", "ENV_FILE", "FED_NEEDS_RESULT", "FED_RUN",
           "NAV", "README", "SERVICES", "SKIPS", "command_path", "nav_click", "nav_link",
           "parse_exports", "readme_commands", "required_options"]
