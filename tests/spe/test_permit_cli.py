"""`spe permit ...` against a real central app under uvicorn (no nodes): the whole path by
CLI, and refusals with the API's reasons and exit code 1; bad input exits 2 unsent."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spe.app import create_central_app
from spe.cli.main import app
from spe.identity import demo_issuer
from spe.permits.schemas import ApplicationIn
from spe.settings import Settings
from tests.central import catalogued_central
from tests.servers import bind, serve

DATASET_A = "site-a/imaging-and-clinical-records"
DATASET_B = "site-b/imaging-and-clinical-records"
DOWN = "http://127.0.0.1:9"  # nothing listens there


@dataclass
class Central:
    url: str
    issuer: object

    def token(self, user: str, role: str, institution: str | None = None) -> str:
        return self.issuer.mint(user, [role], institution=institution)  # type: ignore[attr-defined]

    def uid(self, user: str) -> str:
        return f"{user}@{self.url}"


@pytest.fixture(scope="module")
def central(tmp_path_factory) -> Iterator[Central]:
    tmp = tmp_path_factory.mktemp("permit-cli")
    database_url = f"sqlite:///{tmp / 'central.db'}"
    catalogued_central(database_url, ("site-a", "site-b", "site-c"), patients=100,
                       conditions={"C71": 20})
    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(data_dir=tmp, database_url=database_url, oidc_issuer=url)
    with serve(create_central_app(settings), sock):
        yield Central(url, demo_issuer(settings))


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, ["permit", *args], env={"COLUMNS": "200", **(env or {})})


def as_(central: Central, user: str, role: str, institution: str | None = None) -> list[str]:
    return ["--hub", central.url, "--token", central.token(user, role, institution)]


def application_file(tmp_path: Path, central: Central | None = None, **changes) -> Path:
    body = {
        "organisation": "University of Somewhere", "title": "Glioma imaging outcomes",
        "summary": "Survival after glioma resection, by MR features.",
        "purpose": "scientific_research", "declaration": True,
        "legal_basis": "GDPR Art. 9(2)(j)", "form": "anonymised",
        "ethics_reference": "EC-2026-117",
        "start_date": str(date.today()), "end_date": str(date.today() + timedelta(days=365)),
        "members": [central.uid("carol") if central else "carol@example.org"],
        "datasets": [DATASET_A, DATASET_B],
    }
    path = tmp_path / "application.json"
    path.write_text(json.dumps({**body, **changes}))
    return path


def apply_and_submit(central: Central, tmp_path: Path) -> str:
    result = run("apply", str(application_file(tmp_path, central)), "--submit",
                 *as_(central, "alice", "researcher"))
    assert result.exit_code == 0, result.output
    pid = result.stdout.strip()
    assert pid, result.output
    assert "\n" not in pid, result.stdout  # just the id, for $(...)
    assert "submitted (waiting for site-a, site-b)" in result.output
    return pid


def test_the_whole_path_by_cli(central, tmp_path: Path):
    pid = apply_and_submit(central, tmp_path)

    first = run("approve", pid, "--condition", "no export of images",
                *as_(central, "bob", "approver", "site-a"))
    assert first.exit_code == 0, first.output
    assert f"{pid}: submitted (waiting for site-b)" in first.stdout
    second = run("approve", pid, *as_(central, "bea", "approver", "site-b"))
    assert second.exit_code == 0, second.output
    assert f"{pid}: approved" in second.stdout

    issued = run("issue", pid, "--reason", "meets Art. 68", *as_(central, "hilde", "hdab"))
    assert issued.exit_code == 0, issued.output
    assert f"{pid}: active" in issued.stdout
    assert "pushed: to no node" in issued.stdout  # no federation configured here

    shown = run("show", pid, *as_(central, "carol", "researcher"))
    assert shown.exit_code == 0, shown.output
    for text in ("active", "Glioma imaging outcomes", "site-a, site-b", "no export of images",
                 "meets Art. 68", "history", "review:approve", "issue"):
        assert text in shown.stdout, text
    as_json = json.loads(run("show", pid, "--json", *as_(central, "alice", "researcher")).stdout)
    assert as_json["status"] == "active"
    assert [e["action"] for e in as_json["events"]] == [
        "create", "submit", "review:approve", "review:approve", "issue"]

    amended = run("amend", pid, "--member", "dave@" + central.url, "--reason", "a statistician",
                  *as_(central, "alice", "researcher"))
    assert amended.exit_code == 0, amended.output
    assert "amendment awaits site-a, site-b" in amended.stdout
    assert run("amend", pid, "--reason", "nothing", *as_(central, "alice", "researcher")
               ).exit_code == 2  # adds nothing: refused before sending

    mine = run("list", "--mine", "--json", *as_(central, "carol", "researcher"))
    assert mine.exit_code == 0, mine.output
    assert pid in [p["id"] for p in json.loads(mine.stdout)]
    active = run("list", "--status", "active", *as_(central, "hilde", "hdab"))
    assert active.exit_code == 0, active.output
    assert pid in active.stdout
    drafts = json.loads(run("list", "--status", "draft", "--json",
                            *as_(central, "alice", "researcher")).stdout)
    assert pid not in [p["id"] for p in drafts]

    revoked = run("revoke", pid, "--reason", "breach of conditions",
                  *as_(central, "hilde", "hdab"))
    assert revoked.exit_code == 0, revoked.output
    assert f"{pid}: revoked" in revoked.stdout
    again = json.loads(run("show", pid, "--json", *as_(central, "alice", "researcher")).stdout)
    assert again["status"] == "revoked"
    assert again["decision_reason"] == "breach of conditions"


def test_a_draft_then_submit_and_changes(central, tmp_path: Path):
    draft = run("apply", str(application_file(tmp_path, central)),
                *as_(central, "alice", "researcher"))
    assert draft.exit_code == 0, draft.output
    pid = draft.stdout.strip()
    assert f"{pid}: draft" in draft.output
    submitted = run("submit", pid, *as_(central, "alice", "researcher"))
    assert submitted.exit_code == 0, submitted.output
    assert "submitted" in submitted.stdout
    asked = run("changes", pid, "--reason", "name the imaging protocol",
                *as_(central, "bea", "approver", "site-b"))
    assert asked.exit_code == 0, asked.output
    assert f"{pid}: changes_requested" in asked.stdout


def test_refusals_carry_the_reason_and_exit_1(central, tmp_path: Path):
    pid = apply_and_submit(central, tmp_path)

    own = run("approve", pid, *as_(central, "carol", "approver", "site-a"))
    assert own.exit_code == 1
    assert "HTTP 403" in own.output
    assert "named on" in own.output

    assert run("approve", pid, *as_(central, "bob", "approver", "site-a")).exit_code == 0
    twice = run("approve", pid, *as_(central, "bob2", "approver", "site-a"))
    assert twice.exit_code == 1
    assert "HTTP 409" in twice.output
    assert "already reviewed" in twice.output

    early = run("issue", pid, *as_(central, "hilde", "hdab"))
    assert early.exit_code == 1
    assert "HTTP 409" in early.output
    assert "must approve" in early.output

    not_hdab = run("issue", pid, *as_(central, "alice", "researcher"))
    assert not_hdab.exit_code == 1
    assert "HTTP 403" in not_hdab.output

    unknown = run("show", "no-such-permit", *as_(central, "alice", "researcher"))
    assert unknown.exit_code == 1
    assert "HTTP 404" in unknown.output

    bad_token = run("show", pid, "--hub", central.url, "--token", "not-a-token")
    assert bad_token.exit_code == 1
    assert "HTTP 401" in bad_token.output

    # Refused by the API after local checks passed: an unknown dataset (a 422 naming it).
    nowhere = run("apply", str(application_file(tmp_path, central, datasets=["nowhere/x"])),
                  *as_(central, "alice", "researcher"))
    assert nowhere.exit_code == 1
    assert "HTTP 422" in nowhere.output
    assert "no dataset" in nowhere.output
    for result in (own, twice, early, not_hdab, unknown, bad_token, nowhere):
        assert "Traceback" not in result.output


def test_a_failed_submit_names_the_saved_draft(central, tmp_path: Path):
    result = run("apply", str(application_file(tmp_path, central, form="pseudonymised")),
                 "--submit", *as_(central, "alice", "researcher"))
    assert result.exit_code == 1
    assert "was saved, but the hub refused: HTTP 409" in result.output
    assert "Art. 66" in result.output


@pytest.mark.parametrize(("changes", "says"), [
    ({"purpose": "marketing"}, "purpose"),
    ({"end_date": "2000-01-01"}, "end_date"),
    ({"title": None}, "title"),
    ({"colour": "blue"}, "colour"),
])
def test_a_bad_application_file_exits_2_naming_the_field(tmp_path: Path, changes, says):
    body = json.loads(application_file(tmp_path).read_text())
    body.update(changes)
    if body.get("title") is None:
        del body["title"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(body))
    result = run("apply", str(path), "--hub", DOWN, "--token", "t")  # never sent
    assert result.exit_code == 2, result.output
    assert "the application is not valid" in result.output
    assert says in result.output
    assert "ConnectError" not in result.output


def test_other_bad_input_exits_2(tmp_path: Path):
    path = tmp_path / "a.json"
    path.write_text("{not json")
    assert "not JSON" in run("apply", str(path), "--token", "t", "--hub", DOWN).output
    assert run("apply", str(tmp_path / "missing.json"), "--token", "t").exit_code == 2
    path.write_text("[]")
    assert run("apply", str(path), "--token", "t", "--hub", DOWN).exit_code == 2
    blank = run("reject", "P-1", "--reason", "  ", "--hub", DOWN, "--token", "t")
    assert blank.exit_code == 2
    assert "needs a reason" in blank.output
    assert run("reject", "P-1", "--hub", DOWN, "--token", "t").exit_code == 2  # no --reason
    no_token = run("show", "P-1", "--hub", DOWN, env={"SPE_TOKEN": None})
    assert no_token.exit_code == 2
    assert "--token" in no_token.output
    assert run("show", "a/b", "--hub", DOWN, "--token", "t").exit_code == 2


def test_an_unreachable_hub_exits_1(tmp_path: Path):
    for args in (["apply", str(application_file(tmp_path))], ["show", "P-1"], ["list"],
                 ["approve", "P-1"], ["issue", "P-1"]):
        result = run(*args, "--hub", DOWN, "--token", "t")
        assert result.exit_code == 1, (args, result.output)
        assert f"cannot reach the hub at {DOWN}" in result.output
        assert "Traceback" not in result.output


# ---- `spe permit template` ----------------------------------------------------------------


def test_the_template_is_accepted_as_is_by_apply_and_the_api(central, tmp_path: Path):
    """The template, written as `spe permit template > app.json` would, is a commented
    application that `spe permit apply app.json` and POST /api/v1/permits take unedited;
    with the declaration made, it submits to the catalogue's institutions."""
    import httpx

    made = CliRunner().invoke(app, ["permit", "template", "--hub", central.url])
    assert made.exit_code == 0, made.output
    data = json.loads(made.stdout)
    comments = [k for k in data if k.startswith("//")]
    assert comments, data  # commented ...
    fields = {k for k in data if not k.startswith("//")}
    for field in fields:  # ... field by field, in the API's own names
        assert f"// {field}" in data, field
    assert {"start_date", "end_date", "datasets", "purpose", "form"} <= fields
    assert "period" not in fields
    assert DATASET_A in data["datasets"]  # from the hub's catalogue
    path = tmp_path / "app.json"
    path.write_text(made.stdout)

    applied = run("apply", str(path), "--json", *as_(central, "alice", "researcher"))
    assert applied.exit_code == 0, applied.output
    draft = json.loads(applied.stdout)
    assert draft["status"] == "draft"
    assert draft["title"] == data["title"]
    assert sorted(d["dataset"] for d in draft["datasets"]) == sorted(data["datasets"])

    direct = httpx.post(f"{central.url}/api/v1/permits", json=data, headers={
        "Authorization": f"Bearer {central.token('alice', 'researcher')}"})
    assert direct.status_code == 201, direct.text

    path.write_text(json.dumps({**data, "declaration": True}))
    submitted = run("apply", str(path), "--submit", *as_(central, "alice", "researcher"))
    assert submitted.exit_code == 0, submitted.output
    assert "submitted (waiting for site-a, site-b, site-c)" in submitted.output


def test_the_template_takes_datasets_and_members(tmp_path: Path):
    made = CliRunner().invoke(app, ["permit", "template", "--dataset", DATASET_B,
                                    "--member", "carol@example.org"], env={"SPE_HUB_URL": ""})
    assert made.exit_code == 0, made.output
    data = json.loads(made.stdout)
    assert data["datasets"] == [DATASET_B]
    assert data["members"] == ["carol@example.org"]


# ---- the README's application --------------------------------------------------------------


def readme_application() -> str:
    """The application shown in the README's "Data permits" section, as a user copies it."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("- **Application** (`POST /api/v1/permits`", 1)[1]
    section = section.split("\n- **", 1)[0]
    blocks = re.findall(r"```json\n(.*?)```", section, re.DOTALL)
    assert blocks, "the README shows no application to fill in"
    return textwrap.dedent(blocks[0])


def test_the_readmes_application_is_taken_as_is_by_apply(central, tmp_path: Path):
    """The README's example, saved as app.json, is an application `spe permit apply` takes
    unedited, in the API's own field names, every one of them (the README named a
    "period" the API does not have, and showed no example)."""
    text = readme_application()
    example = json.loads(text)
    fields = {k for k in example if not k.startswith("//")}
    assert fields == set(ApplicationIn.model_fields)
    path = tmp_path / "app.json"
    path.write_text(text)
    applied = run("apply", str(path), "--json", *as_(central, "alice", "researcher"))
    assert applied.exit_code == 0, applied.output
    draft = json.loads(applied.stdout)
    assert draft["status"] == "draft"
    assert (draft["title"], draft["start_date"], draft["end_date"]) == (
        example["title"], example["start_date"], example["end_date"])
