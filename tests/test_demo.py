"""The README's demo command, run as a user would: it comes up, answers, and stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from spe.pki import client_ssl_context
from tests.orthanc import require_orthanc


@pytest.mark.slow
@pytest.mark.parametrize("flags", [
    pytest.param([], id="folders"),
    pytest.param(["--orthanc"], id="orthanc", marks=pytest.mark.orthanc),
])
def test_demo_comes_up_answers_and_stops_cleanly(tmp_path: Path, flags: list[str]):
    if flags:
        require_orthanc()
    port = _free_ports_below_ephemeral()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "spe.cli", "demo", "--data-dir", str(tmp_path / "demo"),
         "--patients", "15", "--port", str(port), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    output: list[str] = []
    failed = False
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail("demo exited early:\n" + "".join(output))
            output.append(line)
            if "press Ctrl-C to stop" in line:
                break
        else:
            pytest.fail("demo did not come up:\n" + "".join(output))
        text = "".join(output)
        assert "federation: 3 nodes, 45 patients" in text
        manifest = json.loads((tmp_path / "demo" / "synth" / "manifest.json").read_text())
        instances = sum(site["instances"] for site in manifest["institutions"])
        assert f"{instances} DICOM instances" in text  # the Orthanc site indexed them all
        if flags:
            assert "site-c reads its images from Orthanc" in text
        tokens = json.loads((tmp_path / "demo" / "tokens.json").read_text())
        assert set(tokens) == {"researcher", "researcher:carol", "approver", "approver:bea",
                               "approver:cem", "hdab", "output_checker",
                               "output_checker:oscar", "admin"}
        _wait_healthy(f"http://127.0.0.1:{port}/health")
        pki = tmp_path / "demo" / "pki"
        hub_tls = client_ssl_context(pki, "hub")  # the nodes speak mutual TLS only
        for i in range(1, 4):
            health = _wait_healthy(f"https://127.0.0.1:{port + i}/health", verify=hub_tls)
            assert health["service"] == "node"
        with pytest.raises(httpx.HTTPError):  # no client certificate, no answer
            httpx.get(f"https://127.0.0.1:{port + 1}/health",
                      verify=ssl.create_default_context(cafile=pki / "ca.crt"), timeout=5)
        assert "catalogue: 3 datasets harvested" in text
        catalogue = httpx.get(f"http://127.0.0.1:{port}/api/v1/catalogue",
                              headers={"Accept": "text/turtle"})
        assert catalogue.status_code == 200
        assert "healthdcatap:numberOfUniqueIndividuals" in catalogue.text
        harvest = subprocess.run(
            [sys.executable, "-m", "spe.cli", "catalogue", "harvest",
             *(a for i in range(1, 4) for a in ("--node", f"https://127.0.0.1:{port + i}"))],
            env={**env, "SPE_DATA_DIR": str(tmp_path / "demo"), "SPE_PKI_DIR": str(pki),
                 "SPE_OIDC_ISSUER": f"http://127.0.0.1:{port}"},
            capture_output=True, text=True, timeout=60,
        )
        assert harvest.returncode == 0, harvest.stdout + harvest.stderr
        assert (harvest.stdout + harvest.stderr).count("updated") == 3
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        verify = httpx.get(f"http://127.0.0.1:{port}/api/v1/audit/verify", headers=admin)
        assert verify.status_code == 200
        assert verify.json()["ok"]
        researcher = {"Authorization": f"Bearer {tokens['researcher']}"}
        # A node's own counts are for its operator: its own certificate, an admin token.
        with httpx.Client(base_url=f"https://127.0.0.1:{port + 1}",
                          verify=client_ssl_context(pki, "site-a")) as node_a:
            summary = node_a.get("/api/v1/index/summary", headers=admin)
            assert summary.status_code == 200
            assert summary.json()["counts"]["patients"] == 15
            assert node_a.get("/api/v1/index/summary", headers=researcher).status_code == 403
        with httpx.Client(base_url=f"https://127.0.0.1:{port + 1}", verify=hub_tls) as hub:
            assert hub.get("/api/v1/index/summary", headers=admin).status_code == 403
        answer = httpx.post(f"http://127.0.0.1:{port}/api/v1/query", headers=researcher,
                            json={"where": {"type": "imaging", "modality": ["CT", "MR"]}},
                            timeout=30)
        assert answer.status_code == 200, answer.text
        # 15 patients a site: a site's count may well be under the threshold.
        assert {n["status"] for n in answer.json()["nodes"]} <= {"answered", "suppressed"}
        assert len(answer.json()["nodes"]) == 3
        for page in ("/catalogue", "/query", "/permits", "/jobs", "/fed", "/airlock"):
            assert httpx.get(f"http://127.0.0.1:{port}{page}").status_code == 200, page
            assert f"127.0.0.1:{port}{page}" in text, page  # the demo names every page
    except BaseException:
        failed = True
        raise
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("demo did not stop within 20 s of Ctrl-C")
        if failed:  # shown with the failure: what the demo said after its table
            print("demo output:\n" + "".join(output) + rest)
    assert proc.returncode == 0, "".join(output) + rest
    assert "demo stopped" in rest
    assert "Traceback" not in rest
    if flags:
        assert not _orthanc_running(tmp_path / "demo" / "orthanc")


def _orthanc_running(workdir: Path) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(workdir) in cmdline.read_bytes().decode(errors="replace"):
                return True
        except OSError:
            continue
    return False


def _free_ports_below_ephemeral() -> int:
    """Four consecutive free ports below Linux's ephemeral range (32768-60999), so the
    demo's own outgoing connections (PostgreSQL, Orthanc, the hub's) cannot take one of
    them between this check and the demo binding them."""
    import random

    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        if not any(_busy(port + i) for i in range(4)):
            return port
    pytest.fail("no four consecutive free ports between 20000 and 32000")


def _busy(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_healthy(url: str, verify=True, within: float = 30.0) -> dict:
    # The servers start right after the demo prints its table; a loaded CI machine (with
    # Orthanc running beside) can take several seconds.
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(url, timeout=2, verify=verify)
            if resp.status_code == 200:
                return resp.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} never became healthy within {within:.0f} s")
