"""Run a local Orthanc (Debian package `orthanc`, DICOMweb plugin) for the demo and tests.

Orthanc starts on free ports with its configuration and storage in a folder of ours, so
nothing of the system-wide service is touched. It holds the institution's identified images,
so it answers only whom it is told about: DICOM associations from the AE titles in `peers`
(the node's own, `SPE-NODE`, by default), calling from 127.0.0.1 and naming Orthanc's own
AE title; C-FIND and C-GET only (no C-STORE into it, no C-MOVE, no echo for strangers);
HTTP from 127.0.0.1 only. Orthanc 1.10 (Debian's) has no option to bind one address: its
sockets listen on every interface and refuse other hosts at association (DICOM) and at
request (HTTP), so a firewall in front is still wise. Its files are the running user's
only (umask 077).
"""

from __future__ import annotations

import json
import os
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
    dicom_port: int = 0
    http_port: int = 0
    process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    def start(self, timeout: float = 30.0) -> OrthancProcess:
        binary = ORTHANC_BINARY if Path(ORTHANC_BINARY).exists() else shutil.which("Orthanc")
        if not binary:
            raise OrthancError("Orthanc is not installed (Debian package `orthanc`)")
        self.workdir.mkdir(parents=True, exist_ok=True)
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
            "AuthenticationEnabled": False,
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
                              "AllowFindWorklist": False}
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
        cfg.write_text(json.dumps(config, indent=2))
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
                if httpx.get(f"{self.http_url}/system", timeout=1.0).status_code == 200:
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
                                 headers={"Content-Type": "application/dicom"})
                if resp.status_code != 200:
                    raise OrthancError(f"Orthanc refused {path.name}: {resp.status_code}")
                stored += 1
        return stored

    def instance_count(self) -> int:
        stats = httpx.get(f"{self.http_url}/statistics", timeout=10.0).json()
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
