"""The institutions of the federation: fictional hospitals with their own case mix and fleet.

Site ids are `site-a`, `site-b`, ... in order. The first eight hospitals are distinct; past
them the list repeats with a campus suffix (the CLI allows up to 26 sites).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

from spe.synth.codes import CONDITIONS
from spe.synth.scanners import Device, make_fleet

# Multipliers of the base prevalences (codes.CONDITIONS): each profile is a specialised
# centre, so the same query gives different answers at different sites.
PROFILES: dict[str, dict[str, float]] = {
    "neuro": {"glioma": 5.0, "multiple_sclerosis": 4.0, "stroke": 2.5, "alzheimer": 2.0,
              "als": 4.0, "huntington": 3.0, "breast_cancer": 0.5, "lung_cancer": 0.5},
    "oncology": {"breast_cancer": 4.0, "lung_cancer": 4.0, "glioma": 1.5, "stroke": 0.5,
                 "multiple_sclerosis": 0.5},
    "cardiopulmonary": {"myocardial_infarction": 3.0, "copd": 2.5, "hypertension": 1.3,
                        "cystic_fibrosis": 4.0, "type2_diabetes": 1.2, "glioma": 0.5},
    "general": {},
}
MAX_PREVALENCE = 0.6


@dataclass(frozen=True)
class Town:
    name: str
    postal_prefix: str  # the leading digits of its postal codes


@dataclass(frozen=True)
class SiteTemplate:
    name: str
    short: str  # three letters: MRN prefix, accession prefix, station names
    city: str
    region: str  # NUTS 3 code
    country: str  # ISO 3166-1 alpha-2
    language: str
    street_address: str
    postal_code: str
    department: str
    profile: str
    vendors: dict[str, float]
    towns: tuple[Town, ...]
    utc_offset_hours: int  # standard time; EU summer time is added in clock.py


TEMPLATES: tuple[SiteTemplate, ...] = (
    SiteTemplate(
        "Hospital Universitario Valle del Henares", "HVH", "Madrid", "ES300", "ES", "es",
        "Avenida de la Ilustración 112", "28029", "Servicio de Radiodiagnóstico", "neuro",
        {"siemens": 0.75, "ge": 0.15, "philips": 0.10},
        (Town("Madrid", "280"), Town("Alcalá de Henares", "288"), Town("Getafe", "289"),
         Town("Leganés", "289"), Town("Torrejón de Ardoz", "288")), 1),
    SiteTemplate(
        "Universitätsklinikum Rheinaue", "UKR", "Köln", "DEA23", "DE", "de", "Auenweg 40",
        "50679", "Institut für Diagnostische und Interventionelle Radiologie", "oncology",
        {"ge": 0.70, "siemens": 0.20, "philips": 0.10},
        (Town("Köln", "50"), Town("Bonn", "53"), Town("Leverkusen", "513"),
         Town("Bergisch Gladbach", "514"), Town("Brühl", "503")), 1),
    SiteTemplate(
        "Centre Hospitalier Universitaire Garonne-Lauragais", "CGL", "Toulouse", "FRJ23", "FR",
        "fr", "12 allée des Platanes", "31059", "Service d'Imagerie Médicale",
        "cardiopulmonary", {"philips": 0.70, "ge": 0.15, "siemens": 0.10, "agfa": 0.05},
        (Town("Toulouse", "310"), Town("Blagnac", "317"), Town("Colomiers", "317"),
         Town("Muret", "316"), Town("Balma", "311")), 1),
    SiteTemplate(
        "Ospedale Maggiore di San Vittore", "OSV", "Milano", "ITC4C", "IT", "it",
        "Via dei Tigli 8", "20122", "Dipartimento di Diagnostica per Immagini", "general",
        {"canon": 0.60, "siemens": 0.20, "ge": 0.20},
        (Town("Milano", "201"), Town("Monza", "209"), Town("Sesto San Giovanni", "200"),
         Town("Rho", "200")), 1),
    SiteTemplate(
        "Amstelland Universitair Medisch Centrum", "AUM", "Amsterdam", "NL329", "NL", "nl",
        "Meibergpad 21", "1105", "Afdeling Radiologie en Nucleaire Geneeskunde", "neuro",
        {"philips": 0.55, "siemens": 0.35, "ge": 0.10},
        (Town("Amsterdam", "10"), Town("Amstelveen", "118"), Town("Diemen", "111"),
         Town("Zaandam", "150")), 1),
    SiteTemplate(
        "Szpital Uniwersytecki Nadwiślański", "SUN", "Kraków", "PL213", "PL", "pl",
        "ul. Lipowa 17", "31-501", "Zakład Diagnostyki Obrazowej", "oncology",
        {"ge": 0.55, "siemens": 0.30, "fujifilm": 0.15},
        (Town("Kraków", "3"), Town("Wieliczka", "32"), Town("Skawina", "32")), 1),
    SiteTemplate(
        "Pohjoisrannan yliopistollinen sairaala", "PYS", "Helsinki", "FI1B1", "FI", "fi",
        "Meritullinkatu 9", "00170", "Kuvantamisen vastuualue", "cardiopulmonary",
        {"siemens": 0.60, "philips": 0.30, "ge": 0.10},
        (Town("Helsinki", "00"), Town("Espoo", "02"), Town("Vantaa", "01")), 2),
    SiteTemplate(
        "Hospital de Santa Luzia do Tejo", "HSL", "Lisboa", "PT170", "PT", "pt",
        "Rua das Amoreiras 55", "1250-096", "Serviço de Imagiologia", "general",
        {"fujifilm": 0.50, "ge": 0.25, "siemens": 0.25},
        (Town("Lisboa", "1"), Town("Amadora", "27"), Town("Oeiras", "27"),
         Town("Loures", "26")), 0),
)
CAMPUS = ("", " - Campus II", " - Campus III", " - Campus IV")


@dataclass(frozen=True)
class Site:
    id: str
    index: int
    template: SiteTemplate
    name: str
    code: str  # unique per federation: MRN, accession and station prefix
    fleet: tuple[Device, ...] = field(repr=False)
    # A site shaped like a catalogue descriptor (spe.synth.shaped): its patients' ages
    # (youngest, oldest) and its own prevalence per condition key. None: the template's.
    ages: tuple[int, int] | None = None
    prevalence_override: tuple[tuple[str, float], ...] | None = None

    @property
    def city(self) -> str:
        return self.template.city

    @property
    def region(self) -> str:
        return self.template.region

    @property
    def country(self) -> str:
        return self.template.country

    @property
    def address(self) -> str:
        t = self.template
        return f"{t.street_address}, {t.postal_code} {t.city}, {t.country}"

    @property
    def mrn_system(self) -> str:
        return f"urn:spe:{self.id}:mrn"

    @property
    def prevalence(self) -> dict[str, float]:
        if self.prevalence_override is not None:
            return dict(self.prevalence_override)
        return prevalence_table(self.template.profile)


def prevalence_table(profile: str) -> dict[str, float]:
    """Probability of each condition for one patient of a site with this profile, before
    the age and sex rules of each condition apply."""
    factors = PROFILES[profile]
    return {c.key: min(MAX_PREVALENCE, c.base_prevalence * factors.get(c.key, 1.0))
            for c in CONDITIONS}


def site_id(index: int) -> str:
    return f"site-{string.ascii_lowercase[index]}"


def make_site(index: int, seed: int) -> Site:
    """Site number `index` (0 is site-a). Depends on the seed only through its fleet."""
    if not 0 <= index < len(string.ascii_lowercase):
        raise ValueError(f"at most {len(string.ascii_lowercase)} institutions")
    template = TEMPLATES[index % len(TEMPLATES)]
    campus = index // len(TEMPLATES)
    code = template.short if campus == 0 else f"{template.short[:2]}{campus + 1}"
    sid = site_id(index)
    fleet = make_fleet(random.Random(f"{seed}:{sid}:fleet"), code, template.vendors)
    return Site(id=sid, index=index, template=template, name=template.name + CAMPUS[campus],
                code=code, fleet=fleet)
