"""`spe job test`: a job tried on dummy data on the researcher's machine gets the verdicts
the real run at the nodes gets, and sees the extract layout the nodes stage.

The local run asks the hub only for the permit and the catalogue's descriptors (or reads
them from a saved shape file, with no network at all) and never calls a node; the real
run goes through the demo federation's nodes (tests/gateway/test_jobs.py's fixtures) and
its verdicts are read as an output checker reads them."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path

import httpx
import pytest

from spe.jobs.extract_layout import describe_extract, layout_problems
from spe.wire.code_archive import pack_code
from spe.wire.jobs import LOG_NAME
from tests.gateway import test_jobs
from tests.gateway.test_jobs import FINAL, LIMITS, _wait

# The demo federation of tests/gateway/test_jobs.py: three nodes of 150 patients, a permit
# over site-a and site-b for carol.
job_sites = test_jobs.job_sites
federation = test_jobs.federation
permit = test_jobs.permit

pytestmark = pytest.mark.usefixtures("needs_sandbox")

AGGREGATE = """
    import collections
    import pathlib

    import pydicom

    images = collections.Counter()
    for path in sorted(pathlib.Path("/extract/dicom").rglob("*.dcm")):
        images[str(pydicom.dcmread(path, stop_before_pixels=True).Modality)] += 1
    with open("/output/images_by_modality.csv", "w") as out:
        out.write("modality,images\\n")
        for modality, n in sorted(images.items()):
            if n >= 10:  # small cells left out here; the airlock checks again
                out.write(f"{modality},{n}\\n")
    print("done")
"""

ROW_LEVEL = """
    import json
    import shutil

    shutil.copy("/extract/fhir/Patient.ndjson", "/output/patients.ndjson")
    with open("/output/patients.csv", "w") as out:
        out.write("patient,sex\\n")
        # 20 rows: the centre keeps 200 places per file, so every rule stays named
        for line in open("/extract/fhir/Patient.ndjson").readlines()[:20]:
            patient = json.loads(line)
            out.write(f"{patient['id']},{patient.get('gender', '')}\\n")
    print("done")
"""

# The limits the nodes' run gets (tests/gateway/test_jobs.py LIMITS), as options.
OPTIONS = ["--wall-seconds", "60", "--cpu-seconds", "60", "--memory-mb", "1024",
           "--processes", "64", "--output-mb", "20", "--scratch-mb", "64"]


def _code(tmp: Path, name: str, source: str) -> Path:
    folder = tmp / name
    folder.mkdir()
    (folder / "main.py").write_text(textwrap.dedent(source))
    return folder


def _cli(hub, monkeypatch, calls: list[str] | None):
    """`spe job ...` as carol through the test client (`calls` records each URL asked);
    with `calls=None` every HTTP request fails, as with no network."""
    from typer.testing import CliRunner

    import spe.cli.http
    from spe.cli.main import app

    def through_test_client(method, url, *, json=None, params=None, headers=None, **_):
        if calls is None:
            raise httpx.ConnectError("no network here")
        calls.append(url)
        return hub.request(method, url, json=json, params=params, headers=headers)

    monkeypatch.setattr(spe.cli.http.httpx, "request", through_test_client)
    token = hub.as_("carol", "researcher")["Authorization"].split()[1]
    env = {"COLUMNS": "200", "SPE_HUB_URL": "http://testserver", "SPE_TOKEN": token}
    return lambda *args: CliRunner().invoke(app, ["job", *args], env=env)


def _at_nodes(hub, pid: str, code: Path) -> dict[str, dict[str, tuple]]:
    """The real run at the permit's nodes: per site, per file, (verdict, kind, rules) as an
    output checker reads them at /api/v1/airlock/requests/{rid}."""
    resp = hub.post("/api/v1/jobs", headers=hub.as_("carol", "researcher"), json={
        "permit": pid, "code": base64.b64encode(pack_code(code)).decode(),
        "entry": "main.py", "limits": LIMITS})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    body = _wait(hub, job_id, lambda b: all(n["state"] in FINAL and n["airlock"]
                                            for n in b["nodes"]), seconds=240)
    assert {n["state"] for n in body["nodes"]} == {"succeeded"}, body
    (request,) = hub.get(f"/api/v1/jobs/{job_id}/outputs",
                         headers=hub.as_("carol", "researcher")).json()
    seen = hub.get(f"/api/v1/airlock/requests/{request['id']}",
                   headers=hub.as_("olga", "output_checker"))
    assert seen.status_code == 200, seen.text
    out: dict[str, dict[str, tuple]] = {}
    for f in seen.json()["files"]:
        out.setdefault(f["node_id"], {})[f["path"]] = (
            f["verdict"], f["kind"], sorted({p["rule"] for p in f["places"]}))
    return out


def _local(result) -> dict[str, dict[str, tuple]]:
    report = json.loads(result.stdout)
    return {s["site"]: {f["path"]: (f["verdict"], f["kind"], f["rules"]) for f in s["files"]}
            for s in report["sites"]}


def test_a_dry_run_gives_the_verdicts_of_the_real_run(federation, permit, tmp_path,
                                                     monkeypatch):
    hub, node_urls, _ = federation
    calls: list[str] = []
    run = _cli(hub, monkeypatch, calls)
    shape = tmp_path / "shape.json"
    jobs = {"aggregate": (AGGREGATE, 0), "row-level": (ROW_LEVEL, 1)}
    local = {}
    for name, (source, exit_code) in jobs.items():
        code = _code(tmp_path, name, source)
        done = run("test", str(code), "--permit", permit, "--json", "--patients", "100",
                   "--work", str(tmp_path / f"work-{name}"), "--save-shape", str(shape),
                   *OPTIONS)
        assert done.exit_code == exit_code, done.output
        local[name] = _local(done)
    # Only the hub was asked (the permit, the catalogue), never a node.
    assert calls, "the hub was never asked"
    assert all(url.startswith("http://testserver/api/v1/permits/")
               or url.startswith("http://testserver/api/v1/catalogue/datasets/")
               for url in calls), calls
    assert not any(u in c for c in calls for u in node_urls.values())

    for name, (source, _) in jobs.items():
        real = _at_nodes(hub, permit, _code(tmp_path, f"{name}-real", source))
        assert sorted(real) == sorted(local[name]) == ["site-a", "site-b"]
        for site, files in real.items():
            assert files == local[name][site], (name, site, files, local[name][site])
    # Not vacuous: the aggregate passes (or waits for a person), the raw files are blocked.
    table = local["aggregate"]["site-a"]["images_by_modality.csv"]
    assert table[0] in ("pass", "review")
    assert local["aggregate"]["site-a"][LOG_NAME][0] in ("pass", "review")
    rows = local["row-level"]["site-a"]
    assert rows["patients.ndjson"][0] == rows["patients.csv"][0] == "blocked"
    assert rows["patients.csv"][2], "the ids were found by the extract's terms"

    # Fully offline from the saved shape: no request at all, the same verdicts.
    offline = _cli(hub, monkeypatch, None)
    done = offline("test", str(tmp_path / "row-level"), "--permit", permit, "--json",
                   "--patients", "100", "--shape", str(shape), *OPTIONS)
    assert done.exit_code == 1, done.output
    assert _local(done) == local["row-level"]


def test_the_local_extract_has_the_layout_the_nodes_stage(federation, permit, tmp_path,
                                                          monkeypatch):
    hub, _, _ = federation
    run = _cli(hub, monkeypatch, [])
    code = _code(tmp_path, "job", AGGREGATE)
    done = run("test", str(code), "--permit", permit, "--json", "--patients", "60",
               "--work", str(tmp_path / "work"), *OPTIONS)
    assert done.exit_code == 0, done.output
    local = [Path(s["extract"]) for s in json.loads(done.stdout)["sites"]]
    # The nodes' own extracts of this permit (staged by the runs of this module's jobs, or
    # by this one).
    _at_nodes(hub, permit, _code(tmp_path, "real", AGGREGATE))
    staged = sorted(p.parent for p in (hub.data_dir / "extracts").glob(
        f"site-*/{permit}/*/report.json"))
    assert len(local) == 2
    assert {p.parent.parent.name for p in staged} == {"site-a", "site-b"}
    for folder in [*local, *staged]:
        manifest = describe_extract(folder)
        assert layout_problems(manifest) == [], folder
        kinds = {e["kind"] for e in manifest["entries"]}
        assert {"dicom", "fhir-ndjson", "staging-report"} <= kinds, folder  # not vacuous
        assert any(e["path"] == "fhir/Patient.ndjson" for e in manifest["entries"])
