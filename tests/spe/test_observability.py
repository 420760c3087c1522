"""spe/observability from outside: log lines, request ids, /metrics' door, the audit
chain watched as it grows, and waiting for the database at start."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from spe.app import create_central_app
from spe.audit import CentralAuditEntry, CentralAuditHead
from spe.audit.service import AuditLog
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade
from spe.observability import DatabaseNeverCame, wait_for_database
from spe.observability.audit_watch import AuditWatch
from spe.observability.logging import log_handler
from spe.observability.metrics import ServiceMetrics
from spe.settings import Settings

SCRAPER = "scraper-token-0123456789abcdef"


@pytest.fixture
def lines():
    """What the service logs at INFO and above, as the JSON lines an operator reads."""
    stream = io.StringIO()
    handler = log_handler("json", stream)
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


@pytest.fixture
def central(tmp_path):
    url = f"sqlite:///{tmp_path / 'central.db'}"
    upgrade(url, "central")
    settings = Settings(data_dir=tmp_path, database_url=url, environment="development",
                        metrics_token=SCRAPER, ready_cache_seconds=0)
    with TestClient(create_central_app(settings)) as client:
        yield client


# -- log lines ------------------------------------------------------------------------------

def test_an_exception_is_one_json_line_with_its_type_message_and_traceback(lines):
    try:
        raise RuntimeError("the index is gone\nsecond line")
    except RuntimeError:
        logging.getLogger("spe.test").exception("sync failed", extra={"job": "J-1"})
    [line] = [entry for entry in lines() if entry["logger"] == "spe.test"]
    assert line["level"] == "ERROR"
    assert line["exc_type"] == "RuntimeError"
    assert "Traceback (most recent call last)" in line["traceback"]
    assert line["job"] == "J-1"
    assert line["timestamp"].endswith("Z")
    assert "T" in line["timestamp"]


def test_a_text_line_stays_one_line_with_an_exception():
    stream = io.StringIO()
    logger = logging.getLogger("spe.test.text")
    logger.addHandler(log_handler("text", stream))
    logger.propagate = False
    try:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            logger.exception("it broke")
    finally:
        logger.handlers.clear()
        logger.propagate = True
    out = stream.getvalue()
    assert out.count("\n") == 1, out
    assert "exc_type=ValueError" in out
    assert "Traceback" in out


def test_the_access_log_names_the_route_template_user_status_and_request_id(central, lines):
    resp = central.get("/api/v1/catalogue/datasets/ds-secret-id-42",
                       headers={"X-Request-ID": "proxy-req-00000001"})
    assert resp.headers["x-request-id"] == "proxy-req-00000001"
    access = [e for e in lines() if e["logger"] == "spe.access"]
    assert access, "no access line"
    line = access[-1]
    assert line["route"] == "/api/v1/catalogue/datasets/{identifier:path}"
    assert (line["method"], line["status"], line["request_id"]) == (
        "GET", resp.status_code, "proxy-req-00000001")
    assert isinstance(line["duration_ms"], float)
    assert line["service"] == "central"
    assert "ds-secret-id-42" not in json.dumps(access)  # raw paths never logged


def test_a_forged_request_id_is_replaced_not_echoed(central, lines):
    for forged in ("x", "a\" injected=1", "a" * 300, "evil id\twith\ttabs"):
        resp = central.get("/health", headers={"X-Request-ID": forged})
        given = resp.headers["x-request-id"]
        assert given != forged
        assert len(given) == 32
        assert given.isalnum()


# -- /metrics --------------------------------------------------------------------------------

def test_metrics_need_the_scrapers_token_and_a_refusal_is_audited(central):
    assert central.get("/metrics").status_code == 401
    wrong = central.get("/metrics", headers={"Authorization": "Bearer not-it"})
    assert wrong.status_code == 401
    ok = central.get("/metrics", headers={"Authorization": f"Bearer {SCRAPER}"})
    assert ok.status_code == 200
    assert "spe_ready 1.0" in ok.text
    assert 'spe_http_request_duration_seconds_count{method="GET",route="/metrics",' \
           'status="401"} 2.0' in ok.text
    audit = central.get("/api/v1/audit/verify")  # the door refuses: just proves it ran
    assert audit.status_code == 401
    engine = make_engine(str(central.app.state.ctx.settings.resolved_database_url))
    with engine.connect() as conn:
        denied = conn.execute(text("SELECT count(*) FROM audit_log WHERE action = 'metrics' "
                                   "AND decision = 'deny'")).scalar_one()
    engine.dispose()
    assert denied == 2


def test_without_a_token_metrics_are_refused_outside_development(tmp_path):
    url = f"sqlite:///{tmp_path / 'central.db'}"
    upgrade(url, "central")
    settings = Settings(data_dir=tmp_path, database_url=url, environment="test")
    with TestClient(create_central_app(settings)) as client:
        resp = client.get("/metrics")
    assert resp.status_code == 401
    assert "SPE_METRICS_TOKEN" in resp.json()["detail"]


# -- the audit chain, watched ----------------------------------------------------------------

def _record(sessions, log_, n: int) -> None:
    with session_scope(sessions) as session:
        for i in range(n):
            log_.record(session, actor="t", action="test", object=f"o{i}", decision="info")


def test_the_audit_watch_verifies_only_new_entries_and_rechecks_old_ones_in_windows(
        database_url, caplog):
    upgrade(database_url, "central")
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    log_ = AuditLog(CentralAuditEntry, CentralAuditHead)
    metrics = ServiceMetrics("central")
    watch = AuditWatch(log_, sessions, metrics=metrics, window=10)
    walked = []
    verify = log_.verify

    def counting(session, **kw):
        report = verify(session, **kw)
        walked.append(report.checked)
        return report

    log_.verify = counting
    try:
        _record(sessions, log_, 25)
        for _ in range(3):  # 25 new entries, 10 per check
            assert watch.check().status == "ok"
        assert watch._verified[0] == 25
        walked.clear()
        _record(sessions, log_, 3)
        assert watch.check().status == "ok"
        assert sum(walked) <= 3 + 10 + 1, walked  # the new ones and one window, not 28
        assert metrics.audit_length._value.get() == 28
        # An old entry edited after it was verified is found by the rolling re-check.
        with engine.begin() as conn:
            conn.execute(text("UPDATE audit_log SET reason = 'edited' WHERE seq = 4"))
        caplog.set_level(logging.ERROR, logger="spe.audit")
        results = [watch.check().status for _ in range(4)]
        assert "failed" in results
        assert results[-1] == "failed"  # it stays failed: an alarm, not a blip
        assert metrics.audit_broken._value.get() == 1
        assert any("AUDIT CHAIN BROKEN at entry 4" in r.getMessage() for r in caplog.records)
    finally:
        engine.dispose()


# -- the database at start --------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_waiting_for_the_database_backs_off_and_names_what_it_waits_for(caplog):
    url = f"postgresql://spe:hunter2-secret@127.0.0.1:{_closed_port()}/spe_central"
    now = [0.0]
    pauses = []

    def sleep(seconds):
        pauses.append(seconds)
        now[0] += seconds

    caplog.set_level(logging.WARNING, logger="spe.startup")
    with pytest.raises(DatabaseNeverCame) as raised:
        wait_for_database(url, 20, sleep=sleep, clock=lambda: now[0])
    assert pauses[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(pauses) <= 10
    assert sum(pauses) == pytest.approx(20)
    waits = [r.getMessage() for r in caplog.records if r.name == "spe.startup"]
    assert len(waits) == len(pauses)  # one line per failed attempt
    assert all(f"127.0.0.1:{url.split(':')[3].split('/')[0]}/spe_central" in w for w in waits)
    assert "hunter2" not in " ".join(waits) + str(raised.value)


def test_a_database_that_comes_up_while_waited_for_is_used(postgres_url):
    from tests.conftest import _postgres_admin

    base = postgres_url.rsplit("/", 1)[0]
    late = f"{postgres_url.rsplit('/', 1)[1]}_late"
    attempts = []

    def sleep(_seconds):  # the database server makes it on the second wait
        attempts.append(1)
        if len(attempts) == 2:
            with _postgres_admin() as admin:
                admin.execute(f'CREATE DATABASE "{late}"')

    try:
        assert wait_for_database(f"{base}/{late}", 30, sleep=sleep) == 3
    finally:
        with _postgres_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{late}" WITH (FORCE)')


@pytest.mark.parametrize("command", [["serve", "central"], ["node", "worker"]])
def test_a_service_without_its_database_exits_2_with_one_line_per_attempt(command, tmp_path):
    port = _closed_port()
    env = {**os.environ, "SPE_DATABASE_URL": f"postgresql://spe:pw-secret@127.0.0.1:{port}/db",
           "SPE_DB_WAIT_SECONDS": "2", "SPE_NODE_ID": "site-a", "SPE_DATA_DIR": str(tmp_path),
           "SPE_LOG_FORMAT": "json", "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-m", "spe.cli", *command], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    out = (done.stdout + done.stderr).strip().splitlines()
    parsed = [json.loads(line) for line in out]  # every line is one JSON object
    waits = [p for p in parsed if p["message"].startswith("waiting for the database")]
    assert len(waits) >= 2
    assert [p["attempt"] for p in waits] == list(range(1, len(waits) + 1))
    assert parsed[-1]["level"] == "ERROR"
    assert "did not answer within 2 s" in parsed[-1]["message"]
    assert len(parsed) == len(waits) + 1
    assert "Traceback" not in done.stderr
    assert "pw-secret" not in done.stderr


def test_uvicorns_own_access_log_with_raw_paths_is_off_once_logging_is_configured():
    from spe.observability import configure_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("json", "INFO", stream=io.StringIO())
        assert logging.getLogger("uvicorn.access").disabled
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.getLogger("uvicorn.access").disabled = False


# -- the identity provider's keys --------------------------------------------------------------

def test_keys_that_stop_answering_warn_while_fresh_then_fail(tmp_path):
    from fastapi import FastAPI

    from spe.identity import DemoIssuer
    from spe.observability.checks import identity_provider
    from tests.servers import bind, serve

    issuer = DemoIssuer(tmp_path / "issuer.jwk.json", "http://idp.test", "spe")
    app = FastAPI()
    app.get("/jwks")(issuer.jwks)
    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/jwks"
    fresh = [3600.0]
    check = identity_provider(url, lambda: fresh[0])
    never_fetched = identity_provider(url)
    with serve(app, sock, lifespan="off") as running:
        assert check().status == "ok"
        running.stop()
    result = check()
    assert result.status == "warn"  # tokens are still checked with the keys fetched
    assert "ConnectError" in result.reason
    fresh[0] = 0.0
    assert check().status == "failed"
    assert never_fetched().status == "failed"  # no keys ever: every token would get 401


# -- certificates -------------------------------------------------------------------------------

def _certificate(path, days_left: float) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, path.stem)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=400))
            .not_valid_after(now + dt.timedelta(days=days_left)).sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(Encoding.PEM))


def test_certificates_warn_below_the_threshold_and_fail_once_expired(tmp_path):
    from spe.observability.checks import certificates

    metrics = ServiceMetrics("node")
    check = certificates(tmp_path, 30, metrics)
    assert check().status == "failed"  # none at all
    _certificate(tmp_path / "ca.crt", 3000)
    assert check().status == "ok"
    _certificate(tmp_path / "site-a.crt", 12.5)
    soon = check()
    assert soon.status == "warn"
    assert "site-a.crt in 12 days" in soon.reason
    assert metrics.cert_days.labels("site-a")._value.get() == pytest.approx(12.5, abs=0.1)
    _certificate(tmp_path / "hub.crt", -1)
    expired = check()
    assert expired.status == "failed"
    assert "expired: hub.crt" in expired.reason
    assert str(tmp_path) not in expired.reason


def test_a_running_service_checks_itself_at_start_unasked(tmp_path, caplog):
    """The readiness checks run when the service starts (and every minute), so a failing
    one is in the log even when no probe asks."""
    url = f"sqlite:///{tmp_path / 'central.db'}"
    upgrade(url, "central")
    settings = Settings(data_dir=tmp_path, database_url=url, environment="development",
                        oidc_jwks_url=f"http://127.0.0.1:{_closed_port()}/jwks")
    caplog.set_level(logging.ERROR, logger="spe.ready")
    with TestClient(create_central_app(settings)) as client:
        metrics = client.app.state.metrics
        assert metrics.check.labels("identity_provider")._value.get() == 0
    assert any("readiness check identity_provider: failed" in r.getMessage()
               for r in caplog.records)
