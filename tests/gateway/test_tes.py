"""GA4GH TES v1.1 at the hub, driven by py-tes as an unmodified user would, over real HTTP:
the central app under uvicorn as the hub of three nodes under uvicorn with mutual TLS,
each with its job worker and the real sandbox. A task runs as a job under a permit, is
followed to COMPLETE, listed and cancelled; its outputs are in the central airlock and
reach the researcher only once two different output checkers approve; what TES would let
a task name and this SPE does not (an output URL, an input URL, another image) is a 400
with the reason, and nobody but the task's researcher (and the output checkers) sees it."""

from __future__ import annotations

import textwrap
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import jsonschema
import pytest
import requests
import tes

from spe.app import create_central_app
from spe.identity import DemoIssuer
from spe.settings import Settings
from tests.gateway.conftest import ISSUER, SITES, serve_job_federation
from tests.gateway.test_permit_tier import issue_permit
from tests.servers import bind, serve

pytestmark = pytest.mark.usefixtures("needs_sandbox")

MAIN = """
    from helpers import RESULT

    with open("/output/result.txt", "w") as out:
        out.write(RESULT)
    print("written")
"""
RESULT = "the analysis ran over the extract\n"
HELPERS = f"RESULT = {RESULT!r}\n"
SLEEP = """
    import time
    print("sleeping", flush=True)
    time.sleep(100)
"""
CHECKERS = ("olga", "otto")

#: GA4GH service-info 1.0.0's `Service` (ga4gh-discovery/ga4gh-service-info,
#: service-info.yaml): the required fields and their shapes.
SERVICE_INFO = {
    "type": "object",
    "required": ["id", "name", "type", "organization", "version"],
    "properties": {
        "id": {"type": "string"}, "name": {"type": "string"},
        "type": {"type": "object", "required": ["group", "artifact", "version"],
                 "properties": {"group": {"type": "string"},
                                "artifact": {"const": "tes"},
                                "version": {"type": "string"}}},
        "description": {"type": "string"},
        "organization": {"type": "object", "required": ["name", "url"],
                         "properties": {"name": {"type": "string"},
                                        "url": {"type": "string"}}},
        "contactUrl": {"type": "string"}, "documentationUrl": {"type": "string"},
        "environment": {"type": "string"}, "version": {"type": "string"},
        "storage": {"type": "array", "items": {"type": "string"}},
        "tesResources_backend_parameters": {"type": "array", "items": {"type": "string"}},
    },
}


@pytest.fixture(scope="module")
def tes_sites(tmp_path_factory) -> dict[str, Path]:
    """Three institutions of 40 patients, indexed (their stores beside the databases)."""
    from gateway.node.service import run_sync
    from spe.synth import generate

    root = tmp_path_factory.mktemp("tes-sites")
    generate(root / "synth", institutions=3, patients=40, seed=21)
    dbs = {}
    for site in SITES:
        dbs[site] = root / f"{site}.db"
        run_sync(f"sqlite:///{dbs[site]}", dicom=f"folder:{root / 'synth' / site / 'dicom'}",
                 fhir=f"ndjson:{root / 'synth' / site / 'fhir'}")
    return dbs


@pytest.fixture(scope="module")
def central(pki, tes_sites, tmp_path_factory):
    """The federation, with the central app under uvicorn too; yields an httpx client of
    the central API with `as_(user, role)` headers, `token(user, role)` and `url`."""
    root = tmp_path_factory.mktemp("tes")
    settings = Settings(data_dir=root, oidc_issuer=ISSUER, pki_dir=pki,
                        environment="development", node_workers=1,
                        job_collect_interval_seconds=1)
    with ExitStack() as stack:
        central_db, urls = serve_job_federation(stack, settings, tes_sites)
        app = create_central_app(settings.model_copy(update={
            "database_url": central_db, "federation_nodes": urls}))
        sock = bind()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        stack.enter_context(serve(app, sock, lifespan="on"))
        issuer = DemoIssuer(settings.issuer_key_path, ISSUER, "spe")
        api = stack.enter_context(httpx.Client(base_url=url, timeout=60))
        api.token = lambda user, role="researcher": issuer.mint(  # type: ignore[attr-defined]
            user, [role])
        api.as_ = lambda user, role, inst=None: {  # type: ignore[attr-defined]
            "Authorization": "Bearer " + issuer.mint(user, [role], institution=inst)}
        api.url = url  # type: ignore[attr-defined]
        yield api


@pytest.fixture(scope="module")
def permit(central) -> str:
    return issue_permit(central)  # over site-a and site-b, for carol


def client_of(central, user: str = "carol", role: str = "researcher") -> tes.HTTPClient:
    return tes.HTTPClient(central.url, token=central.token(user, role), timeout=60)


def a_task(permit: str | None, source: str = MAIN, **extra) -> tes.Task:
    fields = {
        "name": "tes-result", "description": "writes one line",
        "executors": [tes.Executor(image="spe/analysis:statistics",
                                   command=["python", "/code/main.py"])],
        "inputs": [tes.Input(path="/code/main.py", content=textwrap.dedent(source)),
                   tes.Input(path="/code/helpers.py", content=HELPERS)],
        "resources": tes.Resources(ram_gb=1, backend_parameters={"wall_seconds": "120"}),
        "tags": {"study": "tes-demo", **({"permit": permit} if permit else {})},
    }
    return tes.Task(**{**fields, **extra})


def refused(call) -> requests.Response:
    with pytest.raises(requests.HTTPError) as caught:
        call()
    return caught.value.response


@pytest.fixture(scope="module")
def completed(central, permit) -> str:
    """A task followed to its end, and its outputs collected into the airlock."""
    client = client_of(central)
    task_id = client.create_task(a_task(permit))
    done = client.wait(task_id, timeout=240)
    assert done.state == "COMPLETE", client.get_task(task_id, view="FULL")
    deadline = time.monotonic() + 60
    while True:  # collected on the status reads and by the hub's sweep
        full = client.get_task(task_id, view="FULL")
        if all(log.metadata.get("airlock_request") for log in full.logs):
            return task_id
        assert time.monotonic() < deadline, full
        time.sleep(0.5)


def test_a_task_runs_to_complete_and_reads_back_in_each_view(central, permit, completed):
    client = client_of(central)
    full = client.get_task(completed, view="FULL")
    assert full.id == completed
    assert full.state == "COMPLETE"
    assert full.name == "tes-result"
    assert full.description == "writes one line"
    assert full.tags == {"study": "tes-demo", "permit": permit}
    assert full.creation_time is not None
    assert [(e.image, e.command) for e in full.executors] == [
        ("spe/analysis:statistics", ["python", "/code/main.py"])]
    assert {i.path: i.content for i in full.inputs} == {
        "/code/main.py": textwrap.dedent(MAIN), "/code/helpers.py": HELPERS}
    assert full.resources.ram_gb == 1
    # One log per institution: when it started and ended there, and where its outputs
    # are; no executor log (what it printed is an output, for the airlock).
    assert sorted(log.metadata["node"] for log in full.logs) == ["site-a", "site-b"]
    requests_ = {log.metadata["airlock_request"] for log in full.logs}
    assert len(requests_) == 1  # one airlock request for the job
    for log in full.logs:
        assert log.metadata["state"] == "succeeded"
        assert log.start_time is not None
        assert log.end_time is not None
        assert log.start_time <= log.end_time
        assert log.logs == []
        assert log.outputs == []
        said = " ".join(log.system_logs)
        assert log.metadata["airlock_request"] in said
        assert "two output checkers" in said
        assert "written" not in said  # never what the job printed
    basic = client.get_task(completed, view="BASIC")
    assert basic.name == "tes-result"
    assert all(i.content is None for i in basic.inputs)
    assert all(log.system_logs is None for log in basic.logs)
    minimal = client.get_task(completed, view="MINIMAL")
    assert (minimal.id, minimal.state, minimal.name, minimal.logs) == (
        completed, "COMPLETE", None, None)
    # Audited as a TES task and as the job it is, each once.
    on_it = [(e["action"], e["decision"]) for e in audited(central)
             if e["object"] == f"job:{completed}"]
    assert on_it.count(("tes.create", "allow")) == 1
    assert on_it.count(("job.submit", "allow")) == 1
    # The same job through the jobs API.
    job = central.get(f"/api/v1/jobs/{completed}", headers=central.as_("carol", "researcher"))
    assert job.status_code == 200
    assert {n["state"] for n in job.json()["nodes"]} == {"succeeded"}


def test_outputs_reach_the_researcher_only_after_two_checkers(central, completed):
    carol = central.as_("carol", "researcher")
    client = client_of(central)
    [rid] = {log.metadata["airlock_request"]
             for log in client.get_task(completed, view="FULL").logs}
    name = "site-a/result.txt"
    checker = central.get(f"/api/v1/airlock/requests/{rid}",
                          headers=central.as_("olga", "output_checker"))
    assert checker.status_code == 200, checker.text
    files = {f["name"]: f for f in checker.json()["files"]}
    assert {"site-a/result.txt", "site-b/result.txt"} <= set(files)
    assert files[name]["verdict"] != "blocked", files[name]

    def download() -> httpx.Response:
        return central.get(f"/api/v1/airlock/requests/{rid}/files/{name}", headers=carol)

    before = download()
    assert before.status_code in (403, 409), before.text
    assert central.get(f"/api/v1/jobs/{completed}/outputs", headers=carol
                       ).json()[0]["files"] == []  # nothing named before release
    # The researcher cannot review their own outputs.
    own = central.post(f"/api/v1/airlock/requests/{rid}/reviews",
                       json={"decision": "approve", "reason": "mine"}, headers=carol)
    assert own.status_code == 403
    first = central.post(f"/api/v1/airlock/requests/{rid}/reviews",
                         json={"decision": "approve", "reason": "olga looked"},
                         headers=central.as_(CHECKERS[0], "output_checker"))
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "pending"
    assert download().status_code in (403, 409)  # one checker is not enough
    again = central.post(f"/api/v1/airlock/requests/{rid}/reviews",
                         json={"decision": "approve", "reason": "olga again"},
                         headers=central.as_(CHECKERS[0], "output_checker"))
    assert again.status_code == 409  # nor the same one twice
    assert download().status_code in (403, 409)
    second = central.post(f"/api/v1/airlock/requests/{rid}/reviews",
                          json={"decision": "approve", "reason": "otto looked"},
                          headers=central.as_(CHECKERS[1], "output_checker"))
    assert second.status_code == 200, second.text
    assert second.json()["state"] == "released"
    after = download()
    assert after.status_code == 200, after.text
    assert after.content == RESULT.encode()


def test_tasks_are_listed_filtered_and_paged(central, permit, completed):
    client = client_of(central)
    second = client.create_task(a_task(permit, name="tes-other", tags={
        "permit": permit, "study": "other"}))
    listed = client.list_tasks(view="BASIC")
    ids = [t.id for t in listed.tasks]
    assert ids[:2] == [second, completed]  # newest first
    assert {t.name for t in listed.tasks} >= {"tes-result", "tes-other"}
    page = client.list_tasks(page_size=1)
    assert [t.id for t in page.tasks] == [second]
    assert page.tasks[0].name is None  # MINIMAL by default
    assert page.next_page_token
    rest = client.list_tasks(page_size=1, page_token=page.next_page_token)
    assert [t.id for t in rest.tasks] == [completed]
    carol = central.as_("carol", "researcher")

    def ids_of(**params) -> list[str]:
        resp = central.get("/ga4gh/tes/v1/tasks", params=params, headers=carol)
        assert resp.status_code == 200, resp.text
        return [t["id"] for t in resp.json()["tasks"]]

    assert ids_of(name_prefix="tes-oth") == [second]
    assert ids_of(tag_key="study", tag_value="tes-demo") == [completed]
    assert set(ids_of(tag_key="study")) == {second, completed}
    assert ids_of(tag_key="absent") == []
    assert ids_of(state="COMPLETE")[-1] == completed
    client.cancel_task(second)  # not left running for the others


def test_a_long_task_is_cancelled(central, permit):
    client = client_of(central)
    task_id = client.create_task(a_task(permit, source=SLEEP, name="tes-sleep"))
    deadline = time.monotonic() + 120
    while client.get_task(task_id).state != "RUNNING":
        assert time.monotonic() < deadline, client.get_task(task_id, view="FULL")
        time.sleep(0.5)
    # Somebody else may not cancel it.
    other = refused(lambda: client_of(central, "mallory").cancel_task(task_id))
    assert other.status_code == 403
    client.cancel_task(task_id)
    done = client.wait(task_id, timeout=60)
    assert done.state == "CANCELED"
    full = client.get_task(task_id, view="FULL")
    assert {log.metadata["state"] for log in full.logs} == {"cancelled"}
    assert task_id in [t.id for t in client.list_tasks(view="MINIMAL").tasks
                       if t.state == "CANCELED"]


def test_only_the_researcher_and_the_checkers_see_a_task(central, completed):
    mallory = client_of(central, "mallory")
    assert refused(lambda: mallory.get_task(completed)).status_code == 403
    assert completed not in [t.id for t in mallory.list_tasks().tasks]
    hdab = client_of(central, "hilde", "hdab")
    assert refused(lambda: hdab.get_task(completed)).status_code == 403
    assert refused(lambda: hdab.list_tasks()).status_code == 403
    checker = client_of(central, "olga", "output_checker")
    assert checker.get_task(completed).state == "COMPLETE"
    anonymous = tes.HTTPClient(central.url, timeout=60)
    assert refused(lambda: anonymous.get_task(completed)).status_code == 401
    assert refused(lambda: anonymous.list_tasks()).status_code == 401
    assert refused(lambda: anonymous.create_task(a_task("P-1"))).status_code == 401
    assert central.get("/ga4gh/tes/v1/tasks/no-such-task", headers=central.as_(
        "carol", "researcher")).status_code == 404


def audited(central) -> list[dict]:
    """The centre's audit log, every page, as an admin reads it (each read is audited
    itself, so the log ends at the first page short of the limit)."""
    entries: list[dict] = []
    while True:
        page = central.get("/api/v1/audit", params={"after": len(entries) and
                                                    entries[-1]["seq"], "limit": 1000},
                           headers=central.as_("root", "admin"))
        assert page.status_code == 200, page.text
        entries += page.json()
        if len(page.json()) < 1000:
            return entries


def jobs_of_carol(central) -> int:
    resp = central.get("/api/v1/jobs", headers=central.as_("carol", "researcher"))
    assert resp.status_code == 200
    return len(resp.json())


def test_what_this_spe_does_not_run_is_a_400_with_the_reason(central, permit):
    client = client_of(central)
    before = jobs_of_carol(central)
    cases = {
        "outputs go to the central airlock": a_task(permit, outputs=[
            tes.Output(url="s3://bucket/result.txt", path="/output/result.txt")]),
        "tags.permit: required": a_task(None),
        "tags.permit: ": a_task("P-NOPE"),
        "the hub fetches no URL": a_task(permit, inputs=[
            tes.Input(path="/code/main.py", url="http://169.254.169.254/latest/")]),
        "use one of imaging, statistics": a_task(permit, executors=[
            tes.Executor(image="ubuntu:24.04", command=["python", "/code/main.py"])]),
        'must be ["python", ENTRY]': a_task(permit, executors=[
            tes.Executor(image="statistics", command=["bash", "-c", "curl x"])]),
        "is not one of the inputs": a_task(permit, executors=[
            tes.Executor(image="statistics", command=["python", "/code/other.py"])]),
        "exactly one is taken": a_task(permit, executors=[
            tes.Executor(image="statistics", command=["python", "main.py"])] * 2),
        "executors[0].env": a_task(permit, executors=[
            tes.Executor(image="imaging", command=["python", "main.py"],
                         env={"PYTHONPATH": "/tmp"})]),
        "is not under /code/": a_task(permit, inputs=[
            tes.Input(path="/etc/main.py", content="print(1)")]),
        "is not a sandbox limit": a_task(permit, resources=tes.Resources(
            backend_parameters={"gpu": "1"})),
        "inputs: not a code folder": a_task(permit, inputs=[
            tes.Input(path="/code/main.py", content="print(1)"),
            tes.Input(path="/code/main.py/inner.py", content="print(2)")]),
        "File name too long": a_task(permit, inputs=[
            tes.Input(path="/code/" + "a" * 300 + ".py", content="print(1)")],
            executors=[tes.Executor(image="statistics",
                                    command=["python", "a" * 300 + ".py"])]),
    }
    for reason, task in cases.items():
        answer = refused(lambda task=task: client.create_task(task))
        assert answer.status_code == 400, (reason, answer.text)
        assert reason in answer.json()["detail"], (reason, answer.text)
    # Spec-invalid requests: 400 (not 422), with the reason.
    carol = central.as_("carol", "researcher")
    bad = {
        "no executors": central.post("/ga4gh/tes/v1/tasks", json={"name": "x"},
                                     headers=carol),
        "an unknown field": central.post("/ga4gh/tes/v1/tasks", json={
            "executors": [{"image": "statistics", "command": ["python", "main.py"]}],
            "priority": 1}, headers=carol),
        "not JSON": central.post("/ga4gh/tes/v1/tasks", content=b"{",
                                 headers={**carol, "Content-Type": "application/json"}),
        "an unknown view": central.get("/ga4gh/tes/v1/tasks?view=EVERYTHING",
                                       headers=carol),
        "a bad page token": central.get("/ga4gh/tes/v1/tasks?page_token=%21%21",
                                        headers=carol),
        "a page too large": central.get("/ga4gh/tes/v1/tasks?page_size=5000",
                                        headers=carol),
        "an unknown state": central.get("/ga4gh/tes/v1/tasks?state=DONE", headers=carol),
        "a lone surrogate": central.post("/ga4gh/tes/v1/tasks", content=(
            b'{"executors": [{"image": "statistics", "command": ["python", "main.py"]}], '
            b'"inputs": [{"path": "/code/main.py", "content": "\\ud800"}], '
            b'"tags": {"permit": "P-1"}}'), headers={**carol,
                                                   "Content-Type": "application/json"}),
    }
    for what, resp in bad.items():
        assert resp.status_code == 400, (what, resp.text)
        assert resp.json()["detail"], what
    assert jobs_of_carol(central) == before  # no job came of any of them
    denied = [e["reason"] for e in audited(central)
              if e["action"] == "tes.create" and e["decision"] == "deny"]
    assert any("outputs go to the central airlock" in r for r in denied)
    assert any("the hub fetches no URL" in r for r in denied)


def test_service_info_is_ga4gh_service_info(central):
    raw = httpx.get(f"{central.url}/ga4gh/tes/v1/service-info", timeout=30)
    assert raw.status_code == 200
    jsonschema.validate(raw.json(), SERVICE_INFO)
    info = tes.HTTPClient(central.url, timeout=60).get_service_info()
    assert info.type == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert info.storage == []  # nowhere a task may put outputs
    assert "wall_seconds" in info.tes_resources_backend_parameters
    assert "statistics" in info.description
