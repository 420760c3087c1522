"""The people who order, perform and read the exams at a site, as DICOM PN values."""

from __future__ import annotations

import random
from dataclasses import dataclass

from spe.synth.names import NAME_BOOKS
from spe.synth.sites import Site

TITLES = {"es": "Dr.", "de": "Dr. med.", "fr": "Dr", "it": "Dott.", "nl": "dr.", "pl": "lek.",
          "fi": "LL", "pt": "Dr."}


@dataclass(frozen=True)
class Staff:
    referring: tuple[str, ...]
    radiologists: tuple[str, ...]
    technologists: tuple[str, ...]


def make_staff(site: Site, seed: int) -> Staff:
    rng = random.Random(f"{seed}:{site.id}:staff")
    language = site.template.language
    book = NAME_BOOKS[language]
    title = TITLES.get(language, "Dr.")

    def person(doctor: bool) -> str:
        given = rng.choice(book.male if rng.random() < 0.5 else book.female)
        family = rng.choice(book.family)
        # Family^Given^Middle^Prefix (PS3.5 6.2.1.1); technologists carry no prefix.
        return f"{family}^{given}^^{title}" if doctor else f"{family}^{given}"

    return Staff(
        referring=tuple(person(True) for _ in range(12)),
        radiologists=tuple(person(True) for _ in range(5)),
        technologists=tuple(person(False) for _ in range(8)),
    )
