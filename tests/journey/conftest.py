"""One demo federation for the journey tests, started as the README says (`spe demo`), on
free ports in the session's tmp dir, and stopped with Ctrl-C at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from spe.pki import client_ssl_context
from tests.journey import glue
from tests.test_demo import _free_ports_below_ephemeral

INSTITUTIONS = 3
PATIENTS = 60  # enough for counts over the threshold of 10 per site; comes up in ~30 s


@dataclass
class Demo:
    url: str
    port: int
    data_dir: Path
    tokens: dict[str, str]
    output: list[str] = field(default_factory=list)

    @property
    def nodes(self) -> dict[str, str]:
        return {f"site-{chr(97 + i)}": f"https://127.0.0.1:{self.port + 1 + i}"
                for i in range(INSTITUTIONS)}

    def printed(self) -> str:
        return "".join(self.output)

    def exports(self) -> dict[str, str]:
        """The environment the demo gives a user: its env file's `export` lines, which it
        also prints (the test checks they agree)."""
        return glue.parse_exports((self.data_dir / glue.ENV_FILE).read_text())

    def uid(self, user: str) -> str:
        return f"{user}@{self.url}"


def _pump(stream, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


def _healthy(url: str, verify=True, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} never became healthy within {within:.0f} s")


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Iterator[Demo]:
    data_dir = tmp_path_factory.mktemp("journey") / "demo"
    port = _free_ports_below_ephemeral()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    for name in [n for n in env if n.startswith("SPE_")]:
        env.pop(name)  # the demo as a new user starts it, not the test run's settings
    proc = subprocess.Popen(
        [sys.executable, "-m", "spe.cli", "demo", "--data-dir", str(data_dir), "--port",
         str(port), "--institutions", str(INSTITUTIONS), "--patients", str(PATIENTS)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output: list[str] = []
    pump = threading.Thread(target=_pump, args=(proc.stdout, output), daemon=True)
    pump.start()
    try:
        deadline = time.monotonic() + 180
        while not any("press Ctrl-C to stop" in line for line in output):
            if proc.poll() is not None:
                pytest.fail("demo exited early:\n" + "".join(output))
            if time.monotonic() > deadline:
                pytest.fail("demo did not come up within 180 s:\n" + "".join(output))
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}"
        _healthy(f"{url}/health")
        hub_tls = client_ssl_context(data_dir / "pki", "hub")
        for i in range(INSTITUTIONS):
            _healthy(f"https://127.0.0.1:{port + 1 + i}/health", verify=hub_tls)
        tokens = json.loads((data_dir / "tokens.json").read_text())
        yield Demo(url, port, data_dir, tokens, output)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        pump.join(timeout=5)
