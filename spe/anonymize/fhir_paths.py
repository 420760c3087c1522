"""The FHIRPath of the de-identification rules, evaluated without fhirpathpy where it can be.

fhirpathpy evaluates a path by building a node object per element it passes, and
`descendants()` (which `nodesByType` becomes) walks the whole resource again for every rule
that uses it; that walk was most of the de-identifier's time. Here each branch of a rule is
compiled once into a `Plan`: a list of steps (a member name, `descendants()`, `ofType(T)`,
`where(...)`) for the forms the rule files use, and every rule of a resource shares one
`descendants()` walk of it (`Walk`).

The steps are transliterations of fhirpathpy's own code (`member_invocation`,
`create_reduce_children`, `of_type_fn`, `where_macro`, and the raw-data filter of
`apply_parsed_path`), so they give the same nodes, with the same `propName`, in the same
order; a `where` predicate is evaluated by fhirpathpy itself on the candidate node. What a
plan does not cover falls back to fhirpathpy: a branch of another form has no plan, and
anything a plan meets that it is unsure of (an exception of any kind, which is also how
fhirpathpy's own errors surface) makes `evaluate` raise `Unsure`, so that the caller
evaluates that branch with fhirpathpy, which then gives the very result, or error, it
always gave. tests/spe/anonymize/test_fhir_reference.py holds the outputs to the reference.

Each node also carries its location in the resource (keys and list indices) when its
`propName` spells that location plainly; `spe.anonymize.fhir._locate` is needed only for
the others (choice types, a primitive's "_" sibling, unusual keys).
"""

from __future__ import annotations

import json
import re
from typing import Any

from fhirpathpy.engine import do_eval
from fhirpathpy.engine.nodes import ResourceNode, TypeInfo
from fhirpathpy.engine.util import process_user_invocation_table

from spe.anonymize import fhir_predicates

__all__ = ["Node", "Plan", "Unsure", "Walk", "compile_plan"]

_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# Functions a `where` predicate may use: they read nothing but their input, $this and
# $index, which the plan sets as fhirpathpy's where() does.
_PREDICATE_FUNCTIONS = frozenset({
    "where", "exists", "contains", "empty", "not", "startsWith", "endsWith", "matches",
    "ofType", "count", "first", "last", "all", "hasValue", "lower", "upper", "length",
    "children", "descendants", "select"})
_PREDICATE_NODES = frozenset({
    "TermExpression", "InvocationTerm", "InvocationExpression", "MemberInvocation",
    "FunctionInvocation", "Functn", "ParamList", "Identifier", "LiteralTerm",
    "StringLiteral", "BooleanLiteral", "NumberLiteral", "NullLiteral", "ParenthesizedTerm",
    "EqualityExpression", "OrExpression", "AndExpression", "XorExpression",
    "ImpliesExpression", "InequalityExpression", "ThisInvocation", "IndexInvocation",
    "MembershipExpression"})


class Unsure(Exception):
    """The plan cannot vouch for its result here: evaluate the branch with fhirpathpy."""


class Node:
    """fhirpathpy's ResourceNode as far as the de-identifier reads it, with a location."""

    __slots__ = ("_parent", "_prop", "_spelling", "data", "loc", "path")

    def __init__(self, data: Any, path: Any, propName: str | None,  # noqa: N803
                 loc: tuple[str | int, ...] | None, parent: Node | None = None,
                 spelling: tuple[Any, ...] | None = None) -> None:
        if isinstance(data, dict) and "resourceType" in data:
            path = data["resourceType"]  # as ResourceNode does for a (contained) resource
        self.data = data
        self.path = path
        self._prop = propName
        self._parent = parent
        self._spelling = spelling
        self.loc = loc

    @property
    def propName(self) -> str | None:  # noqa: N802 - fhirpathpy's name, read by _locate
        """Spelled when first read: only `_locate` and fhirpathpy-evaluated predicates
        read it, so the descendants walk does not build a string per element."""
        parent = self._parent
        if parent is not None:
            prop, unmapped, stem, index = self._spelling
            parent_name = parent.propName
            full = (f"{parent_name}.{prop}" if parent_name else unmapped).replace("_", "")
            if stem is not None:
                full = f"{parent_name}.{stem}"
            self._prop = full if index is None else f"{full}[{index}]"
            self._parent = None
        return self._prop


def _identifier(node: dict[str, Any]) -> str:
    return re.sub(r"(^\"|\"$)", "", node["text"])


def _only(node: dict[str, Any], kind: str) -> dict[str, Any] | None:
    children = node.get("children") or []
    if node.get("type") != kind or len(children) != 1 or not isinstance(children[0], dict):
        return None
    return children[0]


def _steps(node: dict[str, Any]) -> list[tuple[Any, ...]] | None:
    kind = node.get("type")
    children = node.get("children") or []
    if kind == "InvocationExpression" and len(children) == 2:
        head = _steps(children[0])
        tail = _invocation(children[1])
        return None if head is None or tail is None else [*head, tail]
    term = _only(node, "TermExpression")
    invocation = _only(term, "InvocationTerm") if term is not None else None
    step = _invocation(invocation) if invocation is not None else None
    return None if step is None else [step]


def _invocation(node: dict[str, Any]) -> tuple[Any, ...] | None:
    kind = node.get("type")
    children = node.get("children") or []
    if kind == "MemberInvocation" and len(children) == 1 and \
            children[0].get("type") == "Identifier":
        return ("member", _identifier(children[0]).replace("`", ""))
    if kind != "FunctionInvocation" or len(children) != 1:
        return None
    functn = children[0]
    parts = functn.get("children") or []
    if functn.get("type") != "Functn" or not parts or parts[0].get("type") != "Identifier":
        return None
    name = _identifier(parts[0])
    params = parts[1].get("children") or [] if len(parts) > 1 else []
    if len(parts) > 2 or (len(parts) == 2 and parts[1].get("type") != "ParamList"):
        return None
    if name == "descendants" and not params:
        return ("descendants",)
    if name == "ofType" and len(params) == 1 and params[0].get("type") == "TermExpression":
        identifiers = params[0]["text"].replace("`", "").split(".")
        if len(identifiers) == 1:
            return ("ofType", TypeInfo(name=identifiers[0], namespace=None))
        if len(identifiers) == 2:
            return ("ofType", TypeInfo(name=identifiers[1], namespace=identifiers[0]))
        return None
    if name == "where" and len(params) == 1 and _plain_predicate(params[0]):
        # The same predicate in several rules (the MRN's) is asked once per node, unless
        # it reads $index, the node's position.
        key = None if '"IndexInvocation"' in (text := json.dumps(params[0])) else text
        return ("where", params[0], key, fhir_predicates.compile_predicate(params[0]))
    return None


def _plain_predicate(node: Any) -> bool:
    if not isinstance(node, dict) or node.get("type") not in _PREDICATE_NODES:
        return False
    if node["type"] == "Functn":
        parts = node.get("children") or []
        if not parts or parts[0].get("type") != "Identifier" or \
                _identifier(parts[0]) not in _PREDICATE_FUNCTIONS:
            return False
    return all(_plain_predicate(child) for child in node.get("children") or [])


class Plan:
    """One branch of a rule as steps; `compile_plan` gives None for a form it lacks."""

    __slots__ = ("ends", "steps")

    def __init__(self, steps: list[tuple[Any, ...]]) -> None:
        self.steps = steps
        # After step i, an empty collection may end the plan with no nodes when no later
        # step could be unsure of an empty input (only a capitalised member is: _member).
        self.ends = [not any(s[0] == "member" and s[1] and s[1][0] == s[1][0].upper()
                             for s in steps[i + 1:]) for i in range(len(steps))]

    def evaluate(self, walk: Walk) -> list[Node]:
        try:
            return self._evaluate(walk)
        except Unsure:
            raise
        except Exception as exc:  # noqa: BLE001 - fhirpathpy answers it, or raises it
            raise Unsure from exc

    def _evaluate(self, walk: Walk) -> list[Node]:
        resource = walk.resource
        collection: list[Any] = [resource]
        at_root = True
        ends = self.ends
        for i, step in enumerate(self.steps):
            if not at_root and not collection and ends[i - 1]:
                return []
            kind = step[0]
            if kind == "member":
                if at_root:
                    collection = _root_member(resource, step[1], walk)
                else:
                    collection = _member(collection, step[1])
            elif kind == "descendants":
                if at_root or (len(collection) == 1 and collection[0] is walk.root):
                    collection = walk.descendants()
                else:
                    collection = _descendants(collection)
            elif kind == "ofType":
                if at_root:
                    raise Unsure  # a raw dict's type: not a form the rules use
                if collection is walk._descendants:
                    collection = walk.of_type(step[1])
                else:
                    collection = [node for node in collection if _is(node, step[1])]
            else:
                if at_root:
                    raise Unsure
                collection = _where(collection, step[1], step[2], step[3], walk)
            at_root = False
        if at_root:
            raise Unsure
        return [node for node in collection
                if not (isinstance(data := node.data, dict) and len(data) == 1
                        and "extension" in data)]


def compile_plan(parsed: dict[str, Any]) -> Plan | None:
    """The plan of fhirpathpy's parse of one branch (`compiled.parsedPath`), or None."""
    children = parsed.get("children") or []
    if len(children) != 1 or not isinstance(children[0], dict):
        return None
    steps = _steps(children[0])
    return None if not steps else Plan(steps)


class Walk:
    """One resource as the plans see it: its root node and, once asked, its descendants."""

    __slots__ = ("_by_name", "_descendants", "_groups", "_of_type", "_predicate_context",
                 "predicates", "resource", "root")

    def __init__(self, resource: dict[str, Any]) -> None:
        self.resource = resource
        self.root = Node(resource, None, None, ())
        self._descendants: list[Node] | None = None
        self._predicate_context: dict[str, Any] | None = None
        self._groups: dict[tuple[Any, type], list[int]] | None = None
        self._of_type: dict[tuple[Any, ...], list[Node]] = {}
        self._by_name: dict[str, list[tuple[str | None, list[int]]]] | None = None
        # (predicate, id of a node's data, its path) -> where() keeps it; the data lives
        # as long as the walk, so its id is not reused meanwhile
        self.predicates: dict[tuple[str, int, Any], bool] = {}

    def of_type(self, type_info: TypeInfo) -> list[Node]:
        """`descendants().ofType(type)`: the descendants grouped once by what their type
        depends on (path, class of the data), each group tested once, order kept."""
        key = (type_info.name, type_info.namespace, id(TypeInfo.model))
        found = self._of_type.get(key)
        if found is not None:
            return found
        nodes = self.descendants()
        if TypeInfo.model is None:
            # fhirpathpy without a global model (none until an `is` or `as` ran): a node
            # is of one type only, which depends on its path and the class of its data,
            # so the descendants are indexed by its name once, in order.
            if self._by_name is None:
                by_name: dict[str, list[tuple[str | None, list[int]]]] = {}
                by_type: dict[tuple[str, str | None], list[int]] = {}
                types = _TYPES
                for index, node in enumerate(nodes):
                    group = (node.path, type(node.data))
                    found_type = types.get(group)
                    if found_type is None:
                        found_type = _type_of(group[0], group[1], node)
                    indices = by_type.get(found_type)
                    if indices is None:
                        indices = by_type[found_type] = []
                        by_name.setdefault(found_type[0], []).append((found_type[1], indices))
                    indices.append(index)
                self._by_name = by_name  # only once whole: _type_of may raise Unsure
            picked = [indices for namespace, indices in self._by_name.get(type_info.name, ())
                      if not namespace or not type_info.namespace
                      or namespace == type_info.namespace]
        else:
            if self._groups is None:
                self._groups = {}
                for index, node in enumerate(nodes):
                    self._groups.setdefault((node.path, type(node.data)), []).append(index)
            picked = [indices for indices in self._groups.values()
                      if _is(nodes[indices[0]], type_info)]
        if not picked:
            found = []
        elif len(picked) == 1:
            found = [nodes[i] for i in picked[0]]
        else:
            found = [nodes[i] for i in sorted(i for indices in picked for i in indices)]
        self._of_type[key] = found
        return found

    def descendants(self) -> list[Node]:
        if self._descendants is None:
            self._descendants = _descendants([self.root])
        return self._descendants

    def context(self) -> dict[str, Any]:
        """The `ctx` fhirpathpy's apply_parsed_path builds for this resource."""
        if self._predicate_context is None:
            self._predicate_context = {
                "dataRoot": [self.resource],
                "vars": {"context": self.resource, "ucum": "http://unitsofmeasure.org"},
                "model": _model(),
                "userInvocationTable": process_user_invocation_table({}),
            }
        return self._predicate_context


def _model() -> dict[str, Any]:
    from fhirpathpy.models import models
    return models["r4"]


def _root_member(resource: dict[str, Any], key: str, walk: Walk) -> list[Node]:
    # member_invocation on [resource]: a capitalised name filters by resourceType.
    if key[0] == key[0].upper():
        return [walk.root] if resource["resourceType"] == key else []
    return _member([walk.root], key)


_MODEL_CACHE: dict[str, Any] = {}
# (parent path, member name) -> (the child's path after pathsDefinedElsewhere, its choice
# types or None): the model's answers, which do not change
_PATHS: dict[tuple[Any, str], tuple[str, Any, tuple[tuple[str, str, str], ...]]] = {}


def _member(collection: list[Node], key: str) -> list[Node]:
    """fhirpathpy's create_reduce_member_invocation over `collection`."""
    model = _MODEL_CACHE.get("m") or _MODEL_CACHE.setdefault("m", _model())
    if key and key[0] == key[0].upper():
        # fhirpathpy tries a resourceType filter first; on nodes that is a TypeError it
        # swallows. Not a form the rules use.
        raise Unsure
    out: list[Node] = []
    plain = _PLAIN.fullmatch(key) is not None
    for res in collection:
        data = res.data
        if not isinstance(data, dict):
            if key == "length":
                raise Unsure  # fhirpathpy gives len(data) here
            continue  # nothing under a primitive or a list
        known = _PATHS.get((res.path, key))
        if known is None:
            path = f"{res.path}.{key}" if res.path else f"_.{key}"
            path = model["pathsDefinedElsewhere"].get(path, path)
            actual = model["choiceTypePaths"].get(path)
            known = (path, actual, tuple((kind, f"{key}{kind}", f"_{key}{kind}")
                                         for kind in actual) if actual else ())
            if len(_PATHS) < 100_000:
                _PATHS[(res.path, key)] = known
        child_path, actual, choices = known
        if not actual and key not in data and f"_{key}" not in data:
            continue  # nothing to add: the common case, without building paths
        unmapped = f"{res.path}.{key}" if res.path else f"_.{key}"
        field_name = key
        add = add_ = None
        if actual:
            for kind, field_name, extras_name in choices:
                add = data.get(field_name)
                add_ = data.get(extras_name)
                if add is not None or add_ is not None:
                    child_path += kind
                    break
        else:
            add = data.get(key)
            add_ = data.get(f"_{key}")
            if key == "extension":
                child_path = "Extension"
        child_path = model["path2Type"].get(child_path, child_path)
        clean = res.loc is not None and plain and not actual
        base = res.loc + (field_name,) if clean else None
        if add is not None and not (isinstance(add, list) and not add):
            # propName spelled when read: (f"{res.propName}.{key}" if res.propName else
            # unmapped) without "_", and "[i]" (`Node.propName`)
            if isinstance(add, list):
                out += [Node(x, child_path, None, None if base is None else (*base, i), res,
                             (key, unmapped, None, i)) for i, x in enumerate(add)]
            else:
                out.append(Node(add, child_path, None, base, res, (key, unmapped, None, None)))
        if add_ is not None and not (isinstance(add_, list) and not add_):
            if isinstance(add_, list):
                out += [Node(x, child_path, None, None, res, (key, unmapped, None, i))
                        for i, x in enumerate(add_)]
            else:
                out.append(Node(add_, child_path, None, None, res, (key, unmapped, None, None)))
    return out


def _descendants(collection: list[Node]) -> list[Node]:
    """fhirpathpy's descendants(): its children level by level."""
    found: list[Node] = []
    level = _children(collection)
    while level:
        found += level
        level = _children(level)
    return found


# (parent path, key) -> (its unmapped path, the child's path, the choice stem the key
# is renamed to or None, whether the key is plain): the model's answers, which do not change
_CHILDREN: dict[tuple[str, str], tuple[str, str, str | None, bool]] = {}


def _child(path: str, prop: str) -> tuple[str, str, str | None, bool]:
    model = _MODEL_CACHE.get("m") or _MODEL_CACHE.setdefault("m", _model())
    unmapped = child_path = f"{path}.{prop}"
    if prop == "extension":
        child_path = "Extension"
    child_path = model["pathsDefinedElsewhere"].get(child_path, child_path)
    child_path = model["path2Type"].get(child_path, child_path)
    stem = None
    if len(prop) > len(child_path) and prop.lower().endswith(child_path.lower()):
        candidate = prop[: -len(child_path)]
        if model["choiceTypePaths"].get(f"{path}.{candidate}", []):
            stem = candidate
    found = (unmapped, child_path, stem, _PLAIN.fullmatch(prop) is not None)
    if len(_CHILDREN) < 100_000:
        _CHILDREN[(path, prop)] = found
    return found


def _children(collection: list[Node]) -> list[Node]:
    """fhirpathpy's create_reduce_children, primitive extensions included; each child's
    propName is spelled only when read (`Node.propName`)."""
    out: list[Node] = []
    append = out.append
    for res in collection:
        data = res.data
        if isinstance(data, list):
            raise Unsure  # fhirpathpy fails on a list in a list (prop.startswith of an int)
        if not isinstance(data, dict):
            continue
        path, loc = res.path, res.loc
        if not isinstance(path, str):
            raise Unsure
        for prop, value in data.items():
            if not isinstance(prop, str):
                raise Unsure
            known = _CHILDREN.get((path, prop)) or _child(path, prop)
            unmapped, child_path, stem, plain = known
            child_loc = (loc + (prop,) if loc is not None and stem is None and plain
                         else None)
            if isinstance(value, list):
                for i, x in enumerate(value):
                    append(Node(x, child_path, None,
                                None if child_loc is None else (*child_loc, i), res,
                                (prop, unmapped, stem, i)))
            else:
                append(Node(value, child_path, None, child_loc, res,
                            (prop, unmapped, stem, None)))
    return out


_IS: dict[tuple[Any, ...], bool] = {}


def _is(node: Node, type_info: TypeInfo) -> bool:
    """fhirpathpy's `TypeInfo.from_value(node).is_(type)`, which reads only the node's path,
    the class of its data and the model fhirpathpy last set globally (`is`, `as`)."""
    model = TypeInfo.model
    key = (node.path, type(node.data), type_info.name, type_info.namespace, id(model))
    found = _IS.get(key)
    if found is None:
        if not isinstance(node.path, str):
            raise Unsure
        info = ResourceNode(node.data, node.path).get_type_info()
        if info is None:
            raise Unsure
        found = bool(info.is_(type_info))
        if len(_IS) < 100_000:
            _IS[key] = found
    return found


_TYPES: dict[tuple[Any, type], tuple[str, str | None]] = {}


def _type_of(path: Any, kind: type, node: Node) -> tuple[str, str | None]:
    """The name and namespace of fhirpathpy's `get_type_info` of a node."""
    found = _TYPES.get((path, kind))
    if found is None:
        if not isinstance(path, str):
            raise Unsure
        info = ResourceNode(node.data, path).get_type_info()
        if info is None or not isinstance(info.name, str):
            raise Unsure
        found = (info.name, info.namespace)
        if len(_TYPES) < 100_000:
            _TYPES[(path, kind)] = found
    return found


def _where(collection: list[Node], predicate: dict[str, Any], key: str | None,
           native: fhir_predicates.Predicate | None, walk: Walk) -> list[Node]:
    """fhirpathpy's where_macro: the predicate answered natively where `fhir_predicates`
    vouches for it, else evaluated by fhirpathpy on the node."""
    ctx = None
    out: list[Node] = []
    memo = walk.predicates
    for i, node in enumerate(collection):
        if native is not None:
            try:
                answer = native(node.data, node.path)
            except fhir_predicates.Unsure:
                pass
            else:
                if answer is True:
                    out.append(node)
                continue
        if ctx is None:
            ctx = walk.context()
        if key is not None:
            known = memo.get((key, id(node.data), node.path))
            if known is not None:
                if known:
                    out.append(node)
                continue
        ctx["$index"] = i
        item = [ResourceNode(node.data, node.path, propName=node.propName)]
        ctx["$this"] = item
        result = do_eval(ctx, item, predicate)
        if len(result) > 0:
            # where_macro asks twice and keeps the second answer's first item; without
            # $index (all that a first answer can leave behind in ctx) the two are the same.
            again = result
            if key is None:
                ctx["$this"] = item
                again = do_eval(ctx, item, predicate)
            if again[0]:
                out.append(node)
                if key is not None:
                    memo[(key, id(node.data), node.path)] = True
                continue
        if key is not None:
            memo[(key, id(node.data), node.path)] = False
    return out
