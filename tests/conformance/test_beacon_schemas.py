"""Every Beacon v2 response of the hub, validated against the official GA4GH schemas.

The schemas are ga4gh-beacon/beacon-v2's `framework/json` at commit 47af89c, vendored in
tests/conformance/beacon_v2 with their relative paths (README there). They are read into a
`referencing` Registry under a made-up base URI, so each relative `$ref` resolves to a
vendored file and nothing is fetched: a `$ref` outside the registry fails the test.

Responses are validated with `jsonschema` (Draft 2020-12, which every file declares), each
against the schema its endpoint and its `meta.returnedGranularity` name: the model's
`ResultsOKResponse` is a `oneOf` of the boolean, count and result-set responses, which no
count response can satisfy (a count response is also a valid boolean response), so the
granularity the response says it has picks the one; a response with result sets is also
checked as a beaconResultsetsResponse.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from tests.gateway.conftest import RARE, SITES

ROOT = Path(__file__).parent / "beacon_v2" / "framework" / "json"
BASE = "https://beacon-v2.invalid/framework/json/"  # never fetched: only a base for $refs
PREFIX = "/api/v1/beacon"


@cache
def registry() -> Registry:
    return Registry().with_resources(
        (BASE + p.relative_to(ROOT).as_posix(), Resource.from_contents(json.loads(p.read_text())))
        for p in sorted(ROOT.rglob("*.json")))


def errors(instance: dict, schema: str) -> list[str]:
    """The schema's complaints about `instance`, one line each (none: it conforms)."""
    validator = Draft202012Validator({"$ref": BASE + schema}, registry=registry(),
                                     format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [f"{schema} at /{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(instance)]


INFORMATIONAL = {
    "/": "responses/beaconInfoResponse.json",
    "/info": "responses/beaconInfoResponse.json",
    "/service-info": "responses/ga4gh-service-info-1-0-0-schema.json",
    "/map": "responses/beaconMapResponse.json",
    "/configuration": "responses/beaconConfigurationResponse.json",
    "/entry_types": "responses/beaconEntryTypesResponse.json",
    "/filtering_terms": "responses/beaconFilteringTermsResponse.json",
}
ERROR = "responses/beaconErrorResponse.json"


def query_schemas(body: dict) -> list[str]:
    """The framework's schemas a query response must meet, by its returned granularity."""
    granularity = body.get("meta", {}).get("returnedGranularity")
    out = [{"boolean": "responses/beaconBooleanResponse.json",
            "count": "responses/beaconCountResponse.json"}.get(
        granularity, "responses/beaconResultsetsResponse.json")]
    if "response" in body:
        out.append("responses/beaconResultsetsResponse.json")
    return list(dict.fromkeys(out))


def request_body(filters: list[dict], granularity: str) -> dict:
    body = {"meta": {"apiVersion": "v2.0.0"},
            "query": {"filters": filters, "requestedGranularity": granularity}}
    # What the tests send is a Beacon request too.
    assert errors(body, "requests/beaconRequestBody.json") == []
    return body


FEMALE = [{"id": "NCIT:C16576"}]
ADULTS = [{"id": "age", "operator": ">=", "value": "18"}]
RARE_CODE = [{"id": f"ICD10:{RARE}"}]


def test_the_vendored_schemas_resolve_without_a_network():
    roots = [*INFORMATIONAL.values(), ERROR, "responses/beaconBooleanResponse.json",
             "responses/beaconCountResponse.json", "responses/beaconResultsetsResponse.json",
             "requests/beaconRequestBody.json"]
    for schema in roots:
        Draft202012Validator.check_schema(registry()[BASE + schema].contents)
        errors({}, schema)  # follows every $ref it meets; an unknown one raises
    assert len(list(ROOT.rglob("*.json"))) == 33


def test_the_old_responses_fail_these_schemas():
    """Not vacuous: what the endpoint answered before (issue 17) is refused."""
    meta = {"beaconId": "eu.ehds.spe", "apiVersion": "v2.0"}
    old = [
        ({"meta": meta, "response": {"id": "eu.ehds.spe", "name": "EHDS SPE federated beacon",
                                     "granularities": ["boolean", "count"]}},
         "responses/beaconInfoResponse.json"),
        ({"meta": meta, "response": {"filteringTerms": [{"type": "ontologyTerm",
                                                         "id": "NCIT:C16576"}]}},
         "responses/beaconFilteringTermsResponse.json"),
        ({"meta": {**meta, "returnedGranularity": "count",
                   "receivedRequestSummary": {"requestedGranularity": "count",
                                              "filters": ["ICD10:Z99.8"]},
                   "returnedSchemas": [{"entityType": "individual"}]},
          "responseSummary": {"exists": False},
          "response": {"resultSets": [{"id": "site-a", "setType": "individual",
                                       "exists": False, "info": {"suppressed": "..."}}]}},
         "responses/beaconCountResponse.json"),
        ({"error": "invalid_request", "detail": "filter 'HP:0001250' is not supported"},
         ERROR),
    ]
    for body, schema in old:
        assert errors(body, schema), schema


def test_every_beacon_response_validates(federation):
    """Each endpoint, each granularity, a suppressed answer and each refusal: 0 errors."""
    hub = federation.hub
    auth = federation.token("vera")
    seen: list[tuple[str, int, list[str]]] = []  # (what, status, schema errors)

    def check(what: str, resp, schemas: list[str], status: int = 200) -> dict:
        assert resp.status_code == status, (what, resp.text)
        body = resp.json()
        seen.append((what, resp.status_code,
                     [e for s in schemas for e in errors(body, s)]))
        return body

    bodies = {path: check(f"GET {path}", hub.get(PREFIX + path), [schema])
              for path, schema in INFORMATIONAL.items()}
    # `format: uri` is not checked by jsonschema without an RFC 3987 package: by hand.
    for url in (bodies["/map"]["response"]["endpointSets"]["individual"]["rootUrl"],
                bodies["/service-info"]["organization"]["url"],
                bodies["/service-info"]["documentationUrl"]):
        parts = urlsplit(url)
        assert (parts.scheme, bool(parts.netloc)) == ("http", True), url

    def ask(what: str, filters: list[dict], granularity: str) -> dict:
        resp = hub.post(f"{PREFIX}/individuals", headers=auth,
                        json=request_body(filters, granularity))
        return check(what, resp, query_schemas(resp.json()))

    boolean = ask("POST boolean", ADULTS, "boolean")
    assert boolean["meta"]["returnedGranularity"] == "boolean"
    count = ask("POST count", FEMALE, "count")
    assert count["meta"]["returnedGranularity"] == "count"
    assert count["response"]["resultSets"]  # result sets were validated too
    record = ask("POST record (answered as counts)", FEMALE, "record")
    assert record["meta"]["returnedGranularity"] == "count"
    suppressed = ask("POST count, suppressed", RARE_CODE, "count")
    assert "suppressed" in suppressed["info"]
    suppressed_boolean = ask("POST boolean, suppressed", RARE_CODE, "boolean")
    assert "suppressed" in suppressed_boolean["info"]
    for granularity in ("boolean", "count"):
        resp = hub.get(f"{PREFIX}/individuals", headers=auth,
                       params={"filters": "NCIT:C16576,age>=18",
                               "requestedGranularity": granularity})
        check(f"GET {granularity}", resp, query_schemas(resp.json()))

    # Refusals, each a beaconErrorResponse.
    refusals = [
        ("bad filter", hub.post(f"{PREFIX}/individuals", headers=auth,
                                json=request_body([{"id": "HP:0001250"}], "count")), 422),
        ("bad operator", hub.post(f"{PREFIX}/individuals", headers=auth, json=request_body(
            [{"id": "age", "operator": "!", "value": "4"}], "count")), 422),
        ("no filter", hub.post(f"{PREFIX}/individuals", headers=auth,
                               json=request_body([], "count")), 422),
        ("bad filter in a GET", hub.get(f"{PREFIX}/individuals", headers=auth,
                                        params={"filters": "HP:0001250"}), 422),
        ("bad JSON", hub.post(f"{PREFIX}/individuals", content=b'{"meta": {',
                              headers={**auth, "content-type": "application/json"}), 422),
        ("not a Beacon request", hub.post(f"{PREFIX}/individuals", headers=auth, json={
            "query": {"requestedGranularity": "everything"}}), 422),
        ("unknown path", hub.get(f"{PREFIX}/biosamples"), 404),
        ("unknown path, deeper", hub.post(f"{PREFIX}/g_variants/x", json={}), 404),
        ("wrong method", hub.delete(f"{PREFIX}/individuals"), 405),
        ("no token", hub.post(f"{PREFIX}/individuals",
                              json=request_body(FEMALE, "count")), 401),
    ]
    for what, resp, status in refusals:
        body = check(what, resp, [ERROR], status)
        assert body["error"]["errorCode"] == status
    # Two sites down: fewer than min_sites answer, no combined answer (a Beacon 503).
    for down in SITES[1:]:
        federation.running[down].stop()
    check("too few sites", hub.post(f"{PREFIX}/individuals", headers=auth,
                                    json=request_body(FEMALE, "count")), [ERROR], 503)

    # Outside the prefix, refusals keep the project's own shape.
    assert hub.get("/api/v1/beaconx").json() == {"error": "not_found", "detail": "Not Found"}

    assert len(seen) == len(INFORMATIONAL) + 7 + len(refusals) + 1
    assert [(what, errs) for what, _, errs in seen if errs] == []
    print(f"\n{len(seen)} Beacon responses validated, 0 errors")
