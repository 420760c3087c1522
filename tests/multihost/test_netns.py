"""The network builder itself: what a killed run leaves is removed by the next, by name."""

from __future__ import annotations

import subprocess
import time

from tests.multihost.netns import Network, require_netns
from tests.processes import alive


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split(" ", 1)[0] for line in listed.splitlines() if line.strip()}


def _links(prefix: str) -> list[str]:
    listed = subprocess.run(["ip", "-o", "link", "show"], capture_output=True,
                            text=True).stdout
    return [line for line in listed.splitlines() if prefix in line]


def test_what_a_killed_run_left_is_removed_at_the_next_start():
    require_netns()
    prefix = "spemhq"
    net = Network(prefix, subnet="10.18.9").build()
    net.add_host("a", 10)
    service = net.popen("a", ["sleep", "600"])
    # The run dies here: no teardown. The next run builds its network of the same name.
    assert {f"{prefix}switch", f"{prefix}a"} <= _namespaces()
    assert _links(prefix)  # the root namespace's end of its bridge link
    again = Network(prefix, subnet="10.18.9").build()
    try:
        deadline = time.monotonic() + 10
        while alive(service.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(service.pid)  # the old run's process in its namespace, killed
        assert f"{prefix}a" not in _namespaces()
        assert f"{prefix}switch" in _namespaces()  # the new one's
    finally:
        again.teardown()
        service.wait(timeout=10)
    assert not {n for n in _namespaces() if n.startswith(prefix)}
    assert not _links(prefix)
