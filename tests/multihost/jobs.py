"""Jobs across hosts: submitting one through the central API and following it as its
researcher and an output checker see it."""

from __future__ import annotations

import textwrap
import time

import psycopg

from tests.multihost.federation import Federation

LIMITS = {"cpu_seconds": 60, "memory_mb": 1024, "processes": 64, "open_files": 128,
          "file_size_mb": 20, "output_mb": 20, "scratch_mb": 64, "wall_seconds": 120}
FINAL = {"succeeded", "failed", "timed_out", "cancelled"}

#: Counts the extract's images by modality; waits first when SPE_TEST_PAUSE is in its
#: code, so a test can act while it runs.
COUNT_MODALITIES = """
    import collections
    import pathlib
    import time

    import pydicom

    time.sleep({pause})
    counts = collections.Counter()
    for path in sorted(pathlib.Path("/extract/dicom").rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            counts[str(getattr(ds, "Modality", "") or "unknown")] += 1
    with open("/output/counts.csv", "w") as out:
        out.write("modality,n\\n")
        for modality, n in sorted(counts.items()):
            out.write(f"{{modality}},{{n}}\\n")
    print("images", sum(counts.values()))
"""


def submit(fed: Federation, pid: str, site: str, *, pause: float = 0) -> str:
    """A job counting modalities at `site`, as carol; its id at the hub."""
    script = textwrap.dedent(COUNT_MODALITIES.format(pause=pause))
    with fed.hub() as hub:
        resp = hub.post("/api/v1/jobs", headers=fed.headers("carol", "researcher"), json={
            "permit": pid, "script": script, "limits": LIMITS, "nodes": [site]})
    assert resp.status_code == 202, resp.text
    assert [n["submitted"] for n in resp.json()["nodes"]] == ["queued"], resp.json()
    return resp.json()["id"]


def status(fed: Federation, job_id: str) -> dict:
    """The job as carol sees it at the hub (one node part)."""
    with fed.hub() as hub:
        resp = hub.get(f"/api/v1/jobs/{job_id}", headers=fed.headers("carol", "researcher"))
    assert resp.status_code == 200, resp.text
    (node,) = resp.json()["nodes"]
    return node


def wait_job(fed: Federation, job_id: str, done, seconds: float = 180.0) -> dict:
    """Poll the job's status until `done(node part)`; fails naming the states seen."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            node = status(fed, job_id)
        except Exception as exc:  # noqa: BLE001 - a restarting hub: keep polling
            seen.append(type(exc).__name__)
            time.sleep(0.5)
            continue
        if not seen or seen[-1] != node["state"]:
            seen.append(node["state"])
        if done(node):
            return node
        time.sleep(0.5)
    raise AssertionError(f"job {job_id}: states seen {seen}\n{fed.logs()}")


def finished_with_outputs(node: dict) -> bool:
    """Succeeded and collected into the airlock, or ended otherwise (nothing more comes)."""
    return node["state"] in FINAL and (bool(node.get("airlock"))
                                       or node["state"] != "succeeded")


def airlock_files(fed: Federation, job_id: str) -> dict[str, dict]:
    """What an output checker sees of the job's one airlock request (a section per site):
    path -> file, of a job run at one site."""
    with fed.hub() as hub:
        outputs = hub.get(f"/api/v1/jobs/{job_id}/outputs",
                          headers=fed.headers("carol", "researcher"))
        assert outputs.status_code == 200, outputs.text
        (mine,) = outputs.json()
        seen = hub.get(f"/api/v1/airlock/requests/{mine['id']}",
                       headers=fed.headers("olga", "output_checker"))
    assert seen.status_code == 200, seen.text
    request = seen.json()
    assert len(request["sites"]) == 1, request["sites"]
    site = request["sites"][0]["node_id"]
    assert all(f["name"] == f"{site}/{f['path']}" for f in request["files"]), request["files"]
    return {f["path"]: f for f in request["files"]}


def node_job_row(fed: Federation, site: str, node_job_id: str) -> tuple[str, int]:
    """(worker, attempts) of a job in the node's own database, as its operator reads it."""
    url = fed.admin_urls[site].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT worker, attempts FROM jobs WHERE id = %s",
                           (node_job_id,)).fetchone()
    assert row is not None, f"no job {node_job_id} at {site}"
    return row[0] or "", row[1]
