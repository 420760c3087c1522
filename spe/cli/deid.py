"""`spe deid dicom` and `spe deid fhir`: de-identify a tree of files with a permit's key.

`standalone()` runs these commands without importing the rest of the CLI (the hub client,
settings, pydantic): `spe deid` is a batch tool whose start-up counts in every run, and the
other commands' imports took longer than pydicom's own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from spe.cli.failure import fail
from spe.cli.progress import console, task_bars
from spe.private_files import PRIVATE_UMASK

deid_app = typer.Typer(help="De-identify DICOM and FHIR files", no_args_is_help=True)


def standalone() -> None:
    """`spe deid ...` as the full CLI runs it: the same commands, help and exit codes."""
    root = typer.Typer(help="EHDS secure processing environment", no_args_is_help=True,
                       pretty_exceptions_enable=False)

    @root.callback()
    def _private_files() -> None:
        os.umask(PRIVATE_UMASK)  # as the full CLI: outputs hold data, created 0600

    root.add_typer(deid_app, name="deid")
    root()


def _permit_key(key_file: Path, permit: str):
    from spe.anonymize.pseudonyms import PermitKey

    try:
        return PermitKey.from_key_file(key_file, permit)
    except (OSError, ValueError) as exc:
        raise fail(str(exc)) from None


def _report_path(report: Path | None, dst: Path) -> None:
    """The report names input files, so it must not land in the de-identified output."""
    if report is None:
        return
    real_dst, real_report = dst.resolve(), report.resolve()
    if real_report == real_dst or real_dst in real_report.parents:
        raise fail("--report must not be inside DST: the report names the input files")


def _write_report(report: Path | None, data: dict) -> None:
    if report is None:
        return
    try:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write the report {report}: {exc.strerror or exc}") from None
    console.print(f"report written to {report}")


def _dicom_options(names: list[str]):
    from dataclasses import fields

    from spe.anonymize.dicom.options import Options

    valid = [f.name.replace("_", "-") for f in fields(Options)]
    chosen = {}
    for name in names:
        field_name = name.strip().lower().replace("-", "_")
        if field_name.replace("_", "-") not in valid:
            raise fail(f"unknown --option {name!r}; valid options: {', '.join(valid)}")
        chosen[field_name] = True
    try:
        return Options(**chosen)
    except ValueError as exc:
        raise fail(str(exc)) from None


@deid_app.command("dicom")
def deid_dicom(
    src: Annotated[Path, typer.Argument(help="Folder of DICOM files (read only)")],
    dst: Annotated[Path, typer.Argument(help="Output folder; must not be inside SRC")],
    key_file: Annotated[Path, typer.Option(
        help="Pseudonym key file: its bytes (at least 16; 32 random ones advised) are the "
             "secret")],
    permit: Annotated[str, typer.Option(help="Permit id; the key is derived per permit")] = "",
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="A PS3.15 option by name, e.g. retain-uids, clean-descriptors; "
                         "repeat for several")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Processes (default: one per core; 1 runs in this process)")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the report as JSON here")] = None,
    safe_private: Annotated[Path | None, typer.Option(
        help="JSON list of {creator, element} private attributes known safe; applied with "
             "--option retain-safe-private")] = None,
) -> None:
    """De-identify a tree of DICOM files (PS3.15 Basic Profile, keyed pseudonyms and UIDs).

    Outputs go to DST/<study UID>/<series UID>/<SOP instance UID>.dcm, all new UIDs. Images
    with burned-in text are masked, or excluded when no masking region is known. Files that
    cannot be de-identified are reported; the exit code is 0 unless the run itself fails.
    """
    from spe.anonymize.dicom.batch import BatchError, deidentify_tree
    from spe.anonymize.dicom.private import load_safe_private

    options = _dicom_options(option or [])
    if not src.is_dir():
        raise fail(f"source folder {src} does not exist or is not a folder")
    safe = frozenset()
    if safe_private is not None:
        if not options.retain_safe_private:
            raise fail("--safe-private needs --option retain-safe-private")
        try:
            safe = load_safe_private(safe_private)
        except ValueError as exc:
            raise fail(str(exc)) from None
    key = _permit_key(key_file, permit)
    _report_path(report, dst)
    try:
        with task_bars() as tick:
            result = deidentify_tree(
                src, dst, key, options, workers=workers, safe_private=safe,
                progress=lambda done, total: tick("deid dicom", done, total))
    except BatchError as exc:
        raise fail(str(exc)) from None
    except ImportError as exc:
        raise fail(str(exc), 1) from None
    except OSError as exc:
        raise fail(f"cannot write {dst}: {exc.strerror or exc}", 1) from None
    console.print(
        f"[green]done {result.done}[/green], excluded {len(result.excluded)}, "
        f"failed {len(result.failed)} of {result.files} files in {result.seconds:.1f} s "
        f"({result.files_per_second} files/s, {result.workers} workers) -> {dst}")
    for kind, items in (("excluded", result.excluded), ("failed", result.failed)):
        for item in items[:10]:
            console.print(f"  [yellow]{kind}[/yellow] {item['file']}: {item['reason']}")
        if len(items) > 10:
            console.print(f"  ... and {len(items) - 10} more {kind} (see --report)")
    _write_report(report, result.to_dict())


@deid_app.command("fhir")
def deid_fhir(
    src: Annotated[Path, typer.Argument(help="Folder of FHIR Bulk Data NDJSON files")],
    dst: Annotated[Path, typer.Argument(help="Output folder; must not be inside SRC")],
    key_file: Annotated[Path, typer.Option(
        help="Pseudonym key file: its bytes (at least 16; 32 random ones advised) are the "
             "secret")],
    permit: Annotated[str, typer.Option(help="Permit id; the key is derived per permit")] = "",
    rules: Annotated[Path | None, typer.Option(
        help="FHIRPath rule file (default: spe/anonymize/rules/fhir-default.json)")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Processes (default: one per core; 1 runs in this process)")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the report as JSON here")] = None,
) -> None:
    """De-identify FHIR NDJSON by a FHIRPath rule file; DST gets the same file names."""
    from spe.anonymize.fhir_batch import NdjsonError, deidentify_ndjson

    if not src.is_dir():
        raise fail(f"source folder {src} does not exist or is not a folder")
    if rules is not None and not rules.is_file():
        raise fail(f"FHIR rule file {rules} does not exist")
    key = _permit_key(key_file, permit)
    _report_path(report, dst)
    try:
        result = deidentify_ndjson(src, dst, key, rules, workers=workers)
    except NdjsonError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"{exc.filename or dst}: {exc.strerror or exc}", 1) from None
    table = Table(title="deid fhir")
    for column in ("type", "in", "out", "removed", "skipped"):
        table.add_column(column, justify="left" if column == "type" else "right")
    for kind, counts in sorted(result.types.items()):
        table.add_row(kind, *(str(counts[c]) for c in ("in", "out", "removed", "skipped")))
    console.print(table)
    console.print(f"{result.resources_out} of {result.resources_in} resources written to {dst} "
                  f"in {result.seconds:.1f} s; {len(result.skipped)} lines skipped")
    for item in result.skipped[:10]:
        console.print(f"  [yellow]skipped[/yellow] {item['file']} line {item['line']}: "
                      f"{item['reason']}")
    if len(result.skipped) > 10:
        console.print(f"  ... and {len(result.skipped) - 10} more (see --report)")
    _write_report(report, result.to_dict())


