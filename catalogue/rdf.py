"""The catalogue as HealthDCAT-AP RDF, and its validation against the vendored SHACL shapes.

The shapes (catalogue/shapes, see its README) are the HealthDCAT-AP NON_PUBLIC profile over
DCAT-AP 3.0.0; both are read from disk into one shapes graph, the `owl:imports` between them
dropped, so validation never touches the network.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from pyshacl import validate as shacl_validate
from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, OWL, RDF, RDFS, SKOS, XSD

from catalogue import icd10, vocabulary
from catalogue.models import Dataset
from spe.wire.descriptors import CODING_SYSTEM_NAMES

DCATAP = Namespace("http://data.europa.eu/r5r/")
HEALTHDCATAP = Namespace("http://healthdataportal.eu/ns/health#")
DPV = Namespace("https://w3id.org/dpv#")
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")

ICD10 = "http://hl7.org/fhir/sid/icd-10"
SHAPES_DIR = Path(__file__).resolve().parent / "shapes"
SHAPE_FILES = ("dcat-ap-3.0.0-shapes.ttl", "healthdcat-ap-shapes-nonpublic.ttl")

CATALOGUE_TITLE = "EHDS secure processing environment: dataset catalogue"
CATALOGUE_DESCRIPTION = (
    "Datasets held by the institutions of the federation, described in HealthDCAT-AP from "
    "descriptors harvested from their nodes (counts below the suppression threshold omitted, "
    "with complements so that none can be recomputed from a total; age and date ranges "
    "trimmed to at least that many patients beyond each end)."
)

JSONLD_CONTEXT = {
    "dcat": str(DCAT), "dct": str(DCTERMS), "foaf": str(FOAF), "vcard": str(VCARD),
    "xsd": str(XSD), "rdfs": str(RDFS), "skos": str(SKOS), "dcatap": str(DCATAP),
    "healthdcatap": str(HEALTHDCATAP), "dpv": str(DPV),
}


def catalogue_iri(base_url: str) -> URIRef:
    return URIRef(f"{base_url.rstrip('/')}/api/v1/catalogue")


def dataset_iri(base_url: str, identifier: str) -> URIRef:
    return URIRef(f"{base_url.rstrip('/')}/api/v1/catalogue/datasets/{identifier}")


def new_graph() -> Graph:
    g = Graph()
    for prefix, ns in JSONLD_CONTEXT.items():
        g.bind(prefix, ns)
    return g


def _mailto(email: str) -> URIRef:
    return URIRef(email if email.startswith("mailto:") else f"mailto:{email}")


def _agent(g: Graph, name: str, email: str) -> BNode:
    """A foaf:Agent with its name and one contact point (HealthDCAT-AP's agent shapes)."""
    agent, kind = BNode(), BNode()
    g.add((agent, RDF.type, FOAF.Agent))
    g.add((agent, FOAF.name, Literal(name)))
    g.add((agent, DCAT.contactPoint, kind))
    _kind(g, kind, name, email)
    return agent


def _kind(g: Graph, kind: BNode, name: str, email: str) -> None:
    g.add((kind, RDF.type, VCARD.Kind))
    g.add((kind, VCARD.fn, Literal(name)))
    g.add((kind, VCARD.hasEmail, _mailto(email)))


def _count(g: Graph, subject: URIRef, prop: URIRef, value: int | None) -> None:
    if value is not None:  # a suppressed count is left out, never written as 0
        g.add((subject, prop, Literal(value, datatype=XSD.nonNegativeInteger)))


def population_coverage(ds: Dataset) -> str:
    """The curated text, else one made from the harvested figures."""
    if ds.population_coverage:
        return ds.population_coverage
    text = f"Patients with imaging studies at {ds.node_name}"
    if ds.min_typical_age is not None and ds.max_typical_age is not None:
        text += f", typically aged {ds.min_typical_age} to {ds.max_typical_age} at the study"
    if ds.temporal_start and ds.temporal_end:
        text += f", imaged {ds.temporal_start:%Y} to {ds.temporal_end:%Y}"
    return text + "."


def add_dataset(g: Graph, ds: Dataset, base_url: str) -> URIRef:
    s = dataset_iri(base_url, ds.identifier)
    g.add((s, RDF.type, DCAT.Dataset))
    g.add((s, DCTERMS.identifier, Literal(ds.identifier)))
    g.add((s, DCTERMS.title, Literal(ds.title, lang="en")))
    g.add((s, DCTERMS.description, Literal(ds.description, lang="en")))
    for keyword in ds.keywords:
        g.add((s, DCAT.keyword, Literal(keyword, lang="en")))
    for theme in ds.themes:
        g.add((s, DCAT.theme, URIRef(theme)))
    for category in ds.health_categories:
        g.add((s, HEALTHDCATAP.healthCategory, URIRef(category)))
    if ds.dataset_type:
        g.add((s, DCTERMS.type, URIRef(ds.dataset_type)))
    g.add((s, DCTERMS.accessRights, URIRef(vocabulary.ACCESS_RIGHTS + ds.access_rights)))
    for eli in ds.applicable_legislation:
        g.add((s, DCATAP.applicableLegislation, URIRef(eli)))
    g.add((s, DCTERMS.publisher, _agent(g, ds.publisher_name, ds.publisher_email)))
    g.add((s, HEALTHDCATAP.hdab, _agent(g, ds.hdab_name, ds.hdab_email)))
    contact = BNode()
    _kind(g, contact, ds.publisher_name, ds.contact_email)
    g.add((s, DCAT.contactPoint, contact))
    for purpose in ds.purposes:
        g.add((s, DPV.hasPurpose, URIRef(purpose)))
    for basis in ds.legal_bases:
        g.add((s, DPV.hasLegalBasis, URIRef(basis)))

    _count(g, s, HEALTHDCATAP.numberOfRecords, ds.number_of_records)
    _count(g, s, HEALTHDCATAP.numberOfUniqueIndividuals, ds.number_of_unique_individuals)
    _count(g, s, HEALTHDCATAP.minTypicalAge, ds.min_typical_age)
    _count(g, s, HEALTHDCATAP.maxTypicalAge, ds.max_typical_age)
    for system in ds.coding_systems:
        # The code system's canonical (FHIR) URI; the vocabulary is not fixed yet.
        g.add((s, HEALTHDCATAP.hasCodingSystem, URIRef(system)))
    for condition in ds.conditions:
        # An ICD-10 category held by at least the threshold of patients (the node lists no
        # others); HealthDCAT-AP's HasCodeValues shape: an identifier and its scheme.
        concept = BNode()
        g.add((concept, RDF.type, SKOS.Concept))
        g.add((concept, DCTERMS.identifier,
               Literal(f"{ICD10}#{condition['value']}", datatype=XSD.anyURI)))
        g.add((concept, SKOS.notation, Literal(condition["value"])))
        g.add((concept, SKOS.prefLabel,
               Literal(icd10.title(condition["value"])
                       or f"ICD-10 category {condition['value']}", lang="en")))
        g.add((concept, SKOS.inScheme, URIRef(ICD10)))
        g.add((s, HEALTHDCATAP.hasCodeValues, concept))
    g.add((s, HEALTHDCATAP.populationCoverage,
           Literal(population_coverage(ds), lang="en")))
    if ds.temporal_start or ds.temporal_end:
        period = BNode()
        g.add((period, RDF.type, DCTERMS.PeriodOfTime))
        if ds.temporal_start:
            g.add((period, DCAT.startDate, Literal(ds.temporal_start, datatype=XSD.date)))
        if ds.temporal_end:
            g.add((period, DCAT.endDate, Literal(ds.temporal_end, datatype=XSD.date)))
        g.add((s, DCTERMS.temporal, period))
    g.add((s, DCTERMS.modified, Literal(ds.harvested_at, datatype=XSD.dateTime)))

    provenance = BNode()
    g.add((provenance, RDF.type, DCTERMS.ProvenanceStatement))
    systems = ", ".join(CODING_SYSTEM_NAMES.get(c, c) for c in ds.coding_systems) or "none"
    g.add((provenance, RDFS.label, Literal(
        f"Harvested {ds.harvested_at:%Y-%m-%d} from the local index of node {ds.node_id} "
        f"({ds.node_name}); counts below {ds.suppression_threshold} suppressed, with "
        f"complements so that none can be recomputed from a total; age and date ranges "
        f"trimmed to at least {ds.suppression_threshold} patients beyond each end; "
        f"condition coding systems: {systems}.", lang="en")))
    g.add((s, DCTERMS.provenance, provenance))

    # NON_PUBLIC data is not downloadable: the distribution points to where access is sought.
    dist = BNode()
    g.add((dist, RDF.type, DCAT.Distribution))
    g.add((dist, DCAT.accessURL, s))
    g.add((dist, DCTERMS.title, Literal(f"Access to {ds.title} via a data permit", lang="en")))
    g.add((dist, DCTERMS.accessRights, URIRef(vocabulary.ACCESS_RIGHTS + ds.access_rights)))
    for eli in ds.applicable_legislation:
        g.add((dist, DCATAP.applicableLegislation, URIRef(eli)))
    g.add((s, DCAT.distribution, dist))
    return s


def catalogue_graph(datasets: Iterable[Dataset], base_url: str) -> Graph:
    """The whole catalogue: one dcat:Catalog listing every dataset."""
    g = new_graph()
    cat = catalogue_iri(base_url)
    g.add((cat, RDF.type, DCAT.Catalog))
    g.add((cat, DCTERMS.title, Literal(CATALOGUE_TITLE, lang="en")))
    g.add((cat, DCTERMS.description, Literal(CATALOGUE_DESCRIPTION, lang="en")))
    g.add((cat, DCTERMS.publisher,
           _agent(g, vocabulary.DEFAULT_HDAB_NAME, vocabulary.DEFAULT_HDAB_EMAIL)))
    g.add((cat, DCATAP.applicableLegislation, URIRef(vocabulary.EHDS_REGULATION)))
    for ds in datasets:
        g.add((cat, DCAT.dataset, add_dataset(g, ds, base_url)))
    return g


def dataset_graph(ds: Dataset, base_url: str) -> Graph:
    g = new_graph()
    add_dataset(g, ds, base_url)
    return g


@lru_cache(maxsize=1)
def shapes_graph() -> Graph:
    """Both vendored shape files in one graph, read from disk; owl:imports dropped."""
    g = Graph()
    for name in SHAPE_FILES:
        g.parse(SHAPES_DIR / name, format="turtle")
    g.remove((None, OWL.imports, None))
    return g


def validate(graph: Graph) -> tuple[bool, str]:
    """(conforms, report text) of the graph against the HealthDCAT-AP NON_PUBLIC shapes."""
    conforms, _report, text = shacl_validate(
        graph, shacl_graph=shapes_graph(), inference="none", abort_on_first=False,
        allow_warnings=True, meta_shacl=False, advanced=False, do_owl_imports=False,
    )
    return bool(conforms), str(text)


def serialize(graph: Graph, media_type: str) -> str:
    if media_type == "text/turtle":
        return graph.serialize(format="turtle")
    return graph.serialize(format="json-ld", context=JSONLD_CONTEXT, auto_compact=True)


__all__ = ["catalogue_graph", "dataset_graph", "dataset_iri", "serialize", "shapes_graph",
           "validate"]
