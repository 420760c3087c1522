"""Validate one FHIR resource (as parsed JSON) against the FHIR R4 models of fhir.resources.

fhir.resources 8 defaults to R5 and ships R4 as its `R4B` subpackage (R4B changed no
resource the node reads: Patient, Condition, Observation keep their R4 structure), so that
is the model used here. Both file sources share this, so the NDJSON and Bundle readers
accept and reject exactly the same resources.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

FHIR_VERSION = "R4 (fhir.resources R4B models)"
_ABSTRACT = frozenset({"Resource", "DomainResource"})
MAX_REASON = 200


class InvalidResource(ValueError):
    """The input is not a valid FHIR R4 resource; the message is a short reason."""


@cache
def resource_class(resource_type: str) -> type[Resource] | None:
    """The model class of a concrete FHIR resource type, None for anything else."""
    if resource_type in _ABSTRACT:
        return None
    try:
        cls = get_fhir_model_class(resource_type)
    except (ValueError, AttributeError, TypeError):
        return None
    return cls if issubclass(cls, Resource) else None


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _short(resource_type: str, exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return f"invalid {resource_type}"
    first = errors[0]
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    reason = f"invalid {resource_type}{_location(tuple(first.get('loc', ())))}: "
    reason += f"{first.get('msg', 'invalid')}{more}"
    return reason[:MAX_REASON]


def validate(data: Any) -> str:
    """Check `data` is a valid FHIR R4 resource; return its resource type.

    Raises `InvalidResource` with a short reason (the first error and how many more).
    """
    if not isinstance(data, dict):
        raise InvalidResource(f"not a JSON object but {type(data).__name__}")
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidResource("no resourceType")
    cls = resource_class(resource_type)
    if cls is None:
        raise InvalidResource(f"unknown resource type {resource_type[:60]!r}")
    try:
        cls.model_validate(data)
    except ValidationError as exc:
        raise InvalidResource(_short(resource_type, exc)) from exc
    except (ValueError, TypeError) as exc:  # a validator that raised outside pydantic
        raise InvalidResource(f"invalid {resource_type}: {exc}"[:MAX_REASON]) from exc
    return resource_type
