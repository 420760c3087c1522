"""Schemathesis over both services' OpenAPI documents: generated requests, valid and not,
with real tokens and without; no answer may be a server error, and every answer must be
one the document declares (status, content type, schema).

The centre runs in-process with a federation of one node served under uvicorn with mutual
TLS (so queries and jobs reach a real node), both on PostgreSQL; the node's own API is
called in-process, its hub-only routes with contexts the federation's hub key signs for
each generated request. Examples per operation are bounded (`EXAMPLES`, not shrunk): both
documents take about a minute of CPU (40 s measured), a few minutes on a busy machine.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.core.failures import FailureGroup

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from spe.app import create_central_app
from spe.db.migrate import upgrade
from spe.identity import DemoIssuer
from spe.pki import init_pki, private_key_of, server_ssl_options
from spe.settings import Settings
from spe.wire.context import ContextSigner
from spe.wire.query import Query
from tests.conftest import POSTGRES_URL, _postgres_admin
from tests.servers import bind, serve

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
ISSUER = "http://central.test"
NODE = "site-a"
EXAMPLES = 12
ROLES = ["researcher", "approver", "hdab", "output_checker", "admin"]
# Not `negative_data_rejection`: in a query string the invalid and the valid can be the
# same text (a boolean among strings is the string "false"), and it does not count a 413
# as a refusal; what invalid requests get is checked by the statuses documented.
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance]
CONTEXT_HEADER = "X-SPE-Hub-Context"
# A Five Safes RO-Crate is sent as a ZIP (POST /api/v1/jobs/crate): generated as bytes.
schemathesis.serializer.alias("application/zip", "application/octet-stream")


class Federation:
    def __init__(self, root: Path, stack: ExitStack) -> None:
        pki = root / "pki"
        init_pki(pki, nodes=[NODE])
        node_db = stack.enter_context(postgres_database())
        upgrade(node_db, "node")
        node_settings = Settings(data_dir=root, oidc_issuer=ISSUER, pki_dir=pki,
                                 node_workers=0)
        sock = bind()
        url = f"https://127.0.0.1:{sock.getsockname()[1]}"
        stack.enter_context(serve(create_node_app(NodeConfig(NODE, NODE, node_db),
                                                  node_settings),
                                  sock, lifespan="off", **server_ssl_options(pki, NODE)))
        central_db = stack.enter_context(postgres_database())
        upgrade(central_db, "central")
        self.central = create_central_app(Settings(
            data_dir=root, database_url=central_db, oidc_issuer=ISSUER, pki_dir=pki,
            federation_nodes={NODE: url}))
        # The node's API in-process: another app over the same database.
        self.node = create_node_app(NodeConfig(NODE, NODE, node_db), node_settings)
        self.issuer = DemoIssuer(root / "keys" / "issuer.jwk.json", ISSUER, "spe")
        self.hub = ContextSigner(private_key_of(pki / "hub.key"))

    def token(self) -> str:
        return self.issuer.mint("prober", ROLES, institution=NODE)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A database of its own on the real PostgreSQL (where NUL characters and 64-bit
    integers made drivers raise), for the whole module; dropped afterwards."""
    name = f"spe_test_{uuid.uuid4().hex[:12]}"
    with _postgres_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with _postgres_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> Iterator[Federation]:
    with ExitStack() as stack:
        yield Federation(tmp_path_factory.mktemp("api-schema"), stack)


@pytest.fixture
def central_schema(federation: Federation):
    return schemathesis.openapi.from_asgi("/openapi.json", federation.central)


@pytest.fixture
def node_schema(federation: Federation):
    return schemathesis.openapi.from_asgi("/openapi.json", federation.node)


def _hub_context(federation: Federation, case) -> dict[str, str]:
    """A context the hub would sign for this request, so it gets past the node's door."""
    path, body = case.operation.path, case.body
    if path == "/api/v1/query" and isinstance(body, dict):
        try:
            qh = Query.model_validate(body.get("query")).digest()
        except ValueError:
            qh = "0" * 64
    elif path == "/api/v1/jobs" and isinstance(body, dict):
        try:
            qh = hashlib.sha256(base64.b64decode(str(body.get("code")), validate=True)
                                ).hexdigest()
        except (binascii.Error, ValueError):
            qh = "0" * 64
    elif path.startswith("/api/v1/jobs/") and case.path_parameters:
        qh = hashlib.sha256(str(case.path_parameters.get("job_id")).encode()).hexdigest()
    else:
        return {}
    return {CONTEXT_HEADER: federation.hub.sign(
        user=f"prober@{ISSUER}", roles=ROLES, tier="permit", query_hash=qh, node_id=NODE,
        permit="P-0000")}


SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],  # found, not shrunk: bounded
                    suppress_health_check=list(HealthCheck))
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def run_schema(schema, call: Callable) -> list[str]:
    """`call(case)` on examples of every operation, valid and invalid; the failures."""
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the document lists no operations"
    failures = []
    for operation in operations:
        for mode in MODES:
            @given(case=operation.as_strategy(generation_mode=mode))
            @SETTINGS
            def examples(case) -> None:
                call(case)

            try:
                examples()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                continue
            except (Exception, FailureGroup) as exc:  # every operation's failures reported
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:3000])
    return failures


def test_central_api_answers_as_documented(federation):
    """Each generated request twice: with a token of every role, and without one."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", federation.central)

    def call(case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {federation.token()}"},
                               checks=CHECKS)
        case.call_and_validate(headers={}, checks=CHECKS)

    failures = run_schema(schema, call)
    assert not failures, "\n\n".join(failures)


def test_node_api_answers_as_documented(federation):
    """Each generated request twice: as the hub or a user would call it, and bare."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", federation.node)

    def call(case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {federation.token()}",
                                        **_hub_context(federation, case)}, checks=CHECKS)
        case.call_and_validate(headers={}, checks=CHECKS)

    failures = run_schema(schema, call)
    assert not failures, "\n\n".join(failures)
