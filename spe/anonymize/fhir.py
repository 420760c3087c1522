"""Layers 1 and 2 for FHIR R4: de-identify resources by a rule file of FHIRPath paths.

The rule file follows Microsoft's FHIR-Tools-for-Anonymization: an ordered list of
`{"path": <FHIRPath>, "method": <method>, ...}` and a default method for every node no rule
matches. Methods:

    keep        leave the node as it is
    redact      remove the node (and what it contains)
    dateshift   move a date by the patient's keyed offset (`PermitKey.date_shift_days`)
    cryptohash  replace by a keyed pseudonym: "kind" and "length" for `PermitKey.pseudonym`,
                or "format": "dicom-uid" for `PermitKey.uid` (keeping a "urn:oid:" prefix)
    generalize  "precision": "year"|"month" for dates (with "dateshift": true to shift first),
                or "prefix": N to keep the first N characters (postal codes)
    substitute  replace by the rule's fixed "value"

How a path finds nodes: each rule's path is evaluated by fhirpathpy (with its R4 model, so
choice types and `ofType` work) on the original resource, asking for its internal nodes
rather than plain values. A node carries its full path with list indices
("Patient.name[0].given[1]"); that path is turned into a location in the dict and the value
found there is checked against the node, so a node that cannot be placed is an error rather
than an element silently left in. fhirpathpy's `|` hands back nodes without their paths, so
the branches of a top-level union are evaluated one by one. For speed, a branch of the usual
forms runs as a plan of `spe.anonymize.fhir_paths` (fhirpathpy's steps transliterated, one
shared `descendants()` walk per resource), falling back to fhirpathpy wherever the plan is
unsure; `spe.anonymize.fhir_reference` keeps the engine as it was, and the tests hold this
one's output to it byte for byte. Two conveniences are rewritten
before evaluation: `nodesByType('HumanName')` means `descendants().ofType(HumanName)`, and a
branch that starts with `Resource.` or `DomainResource.` applies to every resource type.

Loading a rule file checks each rule: known method and settings, a path that parses as a
whole (fhirpathpy's parser on its own skips what it cannot read), and a `Type.element...`
head that exists in R4, since a misspelt path would match nothing and leave data in. The
errors are ValueErrors naming the rule by position (from 1), path and method.

Which rule acts on a node: rules are tried in order and the first one that matches a node
owns it and everything below it, except descendants an earlier rule already owns (so
"keep Patient.address.country" followed by "redact Patient.address" keeps the country and
removes the rest). Elements left empty are removed, as FHIR forbids empty elements.

Free text is removed by default when the rule file has a "free_text" section (the default
rules do): every element whose R4 type, read from fhir.resources' models
(`spe.anonymize.fhir_types`), is string, markdown, xhtml or base64Binary goes, wherever it
sits, unless a rule changes it (cryptohash, generalize, substitute, dateshift) or an entry of
the section's "keep" list names it (`Allowance`: a data type's element such as
Coding.display, or a resource's path such as Patient.address.country, each with its reason
and optionally the elements and code systems that must stand beside it). A rule's keep is
not enough. An element the R4 model does not have goes as well, since nothing reviewed it.
What goes but must be there (a required element or choice, or an element of the "masked"
list, Organization.name) is marked with FHIR's data-absent-reason extension, code "masked",
where its parent stays; a required choice of text also gets the value "masked", since
fhir.resources wants a value there. The walk learns each node's type by dictionary look-ups
as it goes, so the default costs next to nothing beside the FHIRPath rules.

Done by the engine, whatever the rules say: `resourceType` stays; every resource id becomes
`key.pseudonym("<type>/<id>", "fhir-id", 32)` in lower case, and every Reference.reference is
rewritten to the same pseudonym ("Patient/<id>", absolute URLs and "urn:uuid:<id>" of a
resource in the same batch become "<type>/<pseudonym>"; a "urn:uuid:" whose target is not in
the batch becomes a keyed UUID; a reference that cannot be read is removed). A primitive's
extension (`_birthDate`) goes with the primitive unless its rule is keep.

Which patient a resource belongs to decides its date shift: the Patient's MRN (the
identifier typed "MR", or whose system contains "mrn"), which equals the DICOM PatientID, so
images and records shift alike. Other resources find their Patient through `subject` or
`patient` (else any reference to a Patient). Without an MRN the key is "Patient/<id>";
a resource with no patient at all shifts by its own "<type>/<id>".
"""

from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import fhirpathpy
from antlr4 import CommonTokenStream, InputStream
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.models import models as _fhirpath_models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from spe.anonymize import fhir_types
from spe.anonymize.fhir_paths import Node, Plan, Unsure, Walk, compile_plan
from spe.anonymize.pseudonyms import PermitKey, shift_fhir

DEFAULT_RULES = Path(__file__).parent / "rules" / "fhir-default.json"
METHODS = ("keep", "redact", "dateshift", "cryptohash", "generalize", "substitute")
ID_KIND = "fhir-id"
ID_LENGTH = 32
_MODEL = _fhirpath_models["r4"]
_PARAMS = {  # the keys each method accepts besides path, method and comment
    "keep": set(),
    "redact": set(),
    "dateshift": set(),
    "cryptohash": {"kind", "length", "format"},
    "generalize": {"precision", "prefix", "dateshift"},
    "substitute": {"value"},
}
_DROP = object()
_MISSING = object()
_MEMO = 100_000  # entries of a de-identifier's memo of pseudonyms or date shifts
Location = tuple[str | int, ...]


@dataclass(frozen=True)
class Rule:
    index: int
    path: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    comment: str = ""
    # One (resource type or None, compiled expression) per branch of a top-level union.
    branches: tuple[tuple[str | None, Any], ...] = field(default=(), repr=False,
                                                         compare=False)
    # The same branches as `fhir_paths` plans (None where a branch has none).
    plans: tuple[Plan | None, ...] = field(default=(), repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"rule {self.index} ({self.path!r}, {self.method})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Compiled FHIRPath does not pickle: a process pool's worker compiles it again.
        raw = {"path": self.path, "method": self.method, **self.params, "comment": self.comment}
        return _parse_rule, (self.index, raw, "FHIR rules")

    def evaluate(self, resource: dict[str, Any]) -> list[Any]:
        found: list[Any] = []
        for root, compiled in self.branches:
            if root is not None and resource.get("resourceType") != root:
                continue
            try:
                found.extend(compiled(resource, {}))
            except Exception as exc:  # fhirpathpy raises bare Exceptions
                raise ValueError(f"{self.name}: cannot evaluate on "
                                 f"{resource.get('resourceType')}: {exc}") from exc
        return found

    def branches_for(self, kind: str) -> tuple[tuple[Any, Plan | None], ...]:
        """The (compiled, plan) of the branches that apply to a resource type."""
        return tuple((compiled, plan) for (root, compiled), plan
                     in zip(self.branches, self.plans, strict=True)
                     if root is None or root == kind)

    def nodes(self, walk: Walk, branches: tuple[tuple[Any, Plan | None], ...]) -> list[Any]:
        """What `evaluate` gives for `branches_for(the resource's type)`, from the
        branches' plans where they vouch for it, else from fhirpathpy."""
        resource = walk.resource
        kind = resource.get("resourceType")
        found: list[Any] = []
        for compiled, plan in branches:
            if plan is not None:
                try:
                    found.extend(plan.evaluate(walk))
                    continue
                except Unsure:
                    pass
            try:
                found.extend(compiled(resource, {}))
            except Exception as exc:  # fhirpathpy raises bare Exceptions
                raise ValueError(f"{self.name}: cannot evaluate on {kind}: {exc}") from exc
        return found


DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
MASKED = {"extension": [{"url": DATA_ABSENT, "valueCode": "masked"}]}


@dataclass(frozen=True)
class Allowance:
    """One entry of the free-text allow-list: an element kept, and why.

    `path` is a FHIR type and JSON element names: a data type ("Coding.display") means the
    element wherever that type sits, a resource ("Patient.address.country") that one place
    (a backbone that nests in itself, QuestionnaireResponse.item.item, is its first path).
    `requires` names elements beside it that must be present, and `systems` the code
    systems the `system` beside it must be (an entry ending in "/" is a prefix)."""

    path: str
    reason: str
    requires: tuple[str, ...] = ()
    systems: tuple[str, ...] = ()

    def allows(self, holder: dict[str, Any]) -> bool:
        if any(holder.get(name) in (None, "", [], {}) for name in self.requires):
            return False
        if not self.systems:
            return True
        system = holder.get("system")
        return isinstance(system, str) and any(
            system.startswith(s) if s.endswith("/") else system == s for s in self.systems)


@dataclass(frozen=True)
class FreeText:
    """Free text removed by default: every element whose R4 type is in
    `fhir_types.FREE_TEXT` that no rule changes and the `keep` list does not name. An element
    in `masked`, or a required one, that goes is marked absent ("masked", FHIR's
    data-absent-reason) where its parent stays, so the resource stays valid."""

    keep: tuple[Allowance, ...]
    masked: tuple[Allowance, ...] = ()
    # (owner type, element) and element paths -> the entry; filled by `from_dict`.
    keep_by_type: dict[tuple[str, str], Allowance] = field(default_factory=dict)
    keep_by_path: dict[str, Allowance] = field(default_factory=dict)
    masked_by_type: dict[tuple[str, str], Allowance] = field(default_factory=dict)
    masked_by_path: dict[str, Allowance] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> FreeText:
        where = f"{source}: free_text"
        if not isinstance(data, dict) or data.get("method", "redact") != "redact":
            raise ValueError(f"{where}: expected an object whose method is redact")
        unknown = set(data) - {"method", "keep", "masked", "comment"}
        if unknown:
            raise ValueError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
        lists = {}
        for name in ("keep", "masked"):
            entries = data.get(name, [])
            if not isinstance(entries, list):
                raise ValueError(f"{where}: {name} must be a list")
            lists[name] = tuple(_allowance(f"{where}.{name}[{i}]", raw, name == "keep")
                                for i, raw in enumerate(entries, 1))
        out = cls(lists["keep"], lists["masked"])
        for name in ("keep", "masked"):
            for entry in lists[name]:
                head, _, rest = entry.path.partition(".")
                if fhir_types.is_resource(head):
                    getattr(out, f"{name}_by_path")[entry.path] = entry
                else:
                    getattr(out, f"{name}_by_type")[(head, rest)] = entry
        return out

    def find(self, by_type: dict[tuple[str, str], Allowance], by_path: dict[str, Allowance],
             owner: str, name: str, path: str) -> Allowance | None:
        entry = by_path.get(path)
        if entry is None and by_type:
            for kind in fhir_types.bases(owner):
                entry = by_type.get((kind, name))
                if entry is not None:
                    break
        return entry


def _allowance(where: str, raw: Any, text_only: bool) -> Allowance:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected an object, got {raw!r}")
    unknown = set(raw) - {"path", "reason", "requires", "systems"}
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    path, reason = raw.get("path"), raw.get("reason")
    if not isinstance(path, str) or not isinstance(reason, str) or len(reason) < 20:
        raise ValueError(f"{where}: needs a \"path\" and a \"reason\" (a sentence)")
    try:
        owner, element = fhir_types.resolve(path)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if "." in path.partition(".")[2] and not fhir_types.is_resource(path.partition(".")[0]):
        raise ValueError(f"{where}: {path!r}: a data type's entry names one of its elements")
    if text_only and not element.free_text:
        raise ValueError(f"{where}: {path!r} is {element.type}, not free text")
    requires, systems = raw.get("requires", []), raw.get("systems", [])
    if not all(isinstance(x, str) for x in [*requires, *systems]):
        raise ValueError(f"{where}: requires and systems are lists of strings")
    siblings = fhir_types.elements(owner) or {}
    missing = [n for n in [*requires, *(["system"] if systems else [])] if n not in siblings]
    if missing:  # a condition on an element that cannot be there would never hold
        raise ValueError(f"{where}: {owner} has no element {missing[0]!r}")
    return Allowance(path, reason, tuple(requires), tuple(systems))


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    default: str = "keep"
    free_text: FreeText | None = None

    @classmethod
    def load(cls, path: str | PathLike[str] = DEFAULT_RULES) -> RuleSet:
        file = Path(path)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"FHIR rule file {file} is not valid JSON: {exc}") from None
        return cls.from_dict(data, source=str(file))

    @classmethod
    def from_dict(cls, data: Any, source: str = "FHIR rules") -> RuleSet:
        if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
            raise ValueError(f"{source}: expected an object with a \"rules\" list")
        default = data.get("default", "keep")
        if default not in ("keep", "redact"):
            raise ValueError(f"{source}: default must be keep or redact, not {default!r}")
        # Numbered from 1, as an operator counts the rules of the file.
        rules = data["rules"]
        free_text = None
        if data.get("free_text") is not None:
            free_text = FreeText.from_dict(data["free_text"], source)
        return cls(tuple(_parse_rule(i, r, source) for i, r in enumerate(rules, 1)), default,
                   free_text)


def _parse_rule(index: int, raw: Any, source: str) -> Rule:
    where = f"{source}: rule {index}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected an object, got {raw!r}")
    path, method = raw.get("path"), raw.get("method")
    where = f"{where} ({path!r}, {method})"
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"{where}: \"path\" must be a non-empty FHIRPath expression")
    if method not in METHODS:
        raise ValueError(f"{where}: unknown method {method!r}; expected one of "
                         f"{', '.join(METHODS)}")
    params = {k: v for k, v in raw.items() if k not in ("path", "method", "comment")}
    unknown = set(params) - _PARAMS[method]
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))} "
                         f"for {method}")
    _check_params(where, method, params)
    branches = []
    for part in _split_union(path, where):
        expression, root = _rewrite(part)
        try:
            _check_syntax(expression)
        except ValueError as exc:
            raise ValueError(f"{where}: malformed FHIRPath {part!r}: {exc}") from None
        try:
            _check_elements(expression, root)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        try:
            compiled = fhirpathpy.compile(expression, model=_MODEL,
                                          options={"returnRawData": True})
            # A dry run catches what parsing lets through: unknown functions, wrong arity.
            compiled({"resourceType": root or "Patient", "id": "x"}, {})
        except Exception as exc:
            raise ValueError(f"{where}: malformed FHIRPath {part!r}: {exc}") from None
        branches.append((root, compiled))
    plans = tuple(compile_plan(compiled.parsedPath) for _, compiled in branches)
    return Rule(index, path, method, params, str(raw.get("comment", "")), tuple(branches),
                plans)


def _check_params(where: str, method: str, params: dict[str, Any]) -> None:
    if method == "cryptohash":
        fmt = params.get("format", "pseudonym")
        if fmt not in ("pseudonym", "dicom-uid"):
            raise ValueError(f"{where}: format must be pseudonym or dicom-uid, not {fmt!r}")
        length = params.get("length", 16)
        if not isinstance(length, int) or not 8 <= length <= 52:
            raise ValueError(f"{where}: length must be an integer 8..52, not {length!r}")
        if not isinstance(params.get("kind", "id"), str):
            raise ValueError(f"{where}: kind must be a string")
    elif method == "generalize":
        if ("precision" in params) == ("prefix" in params):
            raise ValueError(f"{where}: give exactly one of precision (dates) or prefix")
        if params.get("precision", "year") not in ("year", "month"):
            raise ValueError(f"{where}: precision must be year or month")
        prefix = params.get("prefix", 1)
        if not isinstance(prefix, int) or prefix < 0:
            raise ValueError(f"{where}: prefix must be a non-negative integer")
    elif method == "substitute" and "value" not in params:
        raise ValueError(f"{where}: substitute needs a \"value\"")


_NODES_BY_TYPE = re.compile(r"nodesByType\(\s*'([A-Za-z]+)'\s*\)")
_ANY_RESOURCE = re.compile(r"^\s*(?:Domain)?Resource\.")
_ROOT = re.compile(r"\s*([A-Z][A-Za-z]+)\b(?!\s*\()")


def _split_union(path: str, where: str) -> list[str]:
    """The branches of a top-level `a | b | c` (not those inside brackets or strings)."""
    parts, depth, quote, start = [], 0, False, 0
    for i, char in enumerate(path):
        if quote:
            quote = char != "'" or path[i - 1] == "\\"
        elif char == "'":
            quote = True
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"{where}: malformed FHIRPath: unbalanced {char!r}")
        elif char == "|" and depth == 0:
            parts.append(path[start:i])
            start = i + 1
    if depth or quote:
        raise ValueError(f"{where}: malformed FHIRPath: unclosed bracket or string")
    parts.append(path[start:])
    if any(not p.strip() for p in parts):
        raise ValueError(f"{where}: malformed FHIRPath: empty branch in {path!r}")
    return [p.strip() for p in parts]


class _Raise(ErrorListener):
    def syntaxError(self, recognizer, offendingSymbol, line, column, msg, e):  # noqa: N802
        raise ValueError(f"column {column + 1}: {msg}")


def _check_syntax(expression: str) -> None:
    """Parse the whole expression strictly.

    fhirpathpy's own parser recovers from syntax errors and stops at the first token it
    cannot use, so "Patient..name" or "Patient.name)" would silently mean "Patient.name".
    """
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Raise())
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(_Raise())
    parser.entireExpression()


_BACKBONES = {path.rsplit(".", 1)[0] for path in _MODEL["path2Type"]}
_CHAIN = re.compile(r"\s*([A-Za-z][A-Za-z0-9]*(?:\s*\.\s*[A-Za-z][A-Za-z0-9]*)*)\s*(\(|\.|$)?")


def _is_resource(name: str) -> bool:
    parents = _MODEL["type2Parent"]
    while name in parents:
        name = parents[name]
        if name == "Resource":
            return True
    return False


def _check_elements(expression: str, root: str | None) -> None:
    """Refuse an unknown resource type or element at the start of a path.

    A misspelt path matches nothing and would leave the data it was meant to remove, so
    the plain `Type.element.element` head of the path is checked against the R4 model;
    what follows a function call or a choice element is left to the evaluation.
    """
    if root is None:
        return
    if not _is_resource(root):
        raise ValueError(f"unknown FHIR R4 resource type {root!r}")
    match = _CHAIN.match(expression)
    names = [n.strip() for n in match.group(1).split(".")] if match else [root]
    if match and match.group(2) == "(":
        names = names[:-1]  # the last name is a function
    here = root
    for name in names[1:]:
        path = f"{here}.{name}"
        path = _MODEL["pathsDefinedElsewhere"].get(path, path)
        if path in _MODEL["choiceTypePaths"]:
            return
        kind = _MODEL["path2Type"].get(path)
        if kind is None and path not in _BACKBONES:
            raise ValueError(f"{root} has no element {path!r}")
        here = path if kind in (None, "BackboneElement", "Element") else kind


def _rewrite(path: str) -> tuple[str, str | None]:
    expression = _NODES_BY_TYPE.sub(r"descendants().ofType(\1)", path)
    expression = _ANY_RESOURCE.sub("", expression)
    root = None
    match = _ROOT.match(expression)
    if match and match.group(1) not in ("Resource", "DomainResource"):
        root = match.group(1)
    return expression, root


# ---------------------------------------------------------------------------------------


_PLAIN_KEY = re.compile(r"[a-z][A-Za-z0-9]*")
_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?")


def _locate(resource: dict[str, Any], node: Any, rule: Rule) -> Location | None:
    """Where in `resource` a fhirpathpy node sits; None for values that are not elements."""
    data = getattr(node, "data", node)
    prop = getattr(node, "propName", None)
    if prop is None:
        if data is resource:
            return ()
        if not hasattr(node, "data"):
            return None  # a computed value (a count, a boolean test): nothing to act on
        raise ValueError(f"{rule.name}: cannot place a matched node in the resource")
    segments = prop.split(".")[1:]  # the first one is the type (or "None")
    location: list[str | int] = []
    here: Any = resource
    holder: Any = None  # the dict that holds the element `here` (and its "_" sibling)
    for segment in segments:
        match = _SEGMENT.fullmatch(segment)
        if match is not None and not isinstance(here, dict) and holder is not None:
            # Inside a primitive: FHIRPath's "birthDate.extension" is JSON's "_birthDate".
            here, location = _primitive_extras(holder, location)
        if match is None or not isinstance(here, dict):
            raise ValueError(f"{rule.name}: cannot place node {prop}")
        holder = here
        name, index = match.group(1), match.group(2)
        if name not in here and f"_{name}" in here:
            name = f"_{name}"  # a primitive with extensions and no value
        elif name not in here:
            # Choice types: FHIRPath says "onset", the JSON has "onsetDateTime".
            choices = [k for k in here if k.startswith(name) and k[len(name):][:1].isupper()]
            choices = choices or [k for k in here if k.startswith(f"_{name}")
                                  and k[len(name) + 1:][:1].isupper()]
            if len(choices) != 1:
                raise ValueError(f"{rule.name}: cannot place node {prop}")
            name = choices[0]
        location.append(name)
        here = here[name]
        if isinstance(here, list):
            if index is None:
                picks = [i for i, v in enumerate(here) if v is data] or \
                        [i for i, v in enumerate(here) if v == data]
                if not picks:
                    raise ValueError(f"{rule.name}: cannot place node {prop}")
                position = picks[0]
            else:
                position = int(index)
            if position >= len(here):
                raise ValueError(f"{rule.name}: cannot place node {prop}")
            location.append(position)
            here = here[position]
    if not (here is data or here == data):
        raise ValueError(f"{rule.name}: node {prop} does not match the resource")
    return tuple(location)


def _primitive_extras(holder: dict[str, Any], location: list[str | int]
                      ) -> tuple[Any, list[str | int]]:
    """The "_name" sibling of the primitive at `location` (its id and extensions), and its
    location; (None, location) when it has none."""
    *before, name, index = location if isinstance(location[-1], int) else (*location, None)
    extras = holder.get(f"_{name}")
    if index is not None:
        extras = extras[index] if isinstance(extras, list) and index < len(extras) else None
    if not isinstance(extras, dict):
        return None, location
    return extras, [*before, f"_{name}"] + ([] if index is None else [index])


@dataclass
class _Context:
    claims: dict[Location, Rule]
    days: int
    resource_type: str = ""
    # every claimed location and each of its prefixes (see _object)
    touched: set[Location] = field(default_factory=set)


class FhirDeidentifier:
    """De-identifies FHIR R4 resources (dicts) with a rule set and a permit's key."""

    def __init__(self, rules: RuleSet | str | PathLike[str] | dict[str, Any] | None,
                 key: PermitKey) -> None:
        if rules is None:
            rules = RuleSet.load(DEFAULT_RULES)
        elif isinstance(rules, dict):
            rules = RuleSet.from_dict(rules)
        elif not isinstance(rules, RuleSet):
            rules = RuleSet.load(rules)
        self.rules = rules
        self.key = key
        self._patient_keys: dict[str, str] = {}  # original Patient id -> date-shift key
        self._types: dict[str, str] = {}  # original id -> resource type, for urn:uuid
        # resource type -> the branches of the rules for it (`_jobs_for`)
        self._jobs: dict[str, list[tuple[Rule, Any, Plan | None, str | None, Any]]] = {}
        # Keyed HMACs and date shifts are pure functions of their arguments (the key is
        # fixed per de-identifier): memos, emptied when they grow past _MEMO entries.
        self._ids: dict[tuple[str, str], str] = {}
        self._shifts: dict[tuple[str, int], str | None] = {}
        self._offsets: dict[str, int] = {}  # date-shift key -> days
        self._entries: dict[tuple[str, str, str], Any] = {}  # see _kept
        self._places: dict[tuple[Any, ...], Any] = {}  # see _place

    # -- public ---------------------------------------------------------------------------

    def pseudonymous_id(self, resource_type: str, resource_id: str) -> str:
        found = self._ids.get((resource_type, resource_id))
        if found is None:
            found = self.key.pseudonym(f"{resource_type}/{resource_id}", ID_KIND,
                                       ID_LENGTH).lower()
            if len(self._ids) >= _MEMO:
                self._ids.clear()
            self._ids[(resource_type, resource_id)] = found
        return found

    def _days(self, shift_key: str) -> int:
        days = self._offsets.get(shift_key)
        if days is None:
            days = self.key.date_shift_days(shift_key)
            if len(self._offsets) >= _MEMO:
                self._offsets.clear()
            self._offsets[shift_key] = days
        return days

    def _shift(self, value: Any, days: int) -> str | None:
        if not isinstance(value, str):
            return None
        try:
            return self._shifts[(value, days)]
        except KeyError:
            shifted = shift_fhir(value, days)
            if len(self._shifts) >= _MEMO:
                self._shifts.clear()
            self._shifts[(value, days)] = shifted
            return shifted

    def register(self, resources: Iterable[dict[str, Any]]) -> None:
        """Learn ids, and the MRN of Patients, before resources that refer to them."""
        for resource in resources:
            kind, rid = resource.get("resourceType"), resource.get("id")
            if not isinstance(kind, str) or not isinstance(rid, str):
                continue
            self._types.setdefault(rid, kind)
            if kind == "Patient":
                self._patient_keys[rid] = patient_key(resource) or f"Patient/{rid}"

    def deidentify_all(self, resources_by_type: dict[str, list[dict[str, Any]]]
                       ) -> dict[str, list[dict[str, Any]]]:
        """Every resource de-identified, Patients first; a redacted resource is left out."""
        order = sorted(resources_by_type, key=lambda t: t != "Patient")
        for kind in order:
            self.register(resources_by_type[kind])
        out: dict[str, list[dict[str, Any]]] = {}
        for kind in order:
            done = (self.deidentify(r) for r in resources_by_type[kind])
            out[kind] = [r for r in done if r is not None]
        return {kind: out[kind] for kind in resources_by_type}

    def deidentify(self, resource: dict[str, Any]) -> dict[str, Any] | None:
        """One resource de-identified (a new dict); None if the rules remove all of it."""
        kind = resource.get("resourceType")
        if not isinstance(kind, str):
            raise ValueError("not a FHIR resource: no resourceType")
        if kind == "Patient" and isinstance(resource.get("id"), str):
            self.register([resource])
        context = _Context(self._claims(resource), self._days(self._shift_key(resource)),
                           kind)
        context.touched = {location[:n] for location in context.claims
                           for n in range(len(location) + 1)}
        root_rule = context.claims.get(())
        if root_rule is not None and root_rule.method == "redact":
            return None
        if root_rule is not None and root_rule.method not in ("keep", "redact"):
            raise ValueError(f"{root_rule.name}: only keep or redact apply to a whole resource")
        out = self._object(resource, (), root_rule, context, kind, kind, top=True)
        out = {"resourceType": kind} if out is _DROP else out
        if isinstance(resource.get("id"), str):
            out = {"resourceType": kind, "id": self.pseudonymous_id(kind, resource["id"]),
                   **{k: v for k, v in out.items() if k != "resourceType"}}
        return self._references_pruned(out)

    # -- rules ----------------------------------------------------------------------------

    def _claims(self, resource: dict[str, Any]) -> dict[Location, Rule]:
        claims: dict[Location, Rule] = {}
        walk = Walk(resource)
        kind = resource["resourceType"]
        jobs = self._jobs.get(kind)
        if jobs is None:
            jobs = self._jobs_for(kind)
        for rule, compiled, plan, gate, of_type in jobs:
            if gate is not None and gate not in resource and f"_{gate}" not in resource:
                continue  # the plan would find nothing (see _jobs_for)
            nodes = None
            if of_type is not None:
                # Plan.evaluate of descendants().ofType(T), without its generic steps
                try:
                    nodes = [node for node in walk.of_type(of_type)
                             if not (isinstance(data := node.data, dict) and len(data) == 1
                                     and "extension" in data)]
                except Exception:  # noqa: BLE001 - as Plan.evaluate: fhirpathpy decides
                    nodes = None
            elif plan is not None:
                try:
                    nodes = plan.evaluate(walk)
                except Unsure:
                    pass
            if nodes is None:
                try:
                    nodes = compiled(resource, {})
                except Exception as exc:  # fhirpathpy raises bare Exceptions
                    raise ValueError(f"{rule.name}: cannot evaluate on {kind}: {exc}"
                                     ) from exc
            for node in nodes:
                location = node.loc if isinstance(node, Node) else None
                if location is None:
                    location = _locate(resource, node, rule)
                if location is None:
                    continue
                owned = any(location[:n] in claims for n in range(len(location) + 1))
                if not owned:
                    claims[location] = rule
        return claims

    def _jobs_for(self, kind: str) -> list[tuple[Rule, Any, Plan | None, str | None, Any]]:
        """The branches that apply to a resource type, in order, as (rule, compiled, plan,
        gate, of_type): a plan that starts with a plain member of the resource, neither a choice
        nor followed by a step unsure of nothing (`Plan.ends`), finds no node when the
        resource has neither `gate` nor `_gate`, so the branch is skipped then (`_member`
        gives nothing for them, without an error); `of_type` is T of a plan that is
        exactly `descendants().ofType(T)` (nodesByType), answered by `Walk.of_type`."""
        jobs = []
        for rule in self.rules.rules:
            for compiled, plan in rule.branches_for(kind):
                gate = None
                if plan is not None and plan.steps[0][0] == "member" and plan.ends[0]:
                    gate = plan.steps[0][1]
                    if not (gate[:1].islower() and _PLAIN_KEY.fullmatch(gate)) or \
                            _MODEL["choiceTypePaths"].get(
                                _MODEL["pathsDefinedElsewhere"].get(f"{kind}.{gate}",
                                                                    f"{kind}.{gate}")):
                        gate = None
                of_type = None
                if plan is not None and len(plan.steps) == 2 and \
                        plan.steps[0][0] == "descendants" and plan.steps[1][0] == "ofType":
                    of_type = plan.steps[1][1]
                jobs.append((rule, compiled, plan, gate, of_type))
        if len(self._jobs) < _MEMO:
            self._jobs[kind] = jobs
        return jobs

    def _apply(self, parent: Any, name: str | int, value: Any, location: Location,
               inherited: Rule | None, context: _Context, kind: str | None = None,
               path: str = "", text_ok: bool = True) -> Any:
        """`value` (at `location`, of FHIR type `kind` at element path `path`) as the rules
        leave it, or _DROP. `text_ok` is False for free text the allow-list does not keep."""
        rule = context.claims.get(location, inherited)
        if isinstance(name, str) and name.startswith("_") and isinstance(parent, dict):
            # A primitive's extensions travel with it, unless it was changed or removed.
            sibling = inherited if location is None else \
                context.claims.get(location[:-1] + (name[1:],), inherited)
            if sibling is not None and sibling.method != "keep":
                return _DROP
        if rule is not None and rule.method == "substitute":
            return copy.deepcopy(rule.params["value"])
        if isinstance(value, dict):
            return self._object(value, location, rule, context, kind, path)
        if isinstance(value, list):
            items = [self._apply(value, i, item, None if location is None else location + (i,),
                                 rule, context, kind, path, text_ok)
                     for i, item in enumerate(value)]
            if isinstance(name, str) and name.startswith("_"):
                # The extras of a list of primitives line up with its values: null holds
                # the place of an item that has none (or has none left).
                items = [None if item is _DROP else item for item in items]
                return items if any(item is not None for item in items) else _DROP
            items = [item for item in items if item is not _DROP]
            return items or _DROP
        method = rule.method if rule is not None else self.rules.default
        if value is None:
            return _DROP
        if method == "keep":
            return value if text_ok else _DROP
        if method == "redact":
            return _DROP
        if method == "dateshift":
            shifted = self._shift(value, context.days)
            return _DROP if shifted is None else shifted
        if method == "cryptohash":
            return self._hash(value, rule)
        if method == "generalize":
            return self._generalize(value, rule, context)
        raise ValueError(f"{rule.name if rule else 'default'}: unknown method {method}")

    def _object(self, value: dict[str, Any], location: Location, rule: Rule | None,
                context: _Context, kind: str | None, path: str, top: bool = False) -> Any:
        """A resource or an element with children. With the free-text default, the R4 type
        of each child decides: an element R4 does not know goes (nothing reviewed it), and
        free text goes unless the allow-list keeps it."""
        free = self.rules.free_text
        if isinstance(value.get("resourceType"), str):
            kind = path = value["resourceType"]
        fields = fhir_types.elements(kind) if free is not None and kind else None
        claims = context.claims
        if location is not None and location not in context.touched:
            # Nothing here or below is claimed: every look-up would give `rule`, which
            # claims.get(None, rule) does without building locations.
            location = None
        places = self._places
        default = self.rules.default
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "resourceType":
                out[key] = item
                continue
            if top and key == "id":
                continue  # the engine's pseudonym, below
            element, child_path, text_ok, check = None, path, True, 0
            if free is not None:
                place = (context.resource_type, kind, path, key)
                known = places.get(place)
                if known is None:
                    known = self._place(fields, context.resource_type, path, key)
                    if len(places) >= _MEMO:
                        places.clear()
                    places[place] = known
                element, child_path, check = known
                if element is None:
                    continue
                if check == 1:
                    text_ok = self._kept(free, value, kind or "", key, child_path)
                    if not text_ok and key.startswith("_"):
                        sibling = rule if location is None else \
                            claims.get(location + (key[1:],), rule)
                        if sibling is None or sibling.method == "keep":
                            continue  # goes with the free text it belongs to
                        text_ok = True
                elif check == 2:
                    text_ok = False  # a bare value where R4 has a structure: invalid, goes
            child_location = None if location is None else location + (key,)
            if isinstance(key, str) and not key.startswith("_"):
                # `_apply`'s commonest cases without the call (same order of tests).
                owner = claims.get(child_location, rule)
                if isinstance(item, dict):
                    if owner is None or owner.method != "substitute":
                        result = self._object(item, child_location, owner, context,
                                              element.type if element else None, child_path)
                        if result is not _DROP:
                            out[key] = result
                        continue
                elif isinstance(item, list):
                    if owner is None or owner.method != "substitute":
                        items = []
                        element_type = element.type if element else None
                        for i, entry in enumerate(item):
                            entry_location = None if location is None else \
                                child_location + (i,)
                            entry_owner = claims.get(entry_location, owner)
                            if isinstance(entry, dict) and (
                                    entry_owner is None or entry_owner.method != "substitute"):
                                result = self._object(entry, entry_location, entry_owner,
                                                      context, element_type, child_path)
                            else:
                                result = self._apply(item, i, entry, entry_location, owner,
                                                     context, element_type, child_path,
                                                     text_ok)
                            if result is not _DROP:
                                items.append(result)
                        if items:
                            out[key] = items
                        continue
                else:
                    method = owner.method if owner is not None else default
                    if method == "keep":
                        if item is not None and text_ok:
                            out[key] = item
                        continue
                    if method == "redact":
                        continue
            result = self._apply(value, key, item, child_location, rule, context,
                                 element.type if element else None, child_path, text_ok)
            if result is not _DROP:
                out[key] = result
        # len(out) > ("resourceType" in out): out has an element besides resourceType
        if fields is not None and (top or len(out) > ("resourceType" in out)):
            if not self._mark_absent(free, value, out, kind or "", path, fields) and not top:
                return _DROP
        return out if top or len(out) > ("resourceType" in out) else _DROP

    @staticmethod
    def _place(fields: dict[str, fhir_types.Element] | None, resource_type: str, path: str,
               key: str) -> tuple[fhir_types.Element | None, str, int]:
        """What `_object` needs of an element by its place, free text on: the R4 element
        (None: it goes), its element path, and 1 if the allow-list decides whether it
        stays, 2 if it goes (a bare value where R4 has a structure), else 0."""
        element = fields.get(key) if fields is not None else None
        if element is None:
            return None, path, 0
        child_path = f"{path}.{key}"
        if element.backbone:
            child_path = fhir_types.backbone_paths(resource_type).get(element.type, child_path)
        if element.free_text or key.startswith("_"):
            return element, child_path, 1
        return element, child_path, 0 if element.primitive else 2

    def _kept(self, free: FreeText, holder: dict[str, Any], owner: str, key: str,
              path: str) -> bool:
        """`_text_kept`, the allow-list's entry for the place looked up once per place."""
        place = (owner, key, path)
        entry = self._entries.get(place, _MISSING)
        if entry is _MISSING:
            entry = True
            name = key[1:] if key.startswith("_") else key
            element = (fhir_types.elements(owner) or {}).get(name)
            if not key.startswith("_") or (element is not None and element.free_text):
                if key.startswith("_"):
                    path = path[: -len(key)] + name
                entry = free.find(free.keep_by_type, free.keep_by_path, owner, name, path)
            if len(self._entries) < _MEMO:
                self._entries[place] = entry
        if entry is True:
            return True
        return entry is not None and entry.allows(holder)

    @staticmethod
    def _text_kept(free: FreeText, holder: dict[str, Any], owner: str, key: str,
                   path: str) -> bool:
        name = key[1:] if key.startswith("_") else key
        if key.startswith("_"):
            element = (fhir_types.elements(owner) or {}).get(name)
            if element is None or not element.free_text:
                return True
            path = path[: -len(key)] + name
        entry = free.find(free.keep_by_type, free.keep_by_path, owner, name, path)
        return entry is not None and entry.allows(holder)

    @staticmethod
    def _mark_absent(free: FreeText, before: dict[str, Any], out: dict[str, Any], owner: str,
                     path: str, fields: dict[str, fhir_types.Element]) -> bool:
        """Mark "masked" what went and must be there: a required element, one of a required
        choice, or an element of the `masked` list, so that the resource stays valid R4.
        A required choice needs a value (fhir.resources refuses one with only extensions):
        text gets the value "masked" beside the mark; False when the choice is of another
        primitive type, and the parent goes."""
        for key in before:
            element = fields.get(key)
            if element is None or key in out or key.startswith("_") or \
                    (element.primitive and f"_{key}" in out):
                continue
            needed = element.required or free.find(
                free.masked_by_type, free.masked_by_path, owner, key, f"{path}.{key}")
            if element.choice and needed and any(
                    (other := fields.get(k)) is not None and other.choice == element.choice
                    for k in out):
                continue
            if not needed:
                continue
            if element.choice and element.primitive:
                # fhir.resources wants a value in a required choice, not only extensions.
                if element.type not in ("string", "markdown"):
                    return False
                out[key] = "masked"
            mark: Any = copy.deepcopy(MASKED)
            if element.repeats:
                mark = [mark]
            if element.primitive:
                out[f"_{key}"] = mark
            else:
                out[key] = mark
        return True

    def _hash(self, value: Any, rule: Rule) -> Any:
        if not isinstance(value, str):
            return _DROP  # a number or boolean has no pseudonym of its own type
        if rule.params.get("format") == "dicom-uid":
            if value.startswith("urn:oid:"):
                return "urn:oid:" + self.key.uid(value[len("urn:oid:"):])
            return self.key.uid(value)
        return self.key.pseudonym(value, rule.params.get("kind", "id"),
                                  rule.params.get("length", 16))

    def _generalize(self, value: Any, rule: Rule, context: _Context) -> Any:
        if not isinstance(value, str):
            return _DROP
        if "prefix" in rule.params:
            return value[: rule.params["prefix"]] or _DROP
        if rule.params.get("dateshift"):
            value = self._shift(value, context.days)
        elif self._shift(value, 0) is None:
            value = None
        if value is None:
            return _DROP
        return value[:4] if rule.params["precision"] == "year" else value[:7]

    # -- patients and references ----------------------------------------------------------

    def _shift_key(self, resource: dict[str, Any]) -> str:
        kind, rid = resource.get("resourceType"), resource.get("id")
        if kind == "Patient":
            return patient_key(resource) or f"Patient/{rid}"
        for patient_id in _patient_references(resource, self._types):
            return self._patient_keys.get(patient_id, f"Patient/{patient_id}")
        return f"{kind}/{rid}"

    def _references_pruned(self, value: Any) -> Any:
        """`value` with every Reference.reference rewritten (or removed when unreadable)
        and without the elements left empty: what `_rewrite_references` then `_prune`
        gave, in one pass."""
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if isinstance(item, dict | list):
                    item = self._references_pruned(item)
                    if item is _DROP:
                        continue
                elif key == "reference" and isinstance(item, str):
                    item = self._reference(item)
                    if item is None:
                        continue
                out[key] = item
            return out or _DROP
        if isinstance(value, list):
            items = [v for v in (self._references_pruned(v) if isinstance(v, dict | list)
                                 else v for v in value) if v is not _DROP]
            return items or _DROP
        return value

    def _rewrite_references(self, value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                self._rewrite_references(item)
        elif isinstance(value, dict):
            for item in value.values():
                self._rewrite_references(item)
            reference = value.get("reference")
            if isinstance(reference, str):
                rewritten = self._reference(reference)
                if rewritten is None:
                    del value["reference"]
                else:
                    value["reference"] = rewritten

    def _reference(self, reference: str) -> str | None:
        if reference.startswith("#"):
            return reference  # a contained resource: local to the resource, kept with it
        if reference.startswith("urn:uuid:"):
            target = reference[len("urn:uuid:"):]
            kind = self._types.get(target)
            if kind is not None:
                return f"{kind}/{self.pseudonymous_id(kind, target)}"
            pseudo = self.key.pseudonym(reference, ID_KIND, 32)
            return f"urn:uuid:{uuid.UUID(bytes=base64.b32decode(pseudo)[:16], version=4)}"
        match = _REFERENCE.search(reference)
        if match is None:
            return None
        return f"{match.group(1)}/{self.pseudonymous_id(match.group(1), match.group(2))}"


_REFERENCE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def _prune(value: Any) -> Any:
    """`value` without the elements a removed reference left empty."""
    if isinstance(value, dict):
        out = {k: v for k, v in ((k, _prune(v)) for k, v in value.items()) if v is not _DROP}
        return out or _DROP
    if isinstance(value, list):
        items = [v for v in (_prune(v) for v in value) if v is not _DROP]
        return items or _DROP
    return value


def patient_key(patient: dict[str, Any]) -> str | None:
    """The Patient's MRN (the DICOM PatientID): the identifier typed MR, or an "mrn" system."""
    candidates = [i for i in patient.get("identifier") or [] if isinstance(i, dict)
                  and isinstance(i.get("value"), str)]
    for identifier in candidates:
        kind = identifier.get("type")
        # Untrusted input: a `type` or `coding` of the wrong shape is no MR type, not a crash.
        codings = kind.get("coding") if isinstance(kind, dict) else None
        if isinstance(codings, list) and any(
                isinstance(c, dict) and c.get("code") == "MR" for c in codings):
            return identifier["value"]
    for identifier in candidates:
        if "mrn" in str(identifier.get("system", "")).lower():
            return identifier["value"]
    return None


def _patient_references(resource: dict[str, Any], types: dict[str, str]) -> list[str]:
    """Ids of the Patients a resource refers to, subject and patient first."""
    found: list[str] = []

    def add(reference: Any) -> None:
        if not isinstance(reference, str):
            return
        if reference.startswith("urn:uuid:"):
            target = reference[len("urn:uuid:"):]
            if types.get(target) == "Patient":
                found.append(target)
            return
        match = _REFERENCE.search(reference)
        if match and match.group(1) == "Patient":
            found.append(match.group(2))

    for name in ("subject", "patient"):
        element = resource.get(name)
        if isinstance(element, dict):
            add(element.get("reference"))

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            add(value.get("reference"))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    if not found:
        walk(resource)
    return found
