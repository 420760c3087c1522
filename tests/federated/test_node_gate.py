"""The node gate from outside, the way a hostile app would try it: a round's step that
writes its rows, a pseudonym, an update of the wrong shape, a count below the minimum, or
tries the network, sent to a real node over mutual TLS as the hub sends rounds. Nothing of
it may come back; each refusal is the gate's words and is in the node's audit."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from sqlalchemy import select

from spe.audit import NodeAuditEntry as AuditEntry
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.wire.rounds import GATE_REASONS, Contract, RoundRequest, pack_arrays, unpack_arrays
from tests.federated.conftest import LIMITS, send_round, step_code

pytestmark = pytest.mark.usefixtures("needs_sandbox")

CONTRACT = {"arrays": {"w": {"shape": [3], "min": -1e6, "max": 1e6}},
            "metrics": {"loss": {"min": 0, "max": 1e6}, "reached": {"min": 0, "max": 1}}}

# The first patient's pseudonym of the extract, for the steps that try to send one.
PSEUDONYM = """
import json, pathlib
first = pathlib.Path("/extract/fhir/Patient.ndjson").read_text().splitlines()[0]
PSEUDONYM = json.loads(first)["id"]
"""


def _request(tmp_path, source: str, *, contract=None, run="gate-test", number=1,
             arrays=None) -> RoundRequest:
    code = step_code(tmp_path, "import sys; sys.path.insert(0, '/code')\n"
                     "from steplib import read_round, write_update, OUTPUT\n"
                     + PSEUDONYM + textwrap.dedent(source))
    return RoundRequest(run=run, round=number, kind="step", app="flower", code=code,
                        entry="step.py", config={}, contract=Contract.model_validate(
                            contract or CONTRACT),
                        arrays=pack_arrays(arrays) if arrays else None, limits=LIMITS)


def _gate_entries(fed_sites, site: str, run: str) -> list[AuditEntry]:
    db = fed_sites[site]
    sessions = make_sessionmaker(make_engine(f"sqlite:///{db}"))
    with session_scope(sessions) as session:
        rows = session.execute(select(AuditEntry).where(
            AuditEntry.action == "fed.gate", AuditEntry.object.like(f"fed:{run}/%"))).scalars()
        out = list(rows)
        for row in out:
            session.expunge(row)
        return out


def _details(entry: AuditEntry) -> dict:
    return json.loads(entry.details) if isinstance(entry.details, str) else entry.details


def _refused(resp, code: str) -> dict:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["state"] == "refused", body
    assert body["reason"] == GATE_REASONS[code]
    assert body["arrays"] is None
    assert body["metrics"] == {}
    assert body["n"] is None
    return body


def test_an_honest_update_leaves_and_is_audited(fed_federation, fed_permit, fed_sites,
                                                tmp_path):
    resp = send_round(fed_federation, fed_permit, _request(tmp_path, """
        write_update({"w": [1.0, 2.0, 3.0]}, 20, {"loss": 0.5})
    """, run="honest"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["state"] == "accepted", body
    assert body["n"] == 20
    assert body["metrics"] == {"loss": 0.5}
    assert unpack_arrays(body["arrays"])["w"].tolist() == [1.0, 2.0, 3.0]
    [entry] = _gate_entries(fed_sites, "site-a", "honest")
    assert entry.decision == "allow"
    assert _details(entry)["arrays"] == {"w": [3]}


@pytest.mark.parametrize(("name", "source", "code"), [
    ("rows", """
        write_update({"w": [1.0, 2.0, 3.0]}, 20, {"loss": 0.5})
        (OUTPUT / "rows.csv").write_text("patient\\n" + PSEUDONYM + "\\n")
    """, "extra_files"),
    ("pseudonym-metric", """
        write_update({"w": [1.0, 2.0, 3.0]}, 20)
        import json
        (OUTPUT / "update.json").write_text(json.dumps({"n": 20, "metrics": {"loss": PSEUDONYM}}))
    """, "values"),
    ("undeclared-metric", """
        write_update({"w": [1.0, 2.0, 3.0]}, 20, {"loss": 0.5, "patient_age": 54})
    """, "names"),
    ("pseudonym-array", """
        import numpy as np
        np.savez(OUTPUT / "arrays.npz", w=np.array([PSEUDONYM, "a", "b"]))
        (OUTPUT / "update.json").write_text('{"n": 20, "metrics": {}}')
    """, "values"),
    ("wrong-shape", """
        write_update({"w": [[1.0] * 40] * 60}, 20)
    """, "shape"),
    ("extra-array", """
        write_update({"w": [1.0, 2.0, 3.0], "rows": [[54.0, 1.0]] * 20}, 20)
    """, "names"),
    ("compressed-bomb", """
        import numpy as np
        # 400 MB of zeros that compress to under half a megabyte: never inflated.
        np.savez_compressed(OUTPUT / "arrays.npz", w=np.zeros(50_000_000))
        (OUTPUT / "update.json").write_text('{"n": 20, "metrics": {}}')
    """, "bad_update"),
    ("link", """
        import os
        write_update({"w": [1.0, 2.0, 3.0]}, 20)
        os.remove(OUTPUT / "update.json")
        os.symlink("/extract/fhir/Patient.ndjson", OUTPUT / "update.json")
    """, "bad_update"),
    ("too-few", """
        write_update({"w": [1.0, 2.0, 3.0]}, 5, {"loss": 0.5})
    """, "min_patients"),
    ("too-many", """
        write_update({"w": [1.0, 2.0, 3.0]}, 1000000, {"loss": 0.5})
    """, "count"),
    ("printed", """
        print("patient", PSEUDONYM)
        raise SystemExit(3)
    """, "step_failed"),
])
def test_a_hostile_update_is_stopped_at_the_gate(fed_federation, fed_permit, fed_sites,
                                                 tmp_path, name, source, code):
    run = f"hostile-{name}"
    resp = send_round(fed_federation, fed_permit, _request(tmp_path, source, run=run))
    if code == "step_failed":
        assert resp.json()["state"] == "failed"
        assert resp.json()["reason"] == GATE_REASONS[code]
    else:
        _refused(resp, code)
    # Nothing of the extract in the answer: none of its pseudonyms is in it.
    for pseudonym in _extract_pseudonyms(fed_federation, "site-a"):
        assert pseudonym not in resp.text
    [entry] = _gate_entries(fed_sites, "site-a", run)
    assert entry.decision == "deny"
    assert _details(entry)["gate"] == code


def _extract_pseudonyms(fed, site: str) -> list[str]:
    root = fed[3]
    found = []
    for path in (root / "extracts" / site).glob("*/*/fhir/Patient.ndjson"):
        found += [json.loads(line)["id"] for line in path.read_text().splitlines() if line]
    assert found, "the permit's extract was staged"
    return found


def test_the_network_is_closed_inside_a_round(fed_federation, fed_permit, tmp_path):
    _, urls, _, _ = fed_federation
    host, port = urls["site-b"].removeprefix("https://").split(":")
    resp = send_round(fed_federation, fed_permit, _request(tmp_path, f"""
        import socket
        reached = 0
        for target in (("{host}", {port}), ("1.1.1.1", 443)):
            try:
                socket.create_connection(target, timeout=2).close()
                reached = 1
            except OSError:
                pass
        try:
            socket.getaddrinfo("example.org", 443)
            reached = 1
        except OSError:
            pass
        write_update({{"w": [0.0, 0.0, 0.0]}}, 20, {{"reached": reached}})
    """, run="network"))
    body = resp.json()
    assert body["state"] == "accepted", body
    assert body["metrics"] == {"reached": 0.0}


PRIVATE = {**CONTRACT, "privacy": {"clip": 1.0, "noise_multiplier": 1.1, "delta": 1e-5}}


def test_privacy_clips_noises_and_counts_the_spend(fed_federation, fed_permit, tmp_path):
    start = {"w": np.array([1.0, 1.0, 1.0])}
    spent = []
    for number in (1, 2):
        resp = send_round(fed_federation, fed_permit, _request(tmp_path, """
            meta, arrays = read_round()
            write_update({"w": arrays["w"] + 100.0}, 20, {"loss": 0.25})
        """, contract=PRIVATE, run="private", number=number, arrays=start))
        body = resp.json()
        assert body["state"] == "accepted", body
        change = unpack_arrays(body["arrays"])["w"] - start["w"]
        # Clipped to norm 1 and noised with sd 1.1: never the +100 the step wrote.
        assert np.linalg.norm(change) < 12
        assert body["metrics"] == {}  # no noise covers them: withheld
        spent.append(body["privacy"]["epsilon"])
        assert body["privacy"]["clipped"] == 1.0
    assert 0 < spent[0] < spent[1]  # two rounds compose


def test_a_round_over_the_permit_budget_is_refused(fed_federation, fed_permit, tmp_path):
    costly = {**CONTRACT, "privacy": {"clip": 1.0, "noise_multiplier": 0.2, "delta": 1e-5}}
    resp = send_round(fed_federation, fed_permit, _request(tmp_path, """
        write_update({"w": [1.0, 2.0, 3.0]}, 20)
    """, contract=costly, run="costly"))
    _refused(resp, "budget")


def test_a_round_for_someone_outside_the_permit_is_refused(fed_federation, fed_permit,
                                                           tmp_path):
    resp = send_round(fed_federation, fed_permit, _request(tmp_path, """
        write_update({"w": [1.0, 2.0, 3.0]}, 20)
    """, run="outsider"), user="mallory")
    assert resp.status_code == 403, resp.text
    assert "does not name the caller" in resp.json()["detail"]
