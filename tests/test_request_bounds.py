"""Bounded requests, from the outside: paging past what a database holds, a catalogue
description of megabytes, bodies that are not JSON or break the schema. Each is a 4xx
with a reason, never a 500, and each refusal is in the audit log without the body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from spe.app import create_central_app
from spe.audit import CentralAuditEntry, NodeAuditEntry
from spe.db.migrate import upgrade
from spe.identity import DemoIssuer
from spe.settings import Settings
from tests.central import catalogued_central

ISSUER = "http://central.test"
#: Past a 64-bit signed integer, where the database drivers raised (a 500).
HUGE = ["9223372036854775808", "99999999999999999999999999"]
SECRET = "Jane Doe born 1970-05-05"  # a value an audit entry must never carry


def bearer(issuer: DemoIssuer, user: str, roles: list[str], **claims) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.mint(user, roles, **claims)}"}


def last_entry(ctx, model):
    with ctx.sessions() as session:
        return session.execute(select(model).order_by(model.seq.desc()).limit(1)).scalar_one()


@pytest.fixture
def central(tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, DemoIssuer]]:
    catalogued_central(database_url, ["site-a"], patients=40)
    app = create_central_app(Settings(data_dir=tmp_path, database_url=database_url,
                                      oidc_issuer=ISSUER))
    with TestClient(app) as client:
        yield client, DemoIssuer(tmp_path / "keys" / "issuer.jwk.json", ISSUER, "spe")


@pytest.fixture
def node(tmp_path: Path, other_database_url: str) -> Iterator[tuple[TestClient, DemoIssuer]]:
    upgrade(other_database_url, "node")  # its own database, beside the centre's
    app = create_node_app(NodeConfig("site-a", "Site A", other_database_url),
                          Settings(data_dir=tmp_path, oidc_issuer=ISSUER))
    with TestClient(app) as client:
        yield client, DemoIssuer(tmp_path / "keys" / "issuer.jwk.json", ISSUER, "spe")


# --- paging ------------------------------------------------------------------------------

@pytest.mark.parametrize("huge", HUGE)
def test_huge_offset_on_the_users_list_is_422_naming_the_bound(central, huge):
    client, issuer = central
    resp = client.get(f"/api/v1/users?offset={huge}",
                      headers=bearer(issuer, "root", ["admin"]))
    assert resp.status_code == 422
    assert resp.json()["error"] == "invalid_request"
    [problem] = resp.json()["detail"]
    assert problem["loc"] == ["query", "offset"]
    assert "9223372036854775807" in problem["msg"]


@pytest.mark.parametrize("huge", HUGE)
def test_huge_after_on_the_audit_list_is_422_at_the_centre(central, huge):
    client, issuer = central
    resp = client.get(f"/api/v1/audit?after={huge}", headers=bearer(issuer, "root", ["admin"]))
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["query", "after"]


@pytest.mark.parametrize("huge", HUGE)
def test_huge_after_on_the_audit_list_is_422_at_a_node(node, huge):
    client, issuer = node
    resp = client.get(f"/api/v1/audit?after={huge}", headers=bearer(issuer, "root", ["admin"]))
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["query", "after"]


def test_a_cursor_that_does_not_parse_is_422(central, node):
    for client, issuer in (central, node):
        resp = client.get("/api/v1/audit?after=7%20OR%201%3D1",
                          headers=bearer(issuer, "root", ["admin"]))
        assert resp.status_code == 422
        assert resp.json()["detail"][0]["loc"] == ["query", "after"]


def test_the_largest_position_reaches_the_database_and_answers_empty(central, node):
    """At the bound itself the databases answer (an empty page), on SQLite and PostgreSQL."""
    admin = {"offset": str(2**63 - 1), "after": str(2**63 - 1)}
    client, issuer = central
    headers = bearer(issuer, "root", ["admin"])
    assert client.get(f"/api/v1/users?offset={admin['offset']}", headers=headers).json() == []
    for client, issuer in (central, node):
        resp = client.get(f"/api/v1/audit?after={admin['after']}",
                          headers=bearer(issuer, "root", ["admin"]))
        assert resp.status_code == 200
        assert resp.json() == []


# --- lengths and sizes ------------------------------------------------------------------

DATASET = "/api/v1/catalogue/datasets/site-a/imaging-and-clinical-records"


def test_a_5_mb_catalogue_description_is_refused_and_never_served(central):
    client, issuer = central
    curator = bearer(issuer, "curator", ["approver"], institution="site-a")
    before = client.get(DATASET).json()["description"]
    resp = client.patch(DATASET, json={"description": "x" * (5 * 1024 * 1024)},
                        headers=curator)
    assert resp.status_code == 413
    entry = last_entry(client.app.state.ctx, CentralAuditEntry)
    assert (entry.actor, entry.action, entry.decision, entry.reason) == (
        f"curator@{ISSUER}", "validate", "deny", "request body larger than 1048576 bytes")
    # Under the body limit, over the field's: refused by the schema, naming the field.
    resp = client.patch(DATASET, json={"description": "x" * 20_000}, headers=curator)
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "description"]
    assert client.get(DATASET).json()["description"] == before
    # A description of a page is still curated.
    resp = client.patch(DATASET, json={"description": "A page. " * 100}, headers=curator)
    assert resp.status_code == 200
    assert client.get(DATASET).json()["description"] == "A page. " * 100


def test_a_body_over_the_limit_is_refused_before_it_is_read_even_without_a_length(central):
    """Chunked, with no Content-Length: counted as it arrives."""
    client, issuer = central

    def chunks():
        yield b'{"description": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    resp = client.patch(DATASET, content=chunks(),
                        headers={**bearer(issuer, "curator", ["approver"],
                                          institution="site-a"),
                                 "Content-Type": "application/json"})
    assert resp.status_code == 413


def test_a_nul_character_is_422_on_postgresql(tmp_path: Path, postgres_url: str):
    """PostgreSQL's text holds no NUL: its driver raised (a 500) from a path, a query
    parameter or a body."""
    upgrade(postgres_url, "central")
    app = create_central_app(Settings(data_dir=tmp_path, database_url=postgres_url,
                                      oidc_issuer=ISSUER))
    issuer = DemoIssuer(tmp_path / "keys" / "issuer.jwk.json", ISSUER, "spe")
    alice = bearer(issuer, "alice", ["researcher"])
    application = {"organisation": "a\x00b", "title": "abc", "summary": "s",
                   "start_date": "2026-01-01", "end_date": "2026-12-31"}
    with TestClient(app) as client:
        answers = [client.post("/api/v1/permits", json=application, headers=alice),
                   client.get("/api/v1/permits/P%00x", headers=alice),
                   client.get("/api/v1/permits?status=a%00b", headers=alice),
                   client.get("/api/v1/catalogue/datasets/a%00b")]
    for resp in answers:
        assert resp.status_code == 422, resp.text
        assert resp.json()["detail"] == "text with a NUL character (U+0000) is refused"


# --- malformed bodies are audited -------------------------------------------------------

def test_malformed_json_is_422_and_audited_with_the_caller(central):
    client, issuer = central
    app_ctx = client.app.state.ctx
    resp = client.post("/api/v1/permits", content=b'{"title": "' + SECRET.encode() + b'",',
                       headers={**bearer(issuer, "alice", ["researcher"]),
                                "Content-Type": "application/json"})
    assert resp.status_code == 422
    entry = last_entry(app_ctx, CentralAuditEntry)
    assert (entry.actor, entry.action, entry.object, entry.decision) == (
        f"alice@{ISSUER}", "validate", "POST /api/v1/permits", "deny")
    assert "json_invalid" in entry.reason
    assert SECRET not in entry.reason
    assert SECRET not in str(entry.details)


def test_a_schema_violation_is_audited_naming_fields_not_values(central):
    client, issuer = central
    app_ctx = client.app.state.ctx
    body = {"organisation": SECRET, "title": SECRET * 20, "summary": "s",
            "start_date": "2026-01-01", "end_date": "2026-12-31", SECRET: 1}
    resp = client.post("/api/v1/permits", json=body,
                       headers=bearer(issuer, "alice", ["researcher"]))
    assert resp.status_code == 422
    entry = last_entry(app_ctx, CentralAuditEntry)
    assert (entry.actor, entry.action, entry.decision) == (
        f"alice@{ISSUER}", "validate", "deny")
    assert "body.title string_too_long" in entry.reason
    assert "extra_forbidden" in entry.reason
    assert SECRET not in entry.reason
    assert SECRET not in str(entry.details)


def test_a_malformed_body_without_a_token_is_audited_as_anonymous(central):
    client, _ = central
    app_ctx = client.app.state.ctx
    resp = client.post("/api/v1/permits", content=b"\xff\xfe not json",
                       headers={"Content-Type": "application/json"})
    assert resp.status_code in (400, 422)
    entry = last_entry(app_ctx, CentralAuditEntry)
    assert (entry.actor, entry.action, entry.object, entry.decision) == (
        "anonymous", "validate", "POST /api/v1/permits", "deny")


def test_malformed_json_at_a_node_is_422_and_audited(node):
    client, _ = node
    app_ctx = client.app.state.ctx
    resp = client.post("/api/v1/query", content=b'{"query": ',
                       headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    entry = last_entry(app_ctx, NodeAuditEntry)
    assert (entry.action, entry.object, entry.decision) == (
        "validate", "POST /api/v1/query", "deny")
    assert "json_invalid" in entry.reason


# --- every field bounded by the schema ----------------------------------------------------

def _resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def unbounded(document: dict, schema: dict, where: str, seen: frozenset = frozenset()):
    """Where a request schema lets a string, list, map or integer grow without a bound."""
    schema = _resolve(document, schema)
    if id(schema) in seen or "enum" in schema or "const" in schema:
        return
    seen = seen | {id(schema)}
    for alternative in schema.get("anyOf", []) + schema.get("oneOf", []):
        yield from unbounded(document, alternative, where, seen)
    kind = schema.get("type")
    if (kind == "string" and "maxLength" not in schema
            and schema.get("format") not in ("date", "date-time")):
        yield f"{where}: a string without maxLength"
    if kind == "integer" and "maximum" not in schema:
        yield f"{where}: an integer without maximum"
    if kind == "array":
        if "maxItems" not in schema:
            yield f"{where}: a list without maxItems"
        yield from unbounded(document, schema.get("items", {}), f"{where}[]", seen)
    for name, field in schema.get("properties", {}).items():
        yield from unbounded(document, field, f"{where}.{name}", seen)
    extra = schema.get("additionalProperties")
    if extra not in (None, False):
        if "maxProperties" not in schema:
            yield f"{where}: a map without maxProperties"
        if "maxLength" not in schema.get("propertyNames", {}):
            yield f"{where}: a map whose keys have no maxLength"
        if isinstance(extra, dict):
            yield from unbounded(document, extra, f"{where}{{}}", seen)


def test_every_request_field_of_both_services_is_bounded(tmp_path: Path):
    """Query parameters and bodies (the URL and headers are bounded by the HTTP server)."""
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'c.db'}")
    documents = {
        "central": create_central_app(settings).openapi(),
        "node": create_node_app(NodeConfig("a", "a", f"sqlite:///{tmp_path / 'n.db'}"),
                                settings).openapi(),
    }
    checked, problems = [], []
    for service, document in documents.items():
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                where = f"{service} {method.upper()} {path}"
                for param in operation.get("parameters", []):
                    if param["in"] == "query":
                        checked.append(f"{where} ?{param['name']}")
                        problems += unbounded(document, param["schema"],
                                              f"{where} ?{param['name']}")
                for content in operation.get("requestBody", {}).get("content", {}).values():
                    checked.append(f"{where} body")
                    problems += unbounded(document, content["schema"], f"{where} body")
    assert len(checked) > 20  # the walk saw the APIs' parameters and bodies
    assert any(c.startswith("node POST /api/v1/query body") for c in checked)
    assert not problems, "\n".join(problems)
