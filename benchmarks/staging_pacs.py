"""Staging throughput from a PACS against staging from a folder of the same files.

Generates a synthetic site, loads its DICOM files into a local Orthanc (Debian packages
`orthanc`, `orthanc-dicomweb`) that refuses C-GET to the node and allows C-MOVE, then
stages one pseudonymised permit's extract (gateway.node.jobs.staging, one worker) three
ways in the same run: from the folder (the baseline), over DICOMweb (WADO-RS) and over DIMSE
(C-MOVE to the node's Storage SCP). Prints the DICOM staging seconds and files per second
of each and their ratio to the folder's. Nothing is asserted.

    python benchmarks/staging_pacs.py [--patients 40]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from gateway.node.config import NodeConfig
from gateway.node.jobs.staging import stage
from gateway.node.orthanc_process import OrthancProcess, free_port
from spe.policy.service import make_policy_service
from spe.settings import Settings
from spe.synth import generate


@dataclass
class Permit:
    pid: str
    form: str = "pseudonymised"
    status: str = "issued"
    start: date = date(2020, 1, 1)
    end: date = date(2099, 12, 31)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out, institutions=1, patients=args.patients, seed=11)
        root = out / "site-a"
        files = sorted((root / "dicom").rglob("*.dcm"))
        store = free_port()
        pacs = OrthancProcess(out / "orthanc", peers={"SPE-NODE": store}, http_password=None,
                              peer_options={"SPE-NODE": {"AllowGet": False,
                                                         "AllowMove": True}})
        pacs.start()
        try:
            pacs.upload(files)
            settings = Settings(data_dir=out / "var", secret_key="benchmark-" + "x" * 40)
            policy = make_policy_service(settings)
            specs = {
                "folder": f"folder:{root / 'dicom'}",
                "WADO-RS": f"dicomweb:{pacs.dicomweb_url}",
                "C-MOVE": (f"dimse://{pacs.aet}@127.0.0.1:{pacs.dicom_port}?retrieve=move&"
                           f"listen=127.0.0.1:{store}"),
            }
            seconds = {}
            for name, spec in specs.items():
                node = NodeConfig("site-a", "Site A", "sqlite://", dicom=spec,
                                  fhir=f"ndjson:{root / 'fhir'}")
                staged = stage(Permit("P-BENCH"), node=node, settings=settings, policy=policy,
                               cache_dir=out / f"cache-{name}", data_version="v1")
                dicom = staged.report["counts"]["dicom"]
                seconds[name] = dicom["seconds"]
                print(f"{name:8} {dicom['files_in']} files in {dicom['seconds']:.2f} s: "
                      f"{dicom['files_in'] / max(dicom['seconds'], 1e-9):.0f} files/s, "
                      f"{dicom['seconds'] / max(seconds['folder'], 1e-9):.2f} x the folder's "
                      "time")
        finally:
            pacs.stop()


if __name__ == "__main__":
    main()
