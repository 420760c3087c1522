"""The TES mapping without a federation: the task state from its parts' (the README's
table), and what a task becomes as a job submission."""

from __future__ import annotations

import base64
import io
import tarfile
from datetime import UTC, datetime

import pytest

from gateway.hub.jobs import JobView, NodeJobView
from gateway.hub.tes import PART_STATES, TesBadRequest, plan, task_state
from spe.wire.jobs import STATES
from spe.wire.tes import STATES as TES_STATES
from spe.wire.tes import TesTaskIn

#: What the hub lists from the repo's deploy/analysis.
ENVIRONMENTS = frozenset({"statistics", "imaging"})


def view(*states: str) -> JobView:
    return JobView(id="j", permit="P-1", user="carol", code_sha256="0" * 64,
                   entry="main.py", limits={}, created_at=datetime.now(UTC),
                   nodes=[NodeJobView(node_id=f"site-{i}", job_id="x", submitted="queued",
                                      state=s) for i, s in enumerate(states)])


@pytest.mark.parametrize(("parts", "expected"), [
    (("queued", "queued"), "QUEUED"),
    (("queued", "staging"), "INITIALIZING"),
    (("staging", "running"), "RUNNING"),
    (("succeeded", "running"), "RUNNING"),
    (("cancelled", "running"), "CANCELING"),
    (("succeeded", "succeeded"), "COMPLETE"),
    (("succeeded", "failed"), "EXECUTOR_ERROR"),
    (("timed_out",), "EXECUTOR_ERROR"),
    (("succeeded", "unreachable"), "SYSTEM_ERROR"),
    (("succeeded", "not submitted"), "SYSTEM_ERROR"),
    (("refused", "failed"), "EXECUTOR_ERROR"),
    (("cancelled", "failed"), "CANCELED"),
    (("succeeded", "a state from a newer node"), "UNKNOWN"),
    ((), "UNKNOWN"),
])
def test_a_task_state_from_its_parts(parts, expected):
    assert task_state(view(*parts)) == expected


def test_every_node_state_has_a_tes_state():
    assert STATES <= set(PART_STATES)  # the node contract's states, each mapped
    assert set(PART_STATES.values()) <= set(TES_STATES)


def task(**extra) -> TesTaskIn:
    body = {"executors": [{"image": "spe/analysis:imaging",
                           "command": ["python3", "./run/main.py"]}],
            "inputs": [{"path": "/code/run/main.py", "content": "print(1)\n"},
                       {"path": "/code/run/lib.py", "content": ""}],
            "resources": {"ram_gb": 0.5, "disk_gb": 1,
                          "backend_parameters": {"wall_seconds": "90.5",
                                                 "cpu_seconds": "30"}},
            "tags": {"permit": " P-7 ", "nodes": "site-b, site-a,,", "x": "y"}}
    return TesTaskIn.model_validate({**body, **extra})


def test_a_task_becomes_a_job_submission():
    submission, kept = plan(task(), ENVIRONMENTS)
    assert (submission.permit, submission.nodes, submission.entry,
            submission.environment) == ("P-7", ["site-a", "site-b"], "run/main.py", "imaging")
    assert submission.limits == {"memory_mb": 512, "scratch_mb": 1024,
                                 "wall_seconds": 90.5, "cpu_seconds": 30}
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(submission.code))) as tar:
        names = {m.name: m for m in tar.getmembers()}
        assert names["run/main.py"].isfile()
        assert tar.extractfile("run/main.py").read() == b"print(1)\n"
        assert tar.extractfile("run/lib.py").read() == b""  # an empty file is a file
    assert kept["environment"] == "imaging"
    assert kept["tags"]["x"] == "y"
    assert [i["path"] for i in kept["inputs"]] == ["/code/run/main.py", "/code/run/lib.py"]


@pytest.mark.parametrize(("extra", "reason"), [
    ({"inputs": [{"path": "/code/run/../main.py", "content": "x"}]}, "not a plain path"),
    ({"inputs": [{"path": "/code/run/main.py", "content": "x", "type": "DIRECTORY"}]},
     "only FILE inputs"),
    ({"inputs": [{"path": "/code/run/main.py"}]}, "content: required"),
    ({"inputs": [{"path": "/code/run/main.py", "content": "a"},
                 {"path": "/code/run/main.py", "content": "b"}]}, "given twice"),
    ({"inputs": []}, "the code is required"),
    ({"executors": [{"image": "statistics", "command": ["python", "/code/run/main.py"],
                     "workdir": "/code"}]}, "leave it unset"),
    ({"executors": [{"image": "statistics", "command": ["python", "/code/run/main.py"],
                     "stdout": "/tmp/out"}]}, "executors[0].stdout"),
    ({"executors": [{"image": "spe/other:statistics", "command": ["python", "main.py"]}]},
     "not an analysis environment"),
    ({"resources": {"zones": ["eu-west"]}}, "resources.zones"),
    ({"resources": {"ram_gb": 1, "backend_parameters": {"memory_mb": "64"}}},
     "given twice"),
    ({"resources": {"backend_parameters": {"wall_seconds": "nan"}}}, "not a number"),
    ({"resources": {"ram_gb": 1000}}, "resources: memory_mb"),
    ({"volumes": ["/vol/A"]}, "volumes"),
    ({"tags": {"permit": "P-7", "nodes": " , "}}, "tags.nodes"),
])
def test_what_a_task_may_not_say(extra, reason):
    with pytest.raises(TesBadRequest) as refused:
        plan(task(**extra), ENVIRONMENTS)
    assert reason in refused.value.detail


def test_an_image_may_name_any_environment_the_hub_lists():
    executor = {"image": "spe/analysis:genomics", "command": ["python", "/code/run/main.py"]}
    submission, kept = plan(task(executors=[executor]), {"genomics", "statistics"})
    assert submission.environment == kept["environment"] == "genomics"
    with pytest.raises(TesBadRequest) as refused:
        plan(task(executors=[executor]), ENVIRONMENTS)
    assert "use one of imaging, statistics" in refused.value.detail
