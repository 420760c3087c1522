"""Run a local Orthanc (Debian package `orthanc`, DICOMweb plugin) for the demo and tests.

Orthanc starts on free ports with its configuration and storage in a folder of ours, so
nothing of the system-wide service is touched. It holds the institution's identified images,
so it answers only whom it is told about: DICOM associations from the AE titles in `peers`
(the node's own, `SPE-NODE`, by default), calling from 127.0.0.1 and naming Orthanc's own
AE title; C-ECHO, C-FIND and C-GET only (no C-STORE into it, no C-MOVE); HTTP from
127.0.0.1 only and with a password of its own (`http_password`). Orthanc 1.10 (Debian's)
has no option to bind one address: its sockets listen on every interface and refuse other
hosts at association (DICOM) and at request (HTTP), so a firewall in front is still wise.
Its files are the running user's only (umask 077).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ORTHANC_BINARY = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
NODE_AET = "SPE-NODE"  # the calling AE title of the node's DIMSE source (sources/dimse.py)


class OrthancError(RuntimeError):
    pass


def orthanc_available() -> bool:
    return Path(ORTHANC_BINARY).exists() or shutil.which("Orthanc") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OrthancProcess:
    workdir: Path
    aet: str = "ORTHANC"
    # AE titles allowed to query and retrieve (C-FIND / C-GET), with the port each listens
    # on (Orthanc's modality entry needs one; C-GET answers on the association).
    peers: dict[str, int] = field(default_factory=lambda: {NODE_AET: 104})
    # Per peer, entries that replace the defaults of its DicomModalities entry, e.g.
    # {"SPE-NODE": {"AllowGet": False, "AllowMove": True}} for a PACS that sends by C-MOVE
    # only (to the peer's port, where the node's storage SCP listens during a retrieve).
    peer_options: dict[str, dict[str, object]] = field(default_factory=dict)
    dicom_port: int = 0
    http_port: int = 0
    # HTTP (REST, DICOMweb) needs this user's password even from this machine, so a local
    # user cannot read the images over loopback; None: no authentication (the test
    # launcher's, whose DICOMweb clients carry no credentials). Kept in orthanc.json (0600).
    http_password: str | None = field(default_factory=lambda: secrets.token_urlsafe(24))
    http_user: str = "spe"
    process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    @property
    def http_auth(self) -> tuple[str, str] | None:
        """Basic credentials for Orthanc's HTTP API (None when it asks for none)."""
        return None if self.http_password is None else (self.http_user, self.http_password)

    def start(self, timeout: float = 30.0) -> OrthancProcess:
        binary = ORTHANC_BINARY if Path(ORTHANC_BINARY).exists() else shutil.which("Orthanc")
        if not binary:
            raise OrthancError("Orthanc is not installed (Debian package `orthanc`)")
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.dicom_port = self.dicom_port or free_port()
        self.http_port = self.http_port or free_port()
        config = {
            "Name": "spe-orthanc",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            # HTTP from this machine only (Orthanc refuses other hosts' requests).
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": self.http_password is not None,
            "RegisteredUsers": ({self.http_user: self.http_password}
                                if self.http_password is not None else {}),
            # DICOM: only the peers below, from 127.0.0.1, calling Orthanc by its AE title.
            "DicomCheckCalledAet": True,
            "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowFindWorklist": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "DicomAlwaysAllowStore": False,
            "UnknownSopClassAccepted": False,
            "DicomModalities": {
                aet.lower(): {"AET": aet, "Host": "127.0.0.1", "Port": port,
                              "AllowEcho": True, "AllowFind": True, "AllowGet": True,
                              "AllowMove": False, "AllowStore": False,
                              "AllowFindWorklist": False, **self.peer_options.get(aet, {})}
                for aet, port in self.peers.items()
            },
            # No other way in or out: no WebDAV share, no Lua, no writing files from REST.
            "WebDavEnabled": False,
            "ExecuteLuaEnabled": False,
            "RestApiWriteToFileSystemEnabled": False,
            "StableAge": 1,
            # C-FIND and QIDO-RS answers are transcoded to this encoding (Orthanc's default,
            # Latin1, drops every other character); UTF-8 keeps the stored text as it is.
            "DefaultEncoding": "Utf8",
            "Plugins": [DICOMWEB_PLUGIN] if Path(DICOMWEB_PLUGIN).exists() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        cfg = self.workdir / "orthanc.json"
        # 0600 from the start: it holds the HTTP password.
        fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o600)  # an earlier run's file keeps its mode otherwise
            out.write(json.dumps(config, indent=2))
        log = open(self.workdir / "orthanc.log", "ab")  # noqa: SIM115 (kept open by the child)
        # DCMTK reads TCP_NODELAY=1 and disables Nagle: else each DIMSE round trip waits ~40 ms.
        self.process = subprocess.Popen([binary, str(cfg)], stdout=log, stderr=log,
                                        env={**os.environ, "TCP_NODELAY": "1"},
                                        umask=0o077)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise OrthancError(f"Orthanc exited at start; see {self.workdir / 'orthanc.log'}")
            try:
                if httpx.get(f"{self.http_url}/system", auth=self.http_auth,
                             timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise OrthancError(f"Orthanc did not answer within {timeout:.0f} s")

    def upload(self, paths: list[Path], client: httpx.Client | None = None) -> int:
        """POST each file to /instances; return how many Orthanc stored."""
        stored = 0
        with client or httpx.Client(timeout=30.0) as http:
            for path in paths:
                resp = http.post(f"{self.http_url}/instances", content=path.read_bytes(),
                                 headers={"Content-Type": "application/dicom"},
                                 auth=self.http_auth)
                if resp.status_code != 200:
                    raise OrthancError(f"Orthanc refused {path.name}: {resp.status_code}")
                stored += 1
        return stored

    def instance_count(self) -> int:
        stats = httpx.get(f"{self.http_url}/statistics", auth=self.http_auth,
                          timeout=10.0).json()
        return int(stats.get("CountInstances", 0))

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def __enter__(self) -> OrthancProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
