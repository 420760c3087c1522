"""A job request as a Five Safes RO-Crate.

What a request crate holds (see the README, "Five Safes RO-Crates"): the code under
`code/` (the execution context: a `Dataset` that is also `SoftwareSourceCode`, whose
`mainEntity` is the entry point), a `CreateAction` the root `mentions` (its `agent` the
researcher, its `instrument` the code, its `object` optionally a `PropertyValue` "nodes"),
and the responsible project, the data permit: a `Project` the root names as
`sourceOrganization`, with a `PropertyValue` identifier "spe-permit" whose value is the
permit id. `write` makes one (the CLI's `spe job crate`); `read` takes one apart for the
hub, which then submits it as any job, under the same permit checks. `AssessAction`s a
requester put in the crate are dropped: only the checks this system makes are recorded."""

from __future__ import annotations

import json
import mimetypes
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spe.crate import terms
from spe.crate.bag import CrateError, pack, unpack
from spe.wire.code_archive import CodeArchiveError, pack_code

PERMIT_KEY = "spe-permit"


@dataclass(frozen=True)
class RequestedJob:
    crate_id: str  # the bag's External-Identifier
    permit: str
    entry: str
    code: bytes  # a spe.wire.code_archive tar.gz of the crate's code/
    nodes: list[str] | None
    requester: str  # the CreateAction's agent, as the crate names it (not trusted)


def _ref(id_: str) -> dict[str, str]:
    return {"@id": id_}


def _one(refs: list[dict[str, str]]) -> dict[str, str] | list[dict[str, str]]:
    # RO-Crate 1.3 recommends a single value, not a one-element array.
    return refs[0] if len(refs) == 1 else refs


def file_entity(id_: str, path: Path, **more: Any) -> dict[str, Any]:
    fmt = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return {"@id": id_, "@type": "File", "name": path.name, "encodingFormat": fmt,
            "contentSize": str(path.stat().st_size), **more}


def metadata(code_dir: Path, *, permit: str, entry: str, nodes: list[str] | None,
             requester: str, name: str | None = None) -> dict[str, Any]:
    files = sorted(p.relative_to(code_dir).as_posix() for p in code_dir.rglob("*")
                   if p.is_file())
    action = f"#request-{uuid.uuid4()}"
    project = f"#project-{permit}"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    main = terms.CODE + entry
    graph: list[dict[str, Any]] = [
        {"@id": "ro-crate-metadata.json", "@type": "CreativeWork", "about": _ref("./"),
         "conformsTo": _ref(terms.RO_CRATE)},
        {"@id": "./", "@type": "Dataset", "conformsTo": _ref(terms.FIVE_SAFES),
         "name": name or f"Job request under data permit {permit}",
         "description": f"Run {entry} over the extracts of data permit {permit}.",
         "datePublished": now, "license": _ref(terms.LICENCE),
         "mainEntity": _ref(main), "executionType": "script",
         "mentions": _ref(action), "sourceOrganization": _ref(project),
         "hasPart": _ref(terms.CODE)},
        {"@id": terms.FIVE_SAFES, "@type": ["CreativeWork", "Profile"],
         "name": "Five Safes RO-Crate profile", "version": "0.5"},
        terms.LICENCE_ENTITY,
        {"@id": terms.CODE, "@type": "Dataset", "name": "The job's code",
         "description": "The folder the job runs in, as /code in the sandbox.",
         "hasPart": _one([_ref(terms.CODE + f) for f in files])},
        *(file_entity(terms.CODE + f, code_dir / f, description="Part of the job's code.")
          for f in files if f != entry),
        {**file_entity(main, code_dir / entry), "@type": ["File", "SoftwareSourceCode"],
         "description": "The entry point the sandbox runs.",
         "programmingLanguage": _ref(terms.PYTHON)},
        terms.PYTHON_ENTITY,
        {"@id": action, "@type": "CreateAction", "name": f"Run {entry}",
         "actionStatus": terms.POTENTIAL, "agent": _ref("#requester"),
         "instrument": _ref(main), **({"object": _ref("#nodes")} if nodes else {})},
        {"@id": "#requester", "@type": "Person", "name": requester,
         "memberOf": _ref(project)},
        {"@id": project, "@type": "Project", "name": f"Data permit {permit}",
         "identifier": _ref(f"#permit-{permit}")},
        {"@id": f"#permit-{permit}", "@type": "PropertyValue", "name": PERMIT_KEY,
         "value": permit},
    ]
    if nodes:
        graph.append({"@id": "#nodes", "@type": "PropertyValue", "name": "nodes",
                      "value": ",".join(nodes)})
    return {"@context": terms.CONTEXTS, "@graph": graph}


def write(code_dir: Path | str, *, permit: str, entry: str = "main.py",
          nodes: list[str] | None = None, requester: str = "researcher") -> bytes:
    """A zipped bag of a request crate for the code in `code_dir`."""
    code_dir = Path(code_dir)
    if not (code_dir / entry).is_file():
        raise CrateError(f"{code_dir / entry}: the entry point is not a file there")
    with tempfile.TemporaryDirectory(prefix="spe-crate-") as tmp:
        payload = Path(tmp) / "crate"
        shutil.copytree(code_dir, payload / terms.CODE, symlinks=True)
        meta = metadata(code_dir, permit=permit, entry=entry, nodes=nodes,
                        requester=requester)
        (payload / "ro-crate-metadata.json").write_text(json.dumps(meta, indent=2))
        return pack(payload, name=f"request-{permit}")


def _by_id(graph: list[Any]) -> dict[str, dict[str, Any]]:
    return {e["@id"]: e for e in graph if isinstance(e, dict) and isinstance(e.get("@id"), str)}


def _ids(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [v["@id"] for v in values if isinstance(v, dict) and isinstance(v.get("@id"), str)]


def _types(entity: dict[str, Any]) -> set[str]:
    t = entity.get("@type", [])
    return set(t if isinstance(t, list) else [t])


def read(data: bytes) -> RequestedJob:
    """The job a zipped request crate asks for; a `CrateError` says what is missing."""
    with tempfile.TemporaryDirectory(prefix="spe-crate-") as tmp:
        root, crate_id = unpack(data, Path(tmp))
        try:
            meta = json.loads((root / "ro-crate-metadata.json").read_text())
        except FileNotFoundError:
            raise CrateError("the bag's data/ has no ro-crate-metadata.json") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CrateError(f"ro-crate-metadata.json is not JSON: {exc}") from None
        graph = meta.get("@graph") if isinstance(meta, dict) else None
        if not isinstance(graph, list):
            raise CrateError("ro-crate-metadata.json has no @graph")
        ents = _by_id(graph)
        crate = ents.get("./")
        if crate is None:
            raise CrateError("the crate has no root data entity ./")
        profiles = _ids(crate.get("conformsTo"))
        if not set(profiles) & set(terms.FIVE_SAFES_ACCEPTED):
            raise CrateError("the root does not conform to the Five Safes RO-Crate profile "
                             f"({' or '.join(terms.FIVE_SAFES_ACCEPTED)})")
        permit = _permit(ents, crate)
        main = (_ids(crate.get("mainEntity")) or [""])[0]
        if not main.startswith(terms.CODE) or "File" not in _types(ents.get(main, {})):
            raise CrateError(f"the root's mainEntity must be the entry point, a File under "
                             f"{terms.CODE}")
        code_dir = (root / terms.CODE).resolve()
        if not code_dir.is_relative_to(root.resolve()) or not (root / main).is_file():
            raise CrateError(f"the entry point {main} is not in the crate")
        try:
            code = pack_code(code_dir)
        except CodeArchiveError as exc:
            raise CrateError(str(exc)) from None
        action = next((ents[i] for i in _ids(crate.get("mentions"))
                       if "CreateAction" in _types(ents.get(i, {}))), None)
        if action is None:
            raise CrateError("the root mentions no CreateAction (the requested run)")
        nodes = None
        for i in _ids(action.get("object")):
            if ents.get(i, {}).get("name") == "nodes":
                nodes = [n.strip() for n in str(ents[i].get("value", "")).split(",")
                         if n.strip()] or None
        agent = ents.get((_ids(action.get("agent")) or [""])[0], {})
        return RequestedJob(crate_id=crate_id, permit=permit,
                            entry=main.removeprefix(terms.CODE), code=code, nodes=nodes,
                            requester=str(agent.get("name", "")))


def _permit(ents: dict[str, dict[str, Any]], crate: dict[str, Any]) -> str:
    project = ents.get((_ids(crate.get("sourceOrganization")) or [""])[0])
    if project is None or "Project" not in _types(project):
        raise CrateError("the root names no responsible project (sourceOrganization: a "
                         "Project, the data permit)")
    for i in _ids(project.get("identifier")):
        value = ents.get(i, {})
        if value.get("name") == PERMIT_KEY and isinstance(value.get("value"), str):
            return value["value"]
    raise CrateError(f"the project has no identifier PropertyValue named {PERMIT_KEY!r} "
                     "whose value is the permit id")
