"""A folder's DICOM files staged with one read and one write each, layer 3 included.

`deidentify_tree` followed by layer 3 (`risk_apply.reduce_files`) read every file, wrote it,
read its headers back to measure the risk, then read and wrote it once more to take out
what the generalisation removes. Here each worker reads a file once, de-identifies it in
memory and keeps the dataset; the quasi-identifiers layer 3 measures are taken from the
held datasets (`extract.dicom_qi_values`), the generalisation and suppression are applied to
them (`HeldTree.apply`, the `risk_apply.HeldDicom` protocol), and `HeldTree.write` writes
each file once. The files, the counts and the measured records are those of the two-pass
way (tests/gateway/node/test_staging_once.py keeps that way as its reference).

Memory: a worker holds datasets up to its share of `hold_bytes` (by the input files'
sizes). A file beyond it is written at once, as `deidentify_tree` does, and layer 3 then
rewrites it in place (`risk_apply.apply_to_files`): the same output, slower. Two inputs
that give the same output name are written at once too, in walk order, so the first keeps
the name and the other is compared with it as `deidentify_tree` does.

Workers: `workers` processes (1: this one). Each keeps what it read, so the parent sends a
file's later steps to the process that holds it, over a pipe.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path, PurePosixPath
from typing import Any

from spe.anonymize.dicom.batch import (
    BatchError,
    _check_paths,
    _reason,
    _Worker,
    check_pixel_cleaner,
    write_new,
)
from spe.anonymize.dicom.files import walk
from spe.anonymize.dicom.options import Options
from spe.anonymize.dicom.writer import part10_bytes
from spe.anonymize.extract import dicom_qi_values, dicom_records
from spe.anonymize.processes import pool_context
from spe.anonymize.risk_apply import Applied, apply_to_files

#: Bytes of input files the workers of one staging hold in memory together, by default.
HOLD_BYTES = 1 << 30
CHUNK = 32  # files per request: small enough to spread the last ones over the workers

__all__ = ["HOLD_BYTES", "BatchError", "HeldTree", "hold_tree"]


@dataclass
class _Done:
    name: str  # input, relative to SRC
    output: str  # relative to DST
    worker: int
    headers: dict[str, Any]
    held: bool


@dataclass
class HeldTree:
    """The de-identified tree, held by its workers until `write`; counts as deidentify_tree's
    report gives them (`files`, `done`, `excluded`, `failed`), `seconds` for the reading."""

    dst: Path
    files: int = 0
    done: int = 0
    excluded: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    _outputs: dict[str, _Done] = field(default_factory=dict)
    _workers: list[_Channel] = field(default_factory=list)

    def records(self, skip_ids: set[str]) -> list[dict[str, Any]]:
        """`extract.load_dicom_extract` of the tree as it would be written now."""
        order = sorted(self._outputs, key=PurePosixPath)
        return dicom_records(((rel, self._outputs[rel].headers) for rel in order), skip_ids)

    def apply(self, gone: set[str], drop: list[str], applied: Applied) -> None:
        """`risk_apply._apply_dicom` on the tree as it would be written now."""
        written = []
        for rel in sorted(self._outputs, key=PurePosixPath):
            entry = self._outputs[rel]
            if not entry.held:
                written.append(self.dst / rel)
            elif str(entry.headers.get("PatientID", "")) in gone:
                applied.dicom_removed += 1
                del self._outputs[rel]
            elif present := [name for name in drop if name in entry.headers]:
                applied.dicom_rewritten += 1
                for name in present:
                    del entry.headers[name]
        if any(e.held for e in self._outputs.values()):
            for channel in self._workers:
                channel.ask("apply", gone, drop)
        if written:
            apply_to_files(written, gone, drop, applied)
            for path in written:
                rel = path.relative_to(self.dst).as_posix()
                if not path.exists():
                    del self._outputs[rel]
                else:
                    for name in drop:
                        self._outputs[rel].headers.pop(name, None)

    def write(self) -> None:
        """Write every held dataset; raises OSError when one cannot be written."""
        try:
            for channel in self._workers:
                channel.send("write")
            problems = [p for channel in self._workers for p in channel.receive()]
        finally:
            self.close()
        if problems:
            raise OSError(f"{len(problems)} staged DICOM file(s) could not be written: "
                          f"{problems[0]}")

    def close(self) -> None:
        for channel in self._workers:
            channel.close()
        self._workers = []


def hold_tree(src: Path, dst: Path, key: Any, *, workers: int = 1,
              hold_bytes: int = HOLD_BYTES,
              progress: Callable[[int, int], None] | None = None) -> HeldTree:
    """De-identify every candidate file under `src` for `dst` and hold the results (see the
    module doc). Raises `BatchError` for unusable folders, ImportError without the pixel
    cleaner; a bad input file never raises, it is reported."""
    real_src, real_dst = _check_paths(Path(src), Path(dst))
    check_pixel_cleaner()
    started = time.perf_counter()
    names = [p.relative_to(real_src).as_posix() for p in walk(real_src)]
    workers = max(1, min(workers, -(-len(names) // CHUNK) or 1))
    real_dst.mkdir(parents=True, exist_ok=True)
    tree = HeldTree(real_dst, files=len(names))
    config = (key, str(real_src), str(real_dst), hold_bytes // workers)
    tree._workers = ([_Channel.local(config)] if workers == 1
                     else [_Channel.spawn(config) for _ in range(workers)])
    try:
        results = _read_all(tree._workers, names, progress)
        _settle(tree, results)
    except BaseException:
        tree.close()
        raise
    tree.seconds = round(time.perf_counter() - started, 3)
    return tree


def _read_all(channels: list[_Channel], names: list[str],
              progress: Callable[[int, int], None] | None) -> list[tuple[int, tuple]]:
    """Every file's result with its worker's number, in walk order."""
    chunks = [names[i:i + CHUNK] for i in range(0, len(names), CHUNK)]
    by_chunk: dict[int, list[tuple]] = {}
    owner: dict[int, int] = {}
    if progress:
        progress(0, len(names))
    finished = 0
    if len(channels) == 1:
        for number, chunk in enumerate(chunks):
            owner[number] = 0
            by_chunk[number] = channels[0].ask("read", chunk)
            finished += len(chunk)
            if progress:
                progress(finished, len(names))
    else:
        queue = iter(enumerate(chunks))
        busy: dict[Connection, tuple[int, int, list[str]]] = {}
        for index, channel in enumerate(channels):
            item = next(queue, None)
            if item is not None:
                channel.send("read", item[1])
                owner[item[0]] = index
                busy[channel.conn] = (index, *item)
        while busy:
            for conn in wait(list(busy)):
                index, number, chunk = busy.pop(conn)  # type: ignore[index]
                try:
                    by_chunk[number] = channels[index].receive()
                except (EOFError, OSError) as exc:  # the process died
                    channels[index].dead = True
                    reason = f"worker process failed: {type(exc).__name__}"
                    by_chunk[number] = [("failed", reason, "", [], {}, False, "")] * len(chunk)
                    continue
                finished += len(chunk)
                if progress:
                    progress(finished, len(names))
                item = next(queue, None)
                if item is not None:
                    channels[index].send("read", item[1])
                    owner[item[0]] = index
                    busy[channels[index].conn] = (index, *item)
        for number, chunk in enumerate(chunks):  # left over when every process died
            by_chunk.setdefault(number, [("failed", "not processed: the worker processes "
                                          "stopped", "", [], {}, False, "")] * len(chunk))
    out: list[tuple[int, tuple]] = []
    for number, chunk in enumerate(chunks):
        worker = owner.get(number, 0)
        out += [(worker, (name, *result)) for name, result in zip(chunk, by_chunk[number],
                                                                  strict=True)]
    return out


def _settle(tree: HeldTree, results: list[tuple[int, tuple]]) -> None:
    """The outcomes, with the files written at once given their names, and two inputs of
    one output name written, in walk order as deidentify_tree would (the first keeps the
    name, the next is compared with it)."""
    from spe.anonymize.dicom.batch import commit_new

    seen: dict[str, int] = {}
    for _worker, (_name, status, _why, output, *_rest) in results:
        if status == "done":
            seen[output] = seen.get(output, 0) + 1
    outcomes: list[tuple[str, str, str]] = []
    for worker, (name, status, reason, output, _notes, headers, held, tmp) in results:
        if status == "done" and tmp:
            try:
                commit_new(Path(tmp), tree.dst / output)
            except Exception as exc:
                status, reason = "failed", _reason(exc)
        elif status == "done" and held and seen[output] > 1:
            status, reason = tree._workers[worker].ask("flush", output, name)
            held = False
        if status == "done" and output not in tree._outputs:
            tree._outputs[output] = _Done(name, output, worker, headers, held)
        outcomes.append((name, status, reason))
    for name, status, reason in sorted(outcomes):
        if status == "done":
            tree.done += 1
        elif status == "excluded":
            tree.excluded.append({"file": name, "reason": reason})
        else:
            tree.failed.append({"file": name, "reason": reason})


class _Holder:
    """One worker's state: its de-identifier and the datasets it holds, by output name."""

    def __init__(self, key: Any, src: str, dst: str, budget: int) -> None:
        options = replace(Options(), clean_pixel_data=True)  # as deidentify_tree's
        self.worker = _Worker(key, options, frozenset())
        self.src, self.dst, self.budget = Path(src), Path(dst), budget
        self.held: dict[str, Any] = {}
        self.pending: dict[tuple[str, str], Any] = {}  # by (output, input)
        self.spilled = 0

    def read(self, names: list[str]) -> list[tuple]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # malformed values must not flood the output
            return [self._read(name) for name in names]

    def _read(self, name: str) -> tuple:
        path = self.src / name
        try:
            ds, output, notes = self.worker.in_memory(path)
            headers = dicom_qi_values(ds)
            size = os.path.getsize(path)
            if size <= self.budget:
                # A second input of a held output name is held beside it (not under the
                # name): the parent writes both in walk order (`_settle`).
                self.budget -= size
                self.held.setdefault(output, ds)
                self.pending[(output, name)] = ds
                return ("done", "", output, notes, headers, True, "")
            # Beyond the budget: written now under a temporary name the parent gives its
            # final name in walk order (`_settle`), as deidentify_tree would have.
            final = self.dst / output
            final.parent.mkdir(parents=True, exist_ok=True)
            self.spilled += 1
            tmp = final.with_name(f".{final.name}.{os.getpid()}.{self.spilled}.partial")
            tmp.write_bytes(part10_bytes(ds))  # the bytes _write would write
        except Exception as exc:  # a third-party parser on untrusted files
            status, reason = self.worker.outcome_of(name, exc)
            return (status, reason, "", [], {}, False, "")
        return ("done", "", output, notes, headers, False, str(tmp))

    def flush(self, output: str, name: str) -> tuple[str, str]:
        """Write the dataset read from `name` now (its output name is shared)."""
        ds = self.pending.pop((output, name))
        if self.held.get(output) is ds:
            del self.held[output]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                write_new(ds, self.dst / output)
        except Exception as exc:
            return self.worker.outcome_of(name, exc)
        return "done", ""

    def apply(self, gone: set[str], drop: list[str]) -> None:
        for output in list(self.held):
            ds = self.held[output]
            if str(ds.get("PatientID", "")) in gone:
                del self.held[output]
                continue
            for name in drop:
                if name in ds:
                    delattr(ds, name)

    def write(self) -> list[str]:
        problems = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for output in sorted(self.held):
                try:
                    write_new(self.held[output], self.dst / output)
                except Exception as exc:
                    problems.append(f"{type(exc).__name__}: {str(exc)[:120]}")
        self.held.clear()
        self.pending.clear()
        return problems

    def handle(self, command: str, args: tuple) -> Any:
        if command == "read":
            return self.read(*args)
        if command == "flush":
            return self.flush(*args)
        if command == "apply":
            return self.apply(*args)
        if command == "write":
            return self.write()
        raise ValueError(command)


def _serve(conn: Connection, config: tuple) -> None:
    """A worker process: build the holder once, answer the parent's requests in order."""
    holder = None
    try:
        holder = _Holder(*config)
        conn.send(("ready", None))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"[:200]))
        return
    while True:
        try:
            command, args = conn.recv()
        except EOFError:
            return
        if command == "stop":
            return
        try:
            conn.send(("ok", holder.handle(command, args)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"[:200]))


class _Channel:
    """The parent's end of one worker: in this process, or a process over a pipe."""

    def __init__(self) -> None:
        self.holder: _Holder | None = None
        self.conn: Connection | None = None
        self.process: Any = None
        self.dead = False
        self._reply: Any = None

    @classmethod
    def local(cls, config: tuple) -> _Channel:
        channel = cls()
        channel.holder = _Holder(*config)
        return channel

    @classmethod
    def spawn(cls, config: tuple) -> _Channel:
        context = pool_context()
        parent, child = context.Pipe()
        channel = cls()
        channel.process = context.Process(target=_serve, args=(child, config), daemon=True)
        channel.process.start()
        child.close()
        channel.conn = parent
        status, detail = parent.recv()
        if status != "ready":
            channel.close()
            raise OSError(f"a staging worker could not start: {detail}")
        return channel

    def send(self, command: str, *args: Any) -> None:
        if self.holder is not None:
            self._reply = self.holder.handle(command, args)
            return
        if self.dead or self.conn is None:
            raise OSError("a staging worker process stopped")
        self.conn.send((command, args))

    def receive(self) -> Any:
        if self.holder is not None:
            return self._reply
        assert self.conn is not None
        status, value = self.conn.recv()
        if status != "ok":
            raise OSError(f"a staging worker failed: {value}")
        return value

    def ask(self, command: str, *args: Any) -> Any:
        self.send(command, *args)
        return self.receive()

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.send(("stop", ()))
            except (OSError, ValueError):
                pass
            self.conn.close()
            self.conn = None
        if self.process is not None:
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
            self.process = None
