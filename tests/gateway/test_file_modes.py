"""Everything the centre and a node write is theirs alone: after a real job, every file
under their data folders (databases and their -wal/-shm, staged extracts, job code and
outputs, staging reports, the airlock, keys) and the PKI is 0600, every folder 0700.

Measured before: a node's staged extracts, job code, outputs and staging reports were
0644 in 0755 folders and its SQLite files 0644, so any local user read them.

Run as an operator would: `spe pki init`, `spe node sync`, `spe serve node`, `spe serve
central` and `spe catalogue harvest` are real processes started with umask 022 (the
usual shell's), so what they write is as private as they make it themselves. A researcher
submits a job over HTTP under a permit; the job also tries to open up what it writes.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from gateway.node.orthanc_process import free_port
from spe.identity import DemoIssuer
from spe.pki import client_ssl_context
from spe.synth import generate

pytestmark = pytest.mark.usefixtures("needs_sandbox")

SITE = "site-a"
LIMITS = {"cpu_seconds": 60, "memory_mb": 1024, "processes": 64, "open_files": 128,
          "file_size_mb": 20, "output_mb": 20, "scratch_mb": 64, "wall_seconds": 60}
# Counts images per modality; then tries to make its outputs readable by everyone.
JOB = """
    import collections, os, pathlib
    counts = collections.Counter(p.parent.parent.name[:2] for p in
                                 pathlib.Path("/extract/dicom").rglob("*") if p.is_file())
    os.makedirs("/output/tables", mode=0o777, exist_ok=True)
    with open("/output/tables/images.csv", "w") as out:
        out.write("images\\n" + str(sum(counts.values())) + "\\n")
    for path in ("/output/tables/images.csv", "/output/tables", "/output"):
        try:
            os.chmod(path, 0o777 if os.path.isdir(path) else 0o666)
        except OSError:
            pass
    print("done")
"""


def _env(**spe: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPE_")}
    if "SPE_SANDBOX_PYTHON" in os.environ:
        env["SPE_SANDBOX_PYTHON"] = os.environ["SPE_SANDBOX_PYTHON"]
    env.update({f"SPE_{k.upper()}": v for k, v in spe.items()})
    return env


def _spe(*args: str, env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "spe.cli", *args], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=300, umask=0o022)
    assert result.returncode == 0, (args, result.stdout, result.stderr)


def _start(stack: ExitStack, args: tuple[str, ...], env: dict[str, str], cwd: Path,
           log: Path) -> subprocess.Popen:
    out = stack.enter_context(open(log, "wb"))
    process = subprocess.Popen([sys.executable, "-m", "spe.cli", *args], env=env, cwd=cwd,
                               stdout=out, stderr=subprocess.STDOUT, umask=0o022)

    def stop() -> None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    stack.callback(stop)
    return process


def _wait_ready(url: str, process: subprocess.Popen, log: Path, **client) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            if httpx.get(f"{url}/health", timeout=2, **client).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} did not start:\n{log.read_text(errors='replace')[-3000:]}")


def _modes(roots: list[Path]) -> dict[Path, int]:
    """Every file and folder under `roots` (the roots too) -> its permission bits."""
    found: dict[Path, int] = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            try:
                found[path] = stat.S_IMODE(path.lstat().st_mode)
            except FileNotFoundError:  # a temporary file gone meanwhile
                continue
    return found


@pytest.fixture(scope="module")
def after_a_job(tmp_path_factory) -> Iterator[tuple[dict[Path, int], Path, dict]]:
    """(the modes of everything written while the services ran, the root, the job)."""
    root = tmp_path_factory.mktemp("modes")
    generate(root / "stores", institutions=1, patients=80, seed=5)  # the hospital's own
    stores = root / "stores" / SITE
    node_dir, central_dir, pki = root / "node", root / "central", root / "pki"
    node_port, central_port = free_port(), free_port()
    node_url, central_url = f"https://127.0.0.1:{node_port}", f"http://127.0.0.1:{central_port}"

    _spe("pki", "init", "--out", str(pki), "--node", SITE, env=_env(), cwd=root)
    node_env = _env(data_dir=str(node_dir), node_id=SITE, node_name="Site A",
                    database_url=f"sqlite:///{node_dir / 'node.db'}",
                    node_dicom=f"folder:{stores / 'dicom'}", node_fhir=f"ndjson:{stores / 'fhir'}",
                    pki_dir=str(pki), node_workers="1", oidc_issuer=central_url,
                    oidc_jwks_url=f"{central_url}/.well-known/jwks.json")
    central_env = _env(data_dir=str(central_dir), pki_dir=str(pki), oidc_issuer=central_url,
                       federation_nodes=json.dumps({SITE: node_url}),
                       job_collect_interval_seconds="1")
    _spe("node", "sync", env=node_env, cwd=root)
    with ExitStack() as stack:
        central = _start(stack, ("serve", "central", "--port", str(central_port)),
                         central_env, root, root / "central.log")
        _wait_ready(central_url, central, root / "central.log")
        node = _start(stack, ("serve", "node", "--port", str(node_port)), node_env, root,
                      root / "node.log")
        _wait_ready(node_url, node, root / "node.log",
                    verify=client_ssl_context(pki, "hub"))
        _spe("catalogue", "harvest", "--node", node_url, env=central_env, cwd=root)

        issuer = DemoIssuer(central_dir / "keys" / "issuer.jwk.json", central_url, "spe")
        hub = stack.enter_context(httpx.Client(base_url=central_url, timeout=60))

        def as_(user: str, role: str, institution: str | None = None) -> dict:
            return {"Authorization": "Bearer " + issuer.mint(user, [role],
                                                             institution=institution)}

        pid = _issue_permit(hub, as_, central_url)
        resp = hub.post("/api/v1/jobs", headers=as_("carol", "researcher"), json={
            "permit": pid, "script": textwrap.dedent(JOB), "limits": LIMITS})
        assert resp.status_code == 202, resp.text
        job = _wait(hub, resp.json()["id"], as_)
        # Listed while both run: their databases' -wal and -shm files are there now.
        yield _modes([node_dir, central_dir, pki]), root, job


def _issue_permit(hub: httpx.Client, as_, issuer: str) -> str:
    alice = as_("alice", "researcher")
    body = {"organisation": "Uni", "title": "Image counts", "summary": "s",
            "purpose": "scientific_research", "declaration": True,
            "start_date": str(date.today()), "end_date": str(date.today() + timedelta(days=30)),
            "members": [f"carol@{issuer}"], "datasets": [f"{SITE}/imaging-and-clinical-records"]}
    created = hub.post("/api/v1/permits", json=body, headers=alice)
    assert created.status_code in (200, 201), created.text
    pid = created.json()["id"]
    assert hub.post(f"/api/v1/permits/{pid}/submit", headers=alice).status_code == 200
    review = hub.post(f"/api/v1/permits/{pid}/reviews", json={"decision": "approve"},
                      headers=as_("bob", "approver", SITE))
    assert review.status_code == 200, review.text
    issued = hub.post(f"/api/v1/permits/{pid}/issue", json={"reason": "ok"},
                      headers=as_("hilde", "hdab"))
    assert issued.status_code == 200, issued.text
    assert issued.json()["pushed"] == {SITE: "delivered"}
    return pid


def _wait(hub: httpx.Client, job_id: str, as_, seconds: float = 600) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        resp = hub.get(f"/api/v1/jobs/{job_id}", headers=as_("carol", "researcher"))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        done = all(n["state"] in {"succeeded", "failed", "timed_out", "cancelled"}
                   and n.get("airlock") for n in body["nodes"])
        if done or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def test_the_job_ran_and_its_outputs_reached_the_airlock(after_a_job):
    _, _, job = after_a_job
    assert [(n["node_id"], n["state"]) for n in job["nodes"]] == [(SITE, "succeeded")], job
    assert job["nodes"][0]["airlock"], job


def test_every_file_is_0600_and_every_folder_0700(after_a_job):
    modes, root, _ = after_a_job
    assert modes  # the check below is not vacuous
    wrong = {str(p.relative_to(root)): oct(m) for p, m in modes.items()
             if m != (0o700 if p.is_dir() and not p.is_symlink() else 0o600)}
    assert not wrong, wrong


def test_the_listing_covers_what_holds_data(after_a_job):
    """The places the issue names are among what was checked."""
    modes, root, _ = after_a_job
    names = {p.relative_to(root).as_posix() for p in modes}
    expected = {
        "node/node.db", "node/node.db-wal", "node/node.db-shm", "central/central.db",
        "central/central.db-wal", "central/keys/issuer.jwk.json", "pki/site-a.key",
        "pki/site-a.crt", "pki/ca.crt",
    }
    assert expected <= names, sorted(expected - names)
    for prefix in (f"node/extracts/{SITE}/", f"node/jobs/{SITE}/", "central/airlock/"):
        assert any(n.startswith(prefix) for n in names), prefix
    job_files = [n for n in names if n.startswith(f"node/jobs/{SITE}/")]
    assert any(n.endswith("/code/main.py") for n in job_files), job_files
    assert any(n.endswith("/output/tables/images.csv") for n in job_files), job_files
    assert any(n.endswith(".ndjson") for n in names if n.startswith("node/extracts/"))
    assert any(n.endswith("images.csv") for n in names if n.startswith("central/airlock/"))
