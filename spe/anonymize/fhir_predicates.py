"""The `where(...)` predicates of the rule files, answered without fhirpathpy.

fhirpathpy evaluates a predicate by building nodes and a context per candidate element;
for the identifier rules (`where(system = '...')`, `where(type.coding.where(code = 'MR')
.exists() or system.contains('mrn'))`) that was a fifth of the de-identifier's time.
`compile_predicate` turns the few forms those rules use into a function of the candidate
node that follows fhirpathpy's semantics for them (`=` is nullable and compares a string
element to the literal exactly, `contains` is nullable on its input, `or` is three-valued,
`where` keeps what is true). It answers only when the element is of the shape the rules
expect: a string where a string is meant, no primitive extensions (`_system`), no choice
types, no lists where one element is meant. On anything else it raises `Unsure`, and the
caller asks fhirpathpy, as it always did, for that node.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["Predicate", "Unsure", "compile_predicate"]

# fhirpathpy compares these as the Python strings they are (no date or quantity parsing).
_STRINGS = frozenset({"string", "uri", "code", "id", "url", "canonical", "oid", "uuid"})
_LITERAL = re.compile(r"'([A-Za-z0-9:._/ -]*)'")


class Unsure(Exception):
    """This node is not of the shape the native predicate vouches for."""


# A predicate gives True, False or None (fhirpathpy's empty collection).
Predicate = Callable[[Any, str], "bool | None"]
_Collect = Callable[[Any, str], "list[tuple[Any, str]]"]


def _model() -> dict[str, Any]:
    from fhirpathpy.models import models
    return models["r4"]


_TYPES: dict[tuple[str, str], str] = {}


def _child_type(path: str, key: str) -> str:
    """The type fhirpathpy's member invocation gives `key` under a node of type `path`."""
    found = _TYPES.get((path, key))
    if found is None:
        model = _model()
        full = f"{path}.{key}"
        full = model["pathsDefinedElsewhere"].get(full, full)
        if model["choiceTypePaths"].get(full) or key == "extension":
            raise Unsure
        found = model["path2Type"].get(full, full)
        if len(_TYPES) < 10_000:
            _TYPES[(path, key)] = found
    return found


def _member(data: Any, key: str) -> Any:
    """The value under `key`, or Unsure where fhirpathpy would read more than that."""
    if not isinstance(data, dict) or f"_{key}" in data:
        raise Unsure
    return data.get(key)


def _string_member(data: Any, path: str, key: str) -> str | None:
    if _child_type(path, key) not in _STRINGS:
        raise Unsure
    value = _member(data, key)
    if value is not None and not isinstance(value, str):
        raise Unsure
    return value


def _name(node: Any) -> str | None:
    """The member name of a `TermExpression` that is just a member, else None."""
    if not isinstance(node, dict) or node.get("type") != "TermExpression":
        return None
    kids = node.get("children") or []
    if len(kids) != 1 or kids[0].get("type") != "InvocationTerm":
        return None
    kids = kids[0].get("children") or []
    if len(kids) != 1 or kids[0].get("type") != "MemberInvocation":
        return None
    kids = kids[0].get("children") or []
    if len(kids) != 1 or kids[0].get("type") != "Identifier":
        return None
    text = kids[0].get("text")
    return text if isinstance(text, str) and re.fullmatch(r"[a-z][A-Za-z0-9]*", text) else None


def _literal(node: Any) -> str | None:
    if not isinstance(node, dict) or node.get("type") != "TermExpression":
        return None
    kids = node.get("children") or []
    if len(kids) != 1 or kids[0].get("type") != "LiteralTerm":
        return None
    kids = kids[0].get("children") or []
    if len(kids) != 1 or kids[0].get("type") != "StringLiteral":
        return None
    match = _LITERAL.fullmatch(kids[0].get("text") or "")
    return None if match is None else match.group(1)


def _function(node: Any) -> tuple[str, list[Any]] | None:
    """(name, params) of a `FunctionInvocation`."""
    if not isinstance(node, dict) or node.get("type") != "FunctionInvocation":
        return None
    kids = node.get("children") or []
    if len(kids) != 1 or kids[0].get("type") != "Functn":
        return None
    parts = kids[0].get("children") or []
    if not parts or parts[0].get("type") != "Identifier" or len(parts) > 2:
        return None
    params: list[Any] = []
    if len(parts) == 2:
        if parts[1].get("type") != "ParamList":
            return None
        params = parts[1].get("children") or []
    return parts[0].get("text"), params


def _equals(node: Any) -> Predicate | None:
    """`member = 'literal'`."""
    if node.get("type") != "EqualityExpression" or node.get("terminalNodeText") != ["="]:
        return None
    kids = node.get("children") or []
    if len(kids) != 2:
        return None
    key, literal = _name(kids[0]), _literal(kids[1])
    if key is None or literal is None:
        return None

    def equals(data: Any, path: str) -> bool | None:
        value = _string_member(data, path, key)
        return None if value is None else value == literal
    return equals


def _contains(node: Any) -> Predicate | None:
    """`member.contains('literal')`."""
    if node.get("type") != "InvocationExpression":
        return None
    kids = node.get("children") or []
    if len(kids) != 2:
        return None
    key, function = _name(kids[0]), _function(kids[1])
    if key is None or function is None or function[0] != "contains" or len(function[1]) != 1:
        return None
    literal = _literal(function[1][0])
    if literal is None:
        return None

    def contains(data: Any, path: str) -> bool | None:
        value = _string_member(data, path, key)
        return None if value is None else literal in value
    return contains


def _collect(node: Any) -> _Collect | None:
    """`a.b...` as the (data, type) of the elements it reaches, or `...where(p)` of them."""
    key = _name(node)
    if key is not None:
        def member(data: Any, path: str) -> list[tuple[Any, str]]:
            kind = _child_type(path, key)
            value = _member(data, key)
            if value is None:
                return []
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(item, dict) and item for item in values):
                raise Unsure  # a primitive or an empty object: not what the rules read
            return [(item, kind) for item in values]
        return member
    if not isinstance(node, dict) or node.get("type") != "InvocationExpression":
        return None
    kids = node.get("children") or []
    if len(kids) != 2:
        return None
    head = _collect(kids[0])
    if head is None:
        return None
    tail = kids[1]
    if tail.get("type") == "MemberInvocation":
        inner = tail.get("children") or []
        if len(inner) != 1 or inner[0].get("type") != "Identifier":
            return None
        step = _collect({"type": "TermExpression", "children": [
            {"type": "InvocationTerm", "children": [tail]}]})
        if step is None:
            return None

        def chain(data: Any, path: str) -> list[tuple[Any, str]]:
            return [found for item, kind in head(data, path) for found in step(item, kind)]
        return chain
    function = _function(tail)
    if function is None or function[0] != "where" or len(function[1]) != 1:
        return None
    keep = _predicate(function[1][0])
    if keep is None:
        return None

    def where(data: Any, path: str) -> list[tuple[Any, str]]:
        return [(item, kind) for item, kind in head(data, path) if keep(item, kind) is True]
    return where


def _exists(node: Any) -> Predicate | None:
    """`collection.exists()`."""
    if node.get("type") != "InvocationExpression":
        return None
    kids = node.get("children") or []
    function = _function(kids[1]) if len(kids) == 2 else None
    if function is None or function != ("exists", []):
        return None
    collect = _collect(kids[0])
    if collect is None:
        return None

    def exists(data: Any, path: str) -> bool | None:
        return bool(collect(data, path))
    return exists


def _or(node: Any) -> Predicate | None:
    if node.get("type") != "OrExpression" or node.get("terminalNodeText") != ["or"]:
        return None
    kids = node.get("children") or []
    if len(kids) != 2:
        return None
    left, right = _predicate(kids[0]), _predicate(kids[1])
    if left is None or right is None:
        return None

    def either(data: Any, path: str) -> bool | None:
        a, b = left(data, path), right(data, path)
        if a is True or b is True:
            return True
        return False if a is False and b is False else None
    return either


def _predicate(node: Any) -> Predicate | None:
    if not isinstance(node, dict):
        return None
    for form in (_equals, _contains, _exists, _or):
        found = form(node)
        if found is not None:
            return found
    return None


def compile_predicate(node: Any) -> Predicate | None:
    """The native form of a `where` parameter (fhirpathpy's parse), or None."""
    try:
        return _predicate(node)
    except Exception:  # noqa: BLE001 - an odd parse is simply not a native form
        return None
