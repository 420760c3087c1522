"""A GA4GH Beacon v2 framework onto the same engine and the same tier rules.

Every answer is in the framework's own schemas (ga4gh-beacon/beacon-v2,
`framework/json/responses`; checked by tests/conformance/test_beacon_schemas.py):

- informational, public: `GET /` and `GET /info` (beaconInfoResponse), `GET /service-info`
  (GA4GH service-info 1.0.0), `GET /map` (beaconMapResponse), `GET /configuration`
  (beaconConfigurationResponse), `GET /entry_types` (beaconEntryTypesResponse),
  `GET /filtering_terms` (beaconFilteringTermsResponse). Only the `individual` entry type
  is served; biosamples, genomic variations, analyses, runs, cohorts and datasets are not
  (the map and the configuration say so, and their paths answer a Beacon 404).
- a query, for researchers (the door, then the hub's tier policy, audited):
  `GET /individuals?filters=...` and `POST /individuals` take Beacon filters and a
  `requestedGranularity`, turn them into one federated query (the filters ANDed), and
  answer at the granularity actually given (`meta.returnedGranularity`): records are never
  given in the statistics tier, so a request for them is answered with counts.
- every refusal (a filter we do not read, a body that is not JSON or not a Beacon request,
  no token, a path that is not served) is a beaconErrorResponse (`spe.errors.ErrorShape`).

A suppressed answer never claims absence. A count under the node's threshold (zero
included) is suppressed by the nodes exactly as in `POST /api/v1/query`; Beacon's `exists`
must be a boolean and a count response must carry `numTotalResults`, so a suppressed total
is answered at boolean granularity with `"exists": true` ("not ruled out") and the reason
in `info.suppressed`, never `"exists": false` (which Beacon reads as "no match") and never
a refusal (which would depend on the small group). A suppressed site is not a result set
(a result set must carry `resultsCount`); `info.sites` lists every site with its status.
Fewer answering sites than the policy's `min_sites` give no combined answer: a Beacon 503.

Filters understood (anything else is refused with a 422 naming it):
- ontology terms: `ICD10:<code>` (the code and everything under it), `SNOMED:<code>`,
  `NCIT:C16576` (female), `NCIT:C20197` (male), `DCM:<modality>` (e.g. `DCM:MR`);
- alphanumeric: `age` with `=`, `<`, `<=`, `>`, `>=` and an integer (age at a study),
  `bodyPart` and `manufacturer` with `=`; in a GET, written `age>=18`, `bodyPart=HEAD`.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from gateway.hub import service
from gateway.hub.schemas import FederatedAnswer, NodeResult
from spe.errors import ErrorShape, SPEError
from spe.web import Caller
from spe.wire.query import Answer, Cell
from spe.wire.query import Query as WireQuery

PREFIX = "/api/v1/beacon"
API_VERSION = "v2.0.0"
BEACON_ID = "eu.ehds.spe"
#: Where the framework's schemas and the default model are published ($schema values).
SPEC = "https://raw.githubusercontent.com/ga4gh-beacon/beacon-v2/main"
SEX = {"NCIT:C16576": "female", "NCIT:C20197": "male"}
ALPHANUMERIC = ("age", "bodyPart", "manufacturer")
Granularity = Literal["boolean", "count", "record"]
IncludeResultsets = Literal["ALL", "HIT", "MISS", "NONE"]
#: The default model's entry types this Beacon does not serve (only `individual`).
NOT_SERVED = ("analysis", "biosample", "cohort", "dataset", "genomicVariation", "run")
ENVIRONMENT = {"development": "dev", "test": "test", "production": "prod"}
ORGANIZATION = {"id": BEACON_ID, "name": "EHDS secure processing environment",
                "description": "The central services of a federation of health data "
                               "holders: catalogue, federated query, data permits."}
INDIVIDUAL = {
    "id": "individual",
    "name": "Individual",
    "description": "A person with records at one of the federation's institutions: "
                   "counted, never returned (no record granularity in the statistics "
                   "tier).",
    "ontologyTermForThisType": {"id": "NCIT:C25190", "label": "Person"},
    "partOfSpecification": "Beacon v2.0.0",
    "defaultSchema": {
        "id": "ga4gh-beacon-individual-v2.0.0",
        "name": "Default schema for an individual",
        "referenceToSchemaDefinition":
            f"{SPEC}/models/json/beacon-v2-default-model/individuals/defaultSchema.json",
        "schemaVersion": "v2.0.0"},
    "additionallySupportedSchemas": [],
    "nonFilteredQueriesAllowed": False,
}
RETURNED = [{"entityType": "individual", "schema": "ga4gh-beacon-individual-v2.0.0"}]


class BeaconError(SPEError):
    """A refusal in a Beacon endpoint; rendered as a beaconErrorResponse like every
    refusal under the prefix (`error_shape`)."""

    status_code = 422
    error = "invalid_request"


class BeaconFilterError(BeaconError):
    pass


class TooFewSites(BeaconError):
    status_code = 503
    error = "too_few_sites"


# ---- the request -------------------------------------------------------------------------

Short = Annotated[str, Field(max_length=200)]


class Filter(BaseModel):
    """Beacon's other filter fields (scope, includeDescendantTerms, ...) are ignored."""

    id: str = Field(min_length=1, max_length=100)
    operator: str | None = Field(default=None, max_length=2)  # =, <, <=, >, >=
    value: Short | Annotated[int, Field(ge=-1_000_000, le=1_000_000)] | None = None

    def words(self) -> str:
        """As Beacon's request summary lists filters: `NCIT:C16576`, `age>=18`."""
        if self.operator is None and self.value is None:
            return self.id
        return f"{self.id}{self.operator or '='}{'' if self.value is None else self.value}"


class SchemaPerEntity(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    entityType: str | None = Field(default=None, max_length=100)  # noqa: N815 (Beacon's)
    schema_: str | None = Field(default=None, max_length=500, alias="schema")


class RequestMeta(BaseModel):
    apiVersion: str = Field(default=API_VERSION, max_length=20)  # noqa: N815
    requestedSchemas: list[SchemaPerEntity] = Field(  # noqa: N815
        default_factory=list, max_length=10)


class Pagination(BaseModel):
    skip: int = Field(default=0, ge=0, le=1_000_000)
    limit: int = Field(default=10, ge=0, le=1_000_000)


class BeaconQuery(BaseModel):
    filters: list[Filter] = Field(default_factory=list, max_length=20)
    requestedGranularity: Granularity = "boolean"  # noqa: N815 (Beacon's field name)
    pagination: Pagination = Field(default_factory=Pagination)
    includeResultsetResponses: IncludeResultsets = "HIT"  # noqa: N815
    testMode: bool = False  # noqa: N815


class BeaconRequest(BaseModel):
    meta: RequestMeta = Field(default_factory=RequestMeta)
    query: BeaconQuery = Field(default_factory=BeaconQuery)


_GET_FILTER = re.compile(rf"^({'|'.join(ALPHANUMERIC)})(<=|>=|=|<|>|!)(.*)$")


def get_filter(text: str) -> dict[str, Any]:
    """One filter of a GET: an ontology term's id, or `age>=18`, `bodyPart=HEAD`."""
    m = _GET_FILTER.match(text.strip())
    if m is None:
        return {"id": text.strip()}
    return {"id": m[1], "operator": m[2], "value": m[3]}


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
                            f"{PREFIX}/filtering_terms)")


def to_query(request: BeaconRequest) -> WireQuery:
    if not request.query.filters:
        raise BeaconFilterError("give at least one filter: the whole population is not a "
                                "question")
    criteria = [criterion(f) for f in request.query.filters]
    where = criteria[0] if len(criteria) == 1 else {"type": "and", "of": criteria}
    kind = "boolean" if request.query.requestedGranularity == "boolean" else "count"
    try:
        return WireQuery.model_validate({"where": where, "answer": Answer(kind=kind)})
    except ValueError as exc:
        raise BeaconFilterError(f"filters do not make a valid query: {exc}") from exc


# ---- the answer --------------------------------------------------------------------------

def received_summary(request: BeaconRequest) -> dict[str, Any]:
    """beaconReceivedRequestSummary: the request as this Beacon read it."""
    q = request.query
    summary: dict[str, Any] = {
        "apiVersion": request.meta.apiVersion,
        "requestedSchemas": [s.model_dump(by_alias=True, exclude_none=True)
                             for s in request.meta.requestedSchemas],
        "pagination": q.pagination.model_dump(),
        "requestedGranularity": q.requestedGranularity,
        "filters": [f.words() for f in q.filters],
        "includeResultsetResponses": q.includeResultsetResponses,
    }
    if q.testMode:
        summary["testMode"] = True
    return summary


def response_meta(summary: dict[str, Any], returned: str) -> dict[str, Any]:
    """beaconResponseMeta."""
    return {"beaconId": BEACON_ID, "apiVersion": API_VERSION, "returnedSchemas": RETURNED,
            "returnedGranularity": returned, "receivedRequestSummary": summary}


def _perturbation(cell: Cell) -> dict[str, Any]:
    out: dict[str, Any] = {"perturbed": cell.perturbed}
    if cell.perturbed:
        out |= {"maxNoise": cell.max_noise, "sd": cell.sd}
    if cell.reason:
        out["reason"] = cell.reason
    return out


def shown(cell: Cell | None) -> int | None:
    """The count a cell shows, or None (suppressed, or no cell)."""
    return None if cell is None or cell.suppressed else cell.value


def _suppressed_reason(node: NodeResult) -> str:
    a = node.answer
    assert a is not None
    return (a.total.reason if a.total is not None and a.total.reason
            else f"fewer than {a.threshold} (or too near it to show): not shown")


def site(node: NodeResult, returned: str) -> dict[str, Any]:
    """One site as `info.sites` lists it: its status, and what it showed."""
    out: dict[str, Any] = {"id": node.node_id, "status": node.status, "ms": node.ms}
    a = node.answer
    if a is None:
        if node.reason:
            out["reason"] = node.reason
    elif returned == "boolean" and a.exists:
        out["exists"] = True
    elif returned == "count" and shown(a.total) is not None:
        out["count"] = shown(a.total)
    else:
        out["suppressed"] = _suppressed_reason(node)
    return out


def result_set(node: NodeResult, total: Cell, count: int) -> dict[str, Any]:
    """A site whose count is shown, as a Beacon result set (counts only: no records)."""
    return {"id": node.node_id, "setType": "individual", "exists": count > 0,
            "resultsCount": count, "results": [],
            "info": {"status": node.status, "ms": node.ms, **_perturbation(total)}}


def individuals_response(answer: FederatedAnswer, request: BeaconRequest) -> dict[str, Any]:
    """The federated answer in the framework's boolean or count response (with result
    sets for the sites whose count is shown)."""
    if answer.sites_answering < answer.min_sites:
        # Not a suppression: a suppressed site answers. Who answered depends on the
        # sites' reachability and policies, never on the data.
        raise TooFewSites(f"{answer.sites_answering} of {len(answer.nodes)} sites answered; "
                          f"at least {answer.min_sites} are needed for a combined answer")
    summary = received_summary(request)
    info: dict[str, Any] = {"tier": answer.tier, "sitesAnswering": answer.sites_answering,
                            "minSites": answer.min_sites, "notes": answer.notes}
    returned = "boolean" if request.query.requestedGranularity == "boolean" else "count"
    count = shown(answer.total)
    if returned == "count" and answer.total is not None and count is not None:
        info["sites"] = [site(n, "count") for n in answer.nodes]
        info["total"] = _perturbation(answer.total)
        info["resultSets"] = ("the sites whose count is shown; a suppressed site is no "
                              "result set (it has no count to give): see sites")
        sets = [result_set(n, n.answer.total, c) for n in answer.nodes
                if n.answer is not None and n.answer.total is not None
                and (c := shown(n.answer.total)) is not None]
        return {"meta": response_meta(summary, "count"),
                "responseSummary": {"exists": count > 0, "numTotalResults": count},
                "response": {"resultSets": sets}, "info": info}
    if returned == "count" or not answer.exists:
        # Suppressed: fewer than the threshold, or none, at every site. Not "no": Beacon's
        # exists must be a boolean and false would claim absence; a count needs a number.
        info["suppressed"] = (
            "fewer individuals than the disclosure threshold at every site, possibly none: "
            "not ruled out, not shown (exists: true here means only that); widen the "
            "question (fewer filters)")
    info["sites"] = [site(n, "boolean" if returned == "boolean" else "count")
                     for n in answer.nodes]
    return {"meta": response_meta(summary, "boolean"), "responseSummary": {"exists": True},
            "info": info}


# ---- errors ------------------------------------------------------------------------------

class BeaconErrorDetail(BaseModel):
    errorCode: int  # noqa: N815 (Beacon's field names)
    errorMessage: str  # noqa: N815


class BeaconErrorOut(BaseModel):
    """Beacon v2's beaconErrorResponse."""

    meta: dict[str, Any]
    error: BeaconErrorDetail


def error_body(status: int, reason: str) -> dict[str, Any]:
    """A refusal under the prefix as a beaconErrorResponse (spe.errors.ErrorShape)."""
    if status == 404:
        reason = (f"{reason}: this Beacon serves only the individual entry type; its "
                  f"endpoints are listed by GET {PREFIX}/map")
    elif status == 405:
        reason = f"{reason} (see GET {PREFIX}/map)"
    summary = {"apiVersion": API_VERSION, "requestedSchemas": [], "pagination": {},
               "requestedGranularity": "boolean"}
    return {"meta": response_meta(summary, "boolean") | {"returnedSchemas": []},
            "error": {"errorCode": status,
                      "errorMessage": reason or HTTPStatus(status).phrase}}


error_shape = ErrorShape(PREFIX, error_body, BeaconErrorOut)
ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": BeaconErrorOut, "description": "fewer sites answered than a combined "
                                                  "answer needs, or no federation"}}
router = APIRouter(prefix=PREFIX, tags=["beacon"])


# ---- the query endpoints -----------------------------------------------------------------

async def _individuals(body: BeaconRequest, caller: Caller, request: Request) -> dict:
    query = to_query(body)
    answer = await service.federated_query(request.app.state.ctx, request.app.state.hub,
                                           query, caller)
    return individuals_response(answer, body)


@router.post("/individuals", responses=ERRORS)
async def individuals(body: BeaconRequest, caller: Caller, request: Request) -> dict:
    """Beacon v2 individuals query; statistics tier: boolean or count, never records."""
    return await _individuals(body, caller, request)


GetFilter = Annotated[str, StringConstraints(max_length=500)]


@router.get("/individuals", responses=ERRORS)
async def individuals_get(
    caller: Caller, request: Request,
    filters: Annotated[list[GetFilter], Query(max_length=20)] = [],  # noqa: B006 (FastAPI)
    requestedGranularity: Granularity = "boolean",  # noqa: N803 (Beacon's parameter names)
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=0, le=1_000_000)] = 10,
    includeResultsetResponses: IncludeResultsets = "HIT",  # noqa: N803
) -> dict:
    """The same query as a GET: `filters` repeated or comma-separated."""
    terms = [t for f in filters for t in f.split(",") if t.strip()]
    try:
        body = BeaconRequest.model_validate({"query": {
            "filters": [get_filter(t) for t in terms],
            "requestedGranularity": requestedGranularity,
            "pagination": {"skip": skip, "limit": limit},
            "includeResultsetResponses": includeResultsetResponses}})
    except ValidationError as exc:
        raise BeaconFilterError("filters: " + "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        ) from exc
    return await _individuals(body, caller, request)


# ---- the informational endpoints ---------------------------------------------------------

def _informational_meta(entity: str, schema: str) -> dict[str, Any]:
    """beaconInformationalResponseMeta."""
    return {"beaconId": BEACON_ID, "apiVersion": API_VERSION,
            "returnedSchemas": [{"entityType": entity, "schema": schema}]}


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _environment(request: Request) -> str:
    return ENVIRONMENT[request.app.state.ctx.settings.environment]


@router.get("/")
@router.get("/info")
def info(request: Request) -> dict:
    """beaconInfoResponse."""
    return {"meta": _informational_meta("info", "beacon-info-v2.0.0"),
            "response": {"id": BEACON_ID, "name": "EHDS SPE federated beacon",
                         "apiVersion": API_VERSION, "environment": _environment(request),
                         "organization": {**ORGANIZATION,
                                          "welcomeUrl": f"{_base(request)}/catalogue"},
                         "description": "Counts of individuals across the federation's "
                                        "institutions, small counts suppressed (never "
                                        "shown as none).",
                         "welcomeUrl": f"{_base(request)}/query",
                         "info": {"granularities": ["boolean", "count"],
                                  "entryTypes": ["individual"]}}}


@router.get("/service-info")
def service_info(request: Request) -> dict:
    """GA4GH service-info 1.0.0 for this Beacon."""
    return {"id": BEACON_ID, "name": "EHDS SPE federated beacon",
            "type": {"group": "org.ga4gh", "artifact": "beacon",
                     "version": API_VERSION.removeprefix("v")},
            "description": "Counts of individuals across the federation's institutions, "
                           "small counts suppressed (never shown as none).",
            "organization": {"name": ORGANIZATION["name"], "url": _base(request)},
            "documentationUrl": f"{_base(request)}/docs",
            "environment": _environment(request), "version": API_VERSION}


def _not_served() -> dict[str, Any]:
    return {"entryTypesServed": ["individual"],
            "notServed": {t: "not served by this Beacon (no endpoint: 404)"
                          for t in NOT_SERVED}}


@router.get("/map")
def beacon_map(request: Request) -> dict:
    """beaconMapResponse: the one endpoint set, individuals."""
    root = f"{_base(request)}{PREFIX}/individuals"
    return {"meta": _informational_meta("map", "beacon-map-v2.0.0"),
            "response": {"$schema": f"{SPEC}/framework/json/configuration/"
                                    "beaconMapSchema.json",
                         "endpointSets": {"individual": {
                             "entryType": "individual", "rootUrl": root,
                             "openAPIEndpointsDefinition": f"{_base(request)}/openapi.json",
                             "endpoints": {}}}},
            "info": _not_served()}


@router.get("/configuration")
def configuration(request: Request) -> dict:
    """beaconConfigurationResponse."""
    status = {"dev": "DEV", "test": "TEST", "prod": "PROD"}[_environment(request)]
    return {"meta": _informational_meta("configuration", "beacon-configuration-v2.0.0"),
            "response": {"$schema": f"{SPEC}/framework/json/configuration/"
                                    "beaconConfigurationSchema.json",
                         "maturityAttributes": {"productionStatus": status},
                         "securityAttributes": {"defaultGranularity": "boolean",
                                                "securityLevels": ["REGISTERED"]},
                         "entryTypes": {"individual": INDIVIDUAL}},
            "info": _not_served()}


@router.get("/entry_types")
def entry_types() -> dict:
    """beaconEntryTypesResponse."""
    return {"meta": _informational_meta("entryType", "beacon-entry-types-v2.0.0"),
            "response": {"entryTypes": {"individual": INDIVIDUAL}}, "info": _not_served()}


@router.get("/filtering_terms")
def filtering_terms() -> dict:
    """beaconFilteringTermsResponse."""
    scopes = ["individual"]
    terms = [
        {"type": "ontologyTerm", "id": "ICD10:<code>", "label": "ICD-10 code or category "
         "(and every code under it)"},
        {"type": "ontologyTerm", "id": "SNOMED:<code>", "label": "SNOMED CT concept"},
        {"type": "ontologyTerm", "id": "NCIT:C16576", "label": "female"},
        {"type": "ontologyTerm", "id": "NCIT:C20197", "label": "male"},
        {"type": "ontologyTerm", "id": "DCM:<modality>", "label": "imaging modality "
         "(DICOM CID 29, e.g. DCM:MR)"},
        {"type": "alphanumeric", "id": "age", "label": "age at a study (years); "
         "operators =, <, <=, >, >="},
        {"type": "alphanumeric", "id": "bodyPart", "label": "DICOM body part examined; "
         "operator ="},
        {"type": "alphanumeric", "id": "manufacturer", "label": "scanner manufacturer; "
         "operator ="},
    ]
    resources = [
        {"id": "icd10", "name": "International Classification of Diseases, 10th revision",
         "nameSpacePrefix": "ICD10", "url": "https://icd.who.int/browse10"},
        {"id": "snomedct", "name": "SNOMED CT", "nameSpacePrefix": "SNOMED",
         "url": "http://snomed.info/sct"},
        {"id": "ncit", "name": "NCI Thesaurus", "nameSpacePrefix": "NCIT",
         "iriPrefix": "http://purl.obolibrary.org/obo/NCIT_",
         "url": "http://purl.obolibrary.org/obo/ncit.owl"},
        {"id": "dcm", "name": "DICOM Controlled Terminology", "nameSpacePrefix": "DCM",
         "url": "https://dicom.nema.org/medical/dicom/current/output/chtml/part16/"},
    ]
    return {"meta": _informational_meta("filteringTerm", "beacon-filtering-terms-v2.0.0"),
            "response": {"filteringTerms": [{**t, "scopes": scopes} for t in terms],
                         "resources": resources}}


__all__ = ["PREFIX", "error_shape", "router"]
