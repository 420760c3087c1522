"""Many small files are one output.

A job that writes each record to a file of its own (277 files of one patient each) passes
every check file by file. Files of the same shape (a table's header, a JSON document's
keys, the pattern of a text's first line) are put together: `same_shape_files` or more of
them go to review, and their contents are checked again as one table or one text, so the
rows that repeat across files, the ids or the small counts are found. Past `review_files`
files in all, every file goes to review: nobody can tell what so many outputs say together.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

from spe.airlock.prose import line_shape

MAX_BYTES = 64 * 1024  # larger files are outputs of their own, not pieces of one


@dataclass
class Piece:
    path: str
    ext: str
    text: str


def shape_of(piece: Piece) -> tuple[str, ...] | None:
    lines = [line.strip() for line in piece.text.split("\n") if line.strip()]
    if not lines:
        return None
    if piece.ext in {"csv", "tsv"}:
        return ("table", piece.ext, lines[0].lower())
    if piece.ext == "json":
        try:
            data = json.loads(piece.text)
        except (ValueError, RecursionError):
            return None
        if isinstance(data, list) and data and isinstance(data[0], dict):
            data = data[0]
        if isinstance(data, dict):
            return ("json", *sorted(map(str, data)))
        return ("json", type(data).__name__)
    first = line_shape(lines[0])
    return ("text", piece.ext, *(first or ("w",)), str(min(len(lines), 10)))


def same_shape(pieces: list[Piece], at_least: int) -> list[list[Piece]]:
    groups: dict[tuple[str, ...], list[Piece]] = defaultdict(list)
    for piece in pieces:
        if (shape := shape_of(piece)) is not None:
            groups[shape].append(piece)
    return [group for group in groups.values() if len(group) >= at_least]


def joined(group: list[Piece]) -> tuple[str, str]:
    """(kind, content) of a group read as one output: a table's rows under one header, a
    JSON list of the documents, or the texts one after another."""
    first = group[0]
    if first.ext in {"csv", "tsv"}:
        header, *_ = first.text.split("\n", 1)
        rows = [header.rstrip("\r")]
        for piece in group:
            rows += [line for line in piece.text.split("\n")[1:] if line.strip()]
        return first.ext, "\n".join(rows) + "\n"
    if first.ext == "json":
        docs = [json.loads(p.text) for p in group]
        flat = [d for doc in docs for d in (doc if isinstance(doc, list) else [doc])]
        return "json", json.dumps(flat)
    return "txt", "\n".join(p.text.rstrip("\n") for p in group) + "\n"
