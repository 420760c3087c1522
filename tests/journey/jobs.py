"""What the journeys send and wait for: an application, a job's code, a query; and the
waits over the API (a job or a federated run finished, their airlock requests there) that
no README command is for."""

from __future__ import annotations

import json
import textwrap
import time
from datetime import date, timedelta
from pathlib import Path

import httpx

#: Counts of the extract's DICOM files by modality, counts under 10 folded into "other":
#: an aggregate table the airlock's checks pass.
SCRIPT = textwrap.dedent("""\
    import collections
    import pathlib

    import pydicom

    counts = collections.Counter()
    for path in sorted(pathlib.Path("/extract/dicom").rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            counts[str(getattr(ds, "Modality", "") or "unknown")] += 1
    rows = {m: n for m, n in counts.items() if n >= 10}
    other = sum(n for n in counts.values() if n < 10)
    if other >= 10:
        rows["other"] = other
    with open("/output/table.csv", "w") as out:
        out.write("modality,n\\n")
        for modality, n in sorted(rows.items()):
            out.write(f"{modality},{n}\\n")
    print("done")
""")

DATASET_A = "site-a/imaging-and-clinical-records"
DATASET_B = "site-b/imaging-and-clinical-records"

SLEEPER = 'import time\nprint("sleeping", flush=True)\ntime.sleep(120)\n'


def application(datasets: list[str], members: list[str] = ()) -> dict:
    today = date.today()
    return {"organisation": "University of Somewhere", "title": "Imaging counts by modality",
            "summary": "How many studies of each modality the institutions hold.",
            "purpose": "scientific_research", "declaration": True,
            "legal_basis": "GDPR Art. 9(2)(j)", "form": "anonymised",
            "start_date": today.isoformat(),
            "end_date": (today + timedelta(days=365)).isoformat(),
            "members": list(members), "datasets": datasets}


def write_inputs(work: Path) -> None:
    (work / "code").mkdir(parents=True, exist_ok=True)
    (work / "code" / "main.py").write_text(SCRIPT)
    (work / "sleeper").mkdir(exist_ok=True)
    (work / "sleeper" / "main.py").write_text(SLEEPER)
    (work / "sandbox-out").mkdir(exist_ok=True)
    (work / "pseudonym.key").write_bytes(bytes(range(32)))
    (work / "query.json").write_text(json.dumps(
        {"where": {"type": "imaging", "modality": ["CT", "MR"]}}))
    # app.json comes from `spe permit template`; a second application, for "changes".
    (work / "app2.json").write_text(json.dumps(application([DATASET_A])))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_finished(url: str, token: str, job: str, within: float = 150.0) -> dict:
    """The job once no node is still at it."""
    deadline = time.monotonic() + within
    body: dict = {}
    while time.monotonic() < deadline:
        resp = httpx.get(f"{url}/api/v1/jobs/{job}", headers=bearer(token), timeout=30)
        resp.raise_for_status()
        body = resp.json()
        states = {n["state"] for n in body["nodes"]}
        if states and states <= {"succeeded", "failed", "timed_out", "killed", "cancelled",
                                 "refused", "error"}:
            return body
        time.sleep(1)
    raise AssertionError(f"job {job} not finished within {within:.0f} s: {body}")


def airlock_requests(url: str, token: str, job: str, count: int = 1,
                     within: float = 60.0) -> list[dict]:
    """The job's airlock requests, once `count` are there (collected by the centre)."""
    deadline = time.monotonic() + within
    found: list[dict] = []
    while time.monotonic() < deadline:
        resp = httpx.get(f"{url}/api/v1/jobs/{job}/outputs", headers=bearer(token),
                         timeout=30)
        resp.raise_for_status()
        found = resp.json()
        if len(found) >= count:
            return found
        time.sleep(1)
    raise AssertionError(f"{len(found)} airlock requests of job {job}, not {count}")


def wait_run(url: str, token: str, run: str, within: float = 600.0) -> dict:
    """The federated run once it has ended (succeeded, failed or cancelled)."""
    deadline = time.monotonic() + within
    body: dict = {}
    while time.monotonic() < deadline:
        resp = httpx.get(f"{url}/api/v1/fed/runs/{run}", headers=bearer(token), timeout=30)
        resp.raise_for_status()
        body = resp.json()
        if body["state"] != "running":
            return body
        time.sleep(1)
    raise AssertionError(f"federated run {run} not finished within {within:.0f} s: {body}")


def run_requests(url: str, token: str, run: str) -> list[dict]:
    """The federated run's airlock requests (its result, once it succeeded)."""
    resp = httpx.get(f"{url}/api/v1/fed/runs/{run}/outputs", headers=bearer(token),
                     timeout=30)
    resp.raise_for_status()
    return resp.json()


def release(url: str, checkers: list[str], requests: list[dict]) -> None:
    """Two output checkers approve each request (no README command reviews)."""
    for req in requests:
        for token in checkers:
            resp = httpx.post(f"{url}/api/v1/airlock/requests/{req['id']}/reviews",
                              headers=bearer(token), timeout=30,
                              json={"decision": "approve", "reason": "aggregate counts"})
            assert resp.status_code == 200, resp.text
