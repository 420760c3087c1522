"""A GA4GH Beacon v2 style interface onto the same engine and the same tier rules.

`POST /api/v1/beacon/individuals` takes Beacon filters and a `requestedGranularity`
(boolean, count, record), turns them into one federated query (the filters ANDed), and
answers in Beacon's envelope with the `returnedGranularity` actually given: record-level
answers are never given in the statistics tier, so a request for records comes back as
counts, and suppressed counts stay suppressed (no `resultsCount`, never 0).

Filters understood (anything else is refused with a 422 naming it):
- ontology terms: `ICD10:<code>` (the code and everything under it), `SNOMED:<code>`,
  `NCIT:C16576` (female), `NCIT:C20197` (male), `DCM:<modality>` (e.g. `DCM:MR`);
- alphanumeric: `age` with `=`, `<`, `<=`, `>`, `>=` and an integer (age at a study),
  `bodyPart` and `manufacturer` with `=`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from gateway.hub import service
from gateway.hub.schemas import FederatedAnswer
from spe.errors import SPEError
from spe.web import Caller
from spe.wire.query import Answer, Query

router = APIRouter(prefix="/api/v1/beacon", tags=["beacon"])
API_VERSION = "v2.0"
BEACON_ID = "eu.ehds.spe"
SEX = {"NCIT:C16576": "female", "NCIT:C20197": "male"}
Granularity = Literal["boolean", "count", "record"]


class BeaconFilterError(SPEError):
    status_code = 422
    error = "invalid_request"


class Filter(BaseModel):
    """Beacon's other filter fields (scope, includeDescendantTerms, ...) are ignored."""

    id: str = Field(min_length=1, max_length=100)
    operator: str | None = Field(default=None, max_length=2)  # =, <, <=, >, >=
    value: (Annotated[str, Field(max_length=200)]
            | Annotated[int, Field(ge=-1_000_000, le=1_000_000)] | None) = None


class BeaconQuery(BaseModel):
    filters: list[Filter] = Field(default_factory=list, max_length=20)
    requestedGranularity: Granularity = "boolean"  # noqa: N815 (Beacon's field name)


class BeaconRequest(BaseModel):
    meta: dict[Annotated[str, Field(max_length=100)], Any] = Field(default_factory=dict,
                                                                    max_length=20)
    query: BeaconQuery = Field(default_factory=BeaconQuery)


def _age(f: Filter) -> dict:
    try:
        years = int(f.value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise BeaconFilterError(f"filter age: value {f.value!r} is not a whole number") from exc
    bounds = {"=": {"min": years, "max": years}, ">=": {"min": years},
              ">": {"min": years + 1}, "<=": {"max": years}, "<": {"max": years - 1}}
    if f.operator not in bounds:
        raise BeaconFilterError(f"filter age: operator {f.operator!r} is not one of "
                                "=, <, <=, >, >=")
    return {"type": "patient", "age": {**bounds[f.operator], "at": "study"}}


def criterion(f: Filter) -> dict:
    """One Beacon filter as a criterion of spe.wire.query."""
    scheme, _, code = f.id.partition(":")
    if f.id in SEX:
        return {"type": "patient", "sex": SEX[f.id]}
    if scheme == "ICD10" and code:
        return {"type": "condition", "system": "icd-10", "code": code, "prefix": True}
    if scheme == "SNOMED" and code:
        return {"type": "condition", "system": "snomed", "code": code}
    if scheme == "DCM" and code:
        return {"type": "imaging", "modality": [code]}
    if f.id == "age":
        return _age(f)
    if f.id in ("bodyPart", "manufacturer"):
        if f.operator not in (None, "=") or f.value in (None, ""):
            raise BeaconFilterError(f"filter {f.id}: use operator = with a value")
        field = "body_part" if f.id == "bodyPart" else "manufacturer"
        value = [str(f.value)] if field == "body_part" else str(f.value)
        return {"type": "imaging", field: value}
    raise BeaconFilterError(f"filter {f.id!r} is not supported (see GET "
                            "/api/v1/beacon/filtering_terms)")


def to_query(request: BeaconRequest) -> Query:
    if not request.query.filters:
        raise BeaconFilterError("give at least one filter: the whole population is not a "
                                "question")
    criteria = [criterion(f) for f in request.query.filters]
    where = criteria[0] if len(criteria) == 1 else {"type": "and", "of": criteria}
    kind = "boolean" if request.query.requestedGranularity == "boolean" else "count"
    try:
        return Query.model_validate({"where": where, "answer": Answer(kind=kind)})
    except ValueError as exc:
        raise BeaconFilterError(f"filters do not make a valid query: {exc}") from exc


def envelope(answer: FederatedAnswer, request: BeaconRequest, returned: str) -> dict:
    result_sets = []
    for node in answer.nodes:
        entry: dict[str, Any] = {"id": node.node_id, "setType": "individual",
                                 "info": {"status": node.status, "ms": node.ms}}
        a = node.answer
        if a is not None:
            shown = a.total is not None and not a.total.suppressed
            entry["exists"] = bool(a.exists) if returned == "boolean" else shown
            if returned == "count" and shown:
                entry["resultsCount"] = a.total.value
            if not shown:
                entry["info"]["suppressed"] = (a.total.reason if a.total is not None
                                               and a.total.reason
                                               else f"fewer than {a.threshold}")
        elif node.reason:
            entry["info"]["reason"] = node.reason
        result_sets.append(entry)
    summary: dict[str, Any] = {"exists": bool(answer.exists) if returned == "boolean"
                               else bool(answer.total and not answer.total.suppressed)}
    if returned == "count" and answer.total is not None and not answer.total.suppressed:
        summary["numTotalResults"] = answer.total.value
    return {
        "meta": {"beaconId": BEACON_ID, "apiVersion": API_VERSION,
                 "returnedGranularity": returned,
                 "receivedRequestSummary": {
                     "requestedGranularity": request.query.requestedGranularity,
                     "filters": [f.id for f in request.query.filters]},
                 "returnedSchemas": [{"entityType": "individual"}]},
        "responseSummary": summary,
        "response": {"resultSets": result_sets},
        "info": {"tier": answer.tier, "sitesAnswering": answer.sites_answering,
                 "minSites": answer.min_sites, "notes": answer.notes},
    }


@router.post("/individuals")
async def individuals(body: BeaconRequest, caller: Caller, request: Request) -> dict:
    """Beacon v2 individuals query; statistics tier: boolean or count, never records."""
    query = to_query(body)
    answer = await service.federated_query(request.app.state.ctx, request.app.state.hub,
                                           query, caller)
    returned = "boolean" if body.query.requestedGranularity == "boolean" else "count"
    return envelope(answer, body, returned)


@router.get("/info")
def info() -> dict:
    return {"meta": {"beaconId": BEACON_ID, "apiVersion": API_VERSION},
            "response": {"id": BEACON_ID, "name": "EHDS SPE federated beacon",
                         "description": "Counts of individuals across the federation's "
                                        "institutions, small counts suppressed.",
                         "granularities": ["boolean", "count"]}}


@router.get("/filtering_terms")
def filtering_terms() -> dict:
    terms = [
        {"type": "ontologyTerm", "id": "ICD10:<code>", "label": "ICD-10 code or category"},
        {"type": "ontologyTerm", "id": "SNOMED:<code>", "label": "SNOMED CT concept"},
        {"type": "ontologyTerm", "id": "NCIT:C16576", "label": "female"},
        {"type": "ontologyTerm", "id": "NCIT:C20197", "label": "male"},
        {"type": "ontologyTerm", "id": "DCM:<modality>", "label": "imaging modality"},
        {"type": "alphanumeric", "id": "age", "label": "age at a study (years)"},
        {"type": "alphanumeric", "id": "bodyPart", "label": "DICOM body part examined"},
        {"type": "alphanumeric", "id": "manufacturer", "label": "scanner manufacturer"},
    ]
    return {"meta": {"beaconId": BEACON_ID, "apiVersion": API_VERSION},
            "response": {"filteringTerms": terms}}
