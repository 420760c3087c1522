"""The element types of FHIR R4, read from fhir.resources' models, for the de-identifier.

fhir.resources 8 ships R4 as its `R4B` subpackage (the one the nodes validate with, see
`gateway/node/sources/fhir_validate.py`). Each model class knows, for every element under
its JSON name (`valueString`, `_birthDate`), the element's type, whether it repeats and
whether it is required (`element_required` for primitives, no default for complex types,
`one_of_many_required` for a required choice). `elements(type_name)` turns that into a
table, built once per type and cached, so that a walk over a resource knows the type of
every node by dictionary look-ups: the free-text default of `spe.anonymize.fhir` removes
the nodes whose type is in `FREE_TEXT` without a path per element written by hand.

Type names are FHIR's: primitives in lower camel case (`string`, `dateTime`), complex
types and backbone elements by their class (`CodeableConcept`, `QuestionnaireResponseItem`),
the `_name` sibling of a primitive as `Element` and a contained resource as `Resource`.
"""

from __future__ import annotations

import types
import typing
import uuid
from dataclasses import dataclass
from functools import cache

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.backboneelement import BackboneElement
from fhir.resources.R4B.resource import Resource

__all__ = ["FREE_TEXT", "Element", "backbone_paths", "bases", "elements", "is_resource",
           "resolve"]

# Free text: what a person writes. base64Binary is included: it is an encoded document
# (Attachment.data, Binary.data), free text in another spelling.
FREE_TEXT = frozenset({"string", "markdown", "xhtml", "base64Binary"})


@dataclass(frozen=True, slots=True)
class Element:
    name: str  # the JSON name: "valueString", "_status"
    type: str  # "string", "CodeableConcept", "QuestionnaireResponseItem", "Element"
    primitive: bool
    repeats: bool
    required: bool  # min cardinality 1 (for a choice: the choice as a whole)
    choice: str | None = None  # "value" for valueString
    backbone: bool = False

    @property
    def free_text(self) -> bool:
        # A primitive whose type could not be read counts as text: it goes unless kept.
        return self.primitive and (self.type in FREE_TEXT or self.type == "unknown")


def _model(type_name: str) -> type | None:
    try:
        return get_fhir_model_class(type_name)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None


def is_resource(type_name: str) -> bool:
    model = _model(type_name)
    return model is not None and issubclass(model, Resource)


def _unwrap(annotation: typing.Any) -> tuple[typing.Any, bool]:
    """The type inside Optional[...] and List[...], and whether it was a list."""
    repeats = False
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return None, repeats
            annotation = args[0]
        elif origin in (list, typing.List):  # noqa: UP006
            repeats = True
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation, repeats


def _primitive_name(annotation: typing.Any) -> str | None:
    if typing.get_origin(annotation) is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        for item in metadata:
            if type(item).__module__.startswith("fhir_core"):
                name = type(item).__name__
                return name[0].lower() + name[1:]
        if base is uuid.UUID:
            return "uuid"
        return "string" if base is str else "base64Binary" if base is bytes else "unknown"
    if annotation is bool:
        return "boolean"
    return None


@cache
def elements(type_name: str) -> dict[str, Element] | None:
    """Every element of a FHIR type by its JSON name; None for a type R4 does not have."""
    model = _model(type_name)
    if model is None:
        return None
    table: dict[str, Element] = {}
    for field in model.model_fields.values():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        name = field.alias or ""
        inner, repeats = _unwrap(field.annotation)
        if name.startswith("_"):  # a primitive's id and extensions
            table[name] = Element(name, "Element", False, repeats, False)
            continue
        if not extra.get("element_property"):
            continue  # fhir.resources' own fields (fhir_comments), not FHIR elements
        choice = extra.get("one_of_many")
        required = bool(extra.get("one_of_many_required") if choice
                        else extra.get("element_required") or field.is_required())
        primitive = _primitive_name(inner)
        if primitive is not None:
            table[name] = Element(name, primitive, True, repeats, required, choice)
            continue
        class_name = getattr(inner, "__name__", "")
        kind = class_name.removesuffix("Type") if class_name.endswith("Type") else "unknown"
        kind_model = _model(kind) if kind != "Resource" else Resource
        backbone = kind_model is not None and issubclass(kind_model, BackboneElement)
        table[name] = Element(name, kind, False, repeats, required, choice, backbone)
    return table


@cache
def bases(type_name: str) -> tuple[str, ...]:
    """The type and the FHIR types it specialises (Age: Age, Quantity, Element)."""
    model = _model(type_name)
    if model is None:
        return (type_name,)
    names = [getattr(c, "__resource_type__", None) for c in model.__mro__]
    return tuple(dict.fromkeys(n for n in names if isinstance(n, str)
                               and not n.startswith(("_", "FHIR"))))


@cache
def backbone_paths(resource_type: str) -> dict[str, str]:
    """The element path of each backbone element of a resource ("QuestionnaireResponseItem":
    "QuestionnaireResponse.item"), the shortest where a backbone nests in itself."""
    paths: dict[str, str] = {}
    queue = [(resource_type, resource_type)]
    while queue:
        owner, path = queue.pop(0)
        for element in (elements(owner) or {}).values():
            if element.backbone and element.type not in paths:
                paths[element.type] = f"{path}.{element.name}"
                queue.append((element.type, paths[element.type]))
    return paths


def resolve(path: str) -> tuple[str, Element]:
    """The owner type and the element a dotted path of JSON names ends at:
    "Coding.display" -> ("Coding", display), "QuestionnaireResponse.item.linkId" ->
    ("QuestionnaireResponseItem", linkId). ValueError for a path R4 does not have."""
    head, *names = path.split(".")
    if not names or elements(head) is None:
        raise ValueError(f"{path!r}: {head!r} is not a FHIR R4 type")
    owner = head
    for position, name in enumerate(names):
        element = (elements(owner) or {}).get(name)
        if element is None:
            raise ValueError(f"{path!r}: {owner} has no element {name!r}")
        if position == len(names) - 1:
            return owner, element
        owner = element.type
    raise AssertionError("unreachable")
