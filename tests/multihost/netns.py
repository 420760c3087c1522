"""A small network of Linux network namespaces on this machine, for the tests across hosts.

`Network` builds a "switch" namespace holding a bridge, and one namespace per host with a
veth pair whose one end is the host's interface (its own address on the subnet) and whose
other end is a port of the bridge. The root namespace joins the bridge the same way (the
first address of the subnet): that is where the tests' own process and the machine's
PostgreSQL are. Everything it makes is named with its prefix, so `remove_leftovers` finds
what a killed run left behind, and deleting a namespace deletes its veth pair with it.

Packet filters are nftables rules inside a host's namespace (`only_from`): a node's port
accepts the hub (and whoever else is named) and drops everyone else, as an institution's
firewall in front of its node would.

Code of the test process itself runs inside a namespace through `inside(host)`: the calling
thread enters it (setns(2) moves one thread's network namespace), so a subprocess started
from there (Orthanc) and the sockets made there live in it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


class NetnsError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def netns_problem() -> str | None:
    """Why namespaces cannot be built here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the tests as root)"
    # socat: the forwarders and relays between hosts (tests/multihost/federation.py).
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("socat", "socat")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian package {package})"
    probe = "spe-probe-netns"
    done = _ip("netns", "add", probe, check=False)
    if done.returncode:
        return f"`ip netns add` does not work here: {done.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def remove_leftovers(prefix: str) -> None:
    """Delete the namespaces (and so their veth pairs) and root-side links named `prefix`."""
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    for line in listed:
        name = line.split(" ", 1)[0].strip()
        if name.startswith(prefix):
            _kill_inside(name)
            _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":", 2)[1].strip().split("@", 1)[0]
        if name.startswith(prefix):
            _ip("link", "del", name, check=False)


def _kill_inside(ns: str) -> None:
    """Kill whatever still runs in namespace `ns` (a killed run's services)."""
    done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                          timeout=30)
    for pid in done.stdout.split():
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass


@dataclass
class Host:
    name: str  # short: the namespace is <prefix><name>
    ns: str
    address: str
    veth: str  # the interface inside the namespace
    port: str  # its peer, a port of the bridge in the switch namespace


@dataclass
class Network:
    prefix: str  # at most 6 characters: interface names have 15
    subnet: str = "10.18.0"  # a /24
    hosts: dict[str, Host] = field(default_factory=dict)
    root_address: str = ""

    @property
    def switch(self) -> str:
        return f"{self.prefix}switch"

    def build(self) -> Network:
        remove_leftovers(self.prefix)
        taken = [line for line in _ip("-4", "-o", "addr", "show").stdout.splitlines()
                 if f" {self.subnet}." in line]
        if taken:  # the machine's own network: building ours would break it
            raise NetnsError(f"{self.subnet}.0/24 is in use on this machine: {taken[0]}")
        _ip("netns", "add", self.switch)
        self.exec(self.switch, "ip", "link", "add", "br0", "type", "bridge")
        self.exec(self.switch, "ip", "link", "set", "br0", "up")
        # The root namespace on the bridge: the tests and the database host.
        self.root_address = f"{self.subnet}.1"
        root, port = f"{self.prefix}root", f"{self.prefix}rootp"
        _ip("link", "add", root, "type", "veth", "peer", "name", port)
        _ip("link", "set", port, "netns", self.switch)
        _ip("addr", "add", f"{self.root_address}/24", "dev", root)
        _ip("link", "set", root, "up")
        self.exec(self.switch, "ip", "link", "set", port, "master", "br0", "up")
        return self

    def add_host(self, name: str, last_octet: int) -> Host:
        ns = f"{self.prefix}{name}"
        host = Host(name, ns, f"{self.subnet}.{last_octet}", f"{self.prefix}{name}0",
                    f"{self.prefix}{name}1")
        _ip("netns", "add", ns)
        _ip("link", "add", host.veth, "netns", ns, "type", "veth", "peer", "name", host.port,
            "netns", self.switch)
        self.exec(ns, "ip", "link", "set", "lo", "up")
        self.exec(ns, "ip", "addr", "add", f"{host.address}/24", "dev", host.veth)
        self.exec(ns, "ip", "link", "set", host.veth, "up")
        self.exec(self.switch, "ip", "link", "set", host.port, "master", "br0", "up")
        self.hosts[name] = host
        return host

    def exec(self, ns: str, *argv: str, check: bool = True,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run `argv` in namespace `ns` (a host's name, or a namespace's)."""
        ns = self.hosts[ns].ns if ns in self.hosts else ns
        done = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                              text=True, timeout=300, env=env)
        if check and done.returncode:
            raise NetnsError(f"in {ns}: {' '.join(argv)}: {done.stderr.strip()}")
        return done

    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start `argv` inside `host`'s namespace (kill it with its process group)."""
        return subprocess.Popen(["ip", "netns", "exec", self.hosts[host].ns, *argv],
                                start_new_session=True, **kwargs)

    # --- Packet filters and failures -------------------------------------------------
    def only_from(self, host: str, port: int, *allowed: str) -> None:
        """Accept TCP to `port` in `host` from the named hosts only; drop the rest."""
        ns = self.hosts[host].ns
        sources = ", ".join(self.hosts[a].address for a in allowed)
        self.exec(ns, "nft", "add", "table", "inet", "spe")
        self.exec(ns, "nft", "add", "chain", "inet", "spe", "input",
                  "{ type filter hook input priority 0; policy accept; }")
        # The host's own processes reach it over loopback (a node's worker, say).
        self.exec(ns, "nft", "add", "rule", "inet", "spe", "input", "iifname", "lo",
                  "accept")
        self.exec(ns, "nft", "add", "rule", "inet", "spe", "input", "tcp", "dport",
                  str(port), "ip", "saddr", f"{{ {sources} }}", "accept")
        self.exec(ns, "nft", "add", "rule", "inet", "spe", "input", "tcp", "dport",
                  str(port), "drop")

    def partition(self, host: str, peer: str, *, replies_only: bool = False) -> None:
        """Drop every packet between `host` and `peer` (both ways), in `host`'s namespace;
        with `replies_only`, only what `host` sends (a request on an open connection gets
        in, and its answer never gets out)."""
        ns, address = self.hosts[host].ns, self.hosts[peer].address
        self.exec(ns, "nft", "add", "table", "inet", "partition")
        hooks = [("output", "daddr")] if replies_only else [("input", "saddr"),
                                                             ("output", "daddr")]
        for hook, direction in hooks:
            self.exec(ns, "nft", "add", "chain", "inet", "partition", hook,
                      f"{{ type filter hook {hook} priority -10; policy accept; }}")
            self.exec(ns, "nft", "add", "rule", "inet", "partition", hook, "ip", direction,
                      address, "drop")

    def heal(self, host: str) -> None:
        """Undo `partition` (a no-op when there is none)."""
        self.exec(self.hosts[host].ns, "nft", "delete", "table", "inet", "partition",
                  check=False)

    def link(self, host: str, up: bool) -> None:
        """Cut (or restore) `host`'s only link, as a pulled cable would."""
        self.exec(self.hosts[host].ns, "ip", "link", "set", self.hosts[host].veth,
                  "up" if up else "down")

    def teardown(self) -> None:
        for host in self.hosts.values():
            _kill_inside(host.ns)
        remove_leftovers(self.prefix)
        self.hosts.clear()

    # --- Running the test's own code in a namespace ----------------------------------
    def inside(self, host: str, fn: Callable[[], T]) -> T:
        """Run `fn` in a thread that has entered `host`'s namespace; return what it did."""
        path = Path("/run/netns") / self.hosts[host].ns
        out: dict[str, object] = {}

        def run() -> None:
            try:
                with _entered(path):
                    out["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                out["error"] = exc

        thread = threading.Thread(target=run, name=f"in-{host}")
        thread.start()
        thread.join()
        if "error" in out:
            raise out["error"]  # type: ignore[misc]
        return out["value"]  # type: ignore[return-value]


@contextmanager
def _entered(path: Path):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise NetnsError(f"setns {path}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
    # The thread ends with the block; it never goes back to the root namespace.
    yield


def require_netns() -> None:
    """Skip without root or `ip netns` (fail in CI, where CI=true)."""
    problem = netns_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on"):
        pytest.fail(f"{problem}; the tests across hosts are required in CI", pytrace=False)
    pytest.skip(problem)
