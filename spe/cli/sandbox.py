"""`spe sandbox run`: one job in the bubblewrap sandbox, by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from spe.cli.failure import fail

sandbox_app = typer.Typer(help="The job sandbox (bubblewrap)", no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    return fail(message)  # one line however long, brackets in paths not read as markup


def _dir(help_: str):
    return typer.Option(help=help_, file_okay=False, resolve_path=False)


@sandbox_app.command("run")
def sandbox_run(
    extract: Annotated[Path, _dir("The extract, mounted read-only at /extract")],
    code: Annotated[Path, _dir("The job's code, mounted read-only at /code")],
    output: Annotated[Path, _dir("Where the job writes, mounted at /output")],
    entry: Annotated[str, typer.Option(help="The script to run, relative to --code")]
    = "main.py",
    scratch: Annotated[Path | None, _dir(
        "A scratch directory for /scratch (default: a tmpfs of --scratch-mb)")] = None,
    cpu_seconds: Annotated[int | None, typer.Option(help="CPU seconds per process")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="Address space per process, MB")]
    = None,
    processes: Annotated[int | None, typer.Option(help="Processes at once")] = None,
    open_files: Annotated[int | None, typer.Option(help="Open files per process")] = None,
    file_size_mb: Annotated[int | None, typer.Option(help="Largest file, MB")] = None,
    output_mb: Annotated[int | None, typer.Option(help="Total size of /output, MB")] = None,
    scratch_mb: Annotated[int | None, typer.Option(help="Size of /scratch, MB")] = None,
    wall_seconds: Annotated[float | None, typer.Option(help="Wall-clock seconds")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Run one job in the sandbox; exit 0 if it succeeded, 1 if not, 2 if it could not run."""
    from spe.sandbox import Limits, SandboxError, run

    given = {"cpu_seconds": cpu_seconds, "memory_mb": memory_mb, "processes": processes,
             "open_files": open_files, "file_size_mb": file_size_mb, "output_mb": output_mb,
             "scratch_mb": scratch_mb, "wall_seconds": wall_seconds}
    try:
        limits = Limits(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
                             for e in exc.errors())
        raise _fail(f"invalid limits: {problems}") from None
    try:
        result = run(code, entry, extract, output, limits, scratch_dir=scratch)
    except SandboxError as exc:  # SandboxUnavailable too
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print(Console(), result, limits)
    if result.state != "succeeded":
        raise typer.Exit(1)


def _print(out: Console, result, limits) -> None:
    colour = "green" if result.state == "succeeded" else "red"
    table = Table(title="sandbox job", show_header=False)
    table.add_column("")
    table.add_column("")
    table.add_row("state", f"[{colour}]{result.state}[/{colour}]")
    table.add_row("exit code", "-" if result.exit_code is None else str(result.exit_code))
    if result.signal is not None:
        from spe.sandbox.runner import signal_name

        table.add_row("signal", f"{signal_name(result.signal)} ({result.signal})")
    if result.limits_hit:
        table.add_row("limit hit", f"{', '.join(result.limits_hit)} "
                      f"(known from: {result.limit_source})")
    table.add_row("wall time", f"{result.wall_seconds:.2f} s (limit {limits.wall_seconds:g})")
    table.add_row("cpu time", f"{result.cpu_seconds:.2f} s")
    table.add_row("output", f"{result.output_bytes:,} bytes (quota {limits.output_mb} MB)")
    table.add_row("process limit", f"{limits.processes} by {result.processes_enforced_by}")
    table.add_row("memory limit", f"{limits.memory_mb} MB by {result.memory_enforced_by}")
    if result.leftover_processes:
        table.add_row("[red]left running[/red]", str(result.leftover_processes))
    out.print(table)
    if result.outputs:
        files = Table(title="/output")
        for column in ("path", "kind", "size"):
            files.add_column(column, justify="right" if column == "size" else "left")
        for e in result.outputs:
            kind = f"[yellow]symlink -> {e.target}[/yellow]" if e.kind == "symlink" else e.kind
            files.add_row(e.path, kind, f"{e.size:,}")
        out.print(files)
        if result.outputs_truncated:
            out.print("(listing truncated)")
    for name, tail, total in (("stdout", result.stdout_tail, result.stdout_bytes),
                              ("stderr", result.stderr_tail, result.stderr_bytes)):
        if tail:
            note = f" (last {len(tail.encode()):,} of {total:,} bytes)" if total > len(
                tail.encode()) else ""
            out.rule(f"{name}{note}")
            out.print(tail.rstrip("\n"), markup=False, highlight=False)
