"""Fictional people: names, birth dates, addresses, phone numbers and national ids.

Identifiers follow each country's real format and check digits (Spanish DNI letter, French
NIR key, Dutch BSN 11-test, Polish PESEL, Finnish HETU), so a de-identification test that
looks for them by pattern finds them; the numbers are random, not anyone's.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta

from spe.synth.clock import AGE_REFERENCE, add_years
from spe.synth.names import MIGRANT_LANGUAGES, NAME_BOOKS, NameBook
from spe.synth.sites import Site

LOCAL_SHARE = 0.8  # patients named in the site's own language


@dataclass(frozen=True)
class Address:
    line: str
    city: str
    postal_code: str
    country: str

    def one_line(self) -> str:
        return f"{self.line}, {self.postal_code} {self.city}, {self.country}"


@dataclass(frozen=True)
class Person:
    given: tuple[str, ...]
    family: str
    sex: str  # M or F
    birth_date: date
    language: str
    address: Address
    phone: str
    email: str
    national_id_system: str
    national_id: str
    height_cm: float
    weight_kg: float

    @property
    def full_name(self) -> str:
        return f"{' '.join(self.given)} {self.family}"

    @property
    def dicom_name(self) -> str:
        """PN: Family^Given^Middle (PS3.5 6.2.1)."""
        return "^".join([self.family, *self.given])


def make_person(rng: random.Random, site: Site) -> Person:
    sex = "F" if rng.random() < 0.51 else "M"
    local = site.template.language
    language = local if rng.random() < LOCAL_SHARE else \
        rng.choice([lang for lang in MIGRANT_LANGUAGES if lang != local])
    given, family = _name(rng, NAME_BOOKS[language], sex)
    # Hospital patients are older than the population: mode at 68 years (within a shaped
    # site's range, spe.synth.shaped). One draw either way, so the default output stays.
    low, high = site.ages or (18, 95)
    age = int(rng.triangular(low, high + 0.99, min(max(68, low), high)))
    birth = add_years(AGE_REFERENCE, -age - 1) + timedelta(days=rng.randint(1, 364))
    height = rng.gauss(177 if sex == "M" else 164, 7)
    bmi = min(45.0, max(17.0, rng.gauss(26.5, 4.5)))
    system, national_id = national_identifier(rng, site.country, sex, birth)
    return Person(
        given=given, family=family, sex=sex, birth_date=birth, language=language,
        address=_address(rng, site), phone=_phone(rng, site.country),
        email=_email(rng, given, family), national_id_system=system,
        national_id=national_id, height_cm=round(height, 1),
        weight_kg=round(bmi * (height / 100) ** 2, 1),
    )


def _name(rng: random.Random, book: NameBook, sex: str) -> tuple[tuple[str, ...], str]:
    given: tuple[str, ...] = (rng.choice(book.male if sex == "M" else book.female),)
    if rng.random() < 0.15:
        second = rng.choice(book.male if sex == "M" else book.female)
        if second not in given[0]:
            given += (second,)
    family = rng.choice(book.family)
    if book.two_surnames:
        family = f"{family} {rng.choice(book.family)}"
    if sex == "F" and book.female_family:
        for ending in sorted(book.female_family, key=len, reverse=True):
            if family.endswith(ending):
                family = family[: -len(ending)] + book.female_family[ending]
                break
    return given, family


def _digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randint(0, 9)) for _ in range(n))


def _postal_code(rng: random.Random, country: str, prefix: str) -> str:
    if country == "NL":
        return f"{prefix}{_digits(rng, 4 - len(prefix))} {rng.choice('BCDEGHJKLMNPRSTV')}" \
               f"{rng.choice('ABCDEGHJKLMNPRSTVWXZ')}"
    if country == "PL":
        code = prefix + _digits(rng, 5 - len(prefix))
        return f"{code[:2]}-{code[2:]}"
    if country == "PT":
        code = prefix + _digits(rng, 7 - len(prefix))
        return f"{code[:4]}-{code[4:]}"
    return prefix + _digits(rng, 5 - len(prefix))


def _address(rng: random.Random, site: Site) -> Address:
    book = NAME_BOOKS[site.template.language]
    # The site's catchment area: mostly its own city, some neighbouring towns.
    towns = site.template.towns
    town = towns[0] if rng.random() < 0.55 else rng.choice(towns[1:])
    street = rng.choice(book.streets).format(n=rng.randint(1, 180))
    if rng.random() < 0.3 and site.country in ("ES", "PT", "IT", "FR"):
        street += {"ES": f", {rng.randint(1, 9)}º {rng.choice('ABCD')}",
                   "PT": f", {rng.randint(1, 9)}º Esq.", "IT": f", scala {rng.choice('ABC')}",
                   "FR": f", appartement {rng.randint(1, 40)}"}[site.country]
    return Address(street, town.name, _postal_code(rng, site.country, town.postal_prefix),
                   site.country)


PHONE_FORMATS = {
    "ES": "+34 6## ### ###", "DE": "+49 15# ########", "FR": "+33 6 ## ## ## ##",
    "IT": "+39 3## ### ####", "NL": "+31 6 ########", "PL": "+48 5## ### ###",
    "FI": "+358 40 ### ####", "PT": "+351 91# ### ###",
}


def _phone(rng: random.Random, country: str) -> str:
    return "".join(str(rng.randint(0, 9)) if c == "#" else c for c in PHONE_FORMATS[country])


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(c for c in decomposed if c.isascii() and (c.isalnum() or c in " -"))
    return kept.lower().replace(" ", "").replace("-", "")


def _email(rng: random.Random, given: tuple[str, ...], family: str) -> str:
    user = f"{_ascii(given[0])}.{_ascii(family.split()[-1])}{rng.randint(1, 99)}"
    return f"{user}@{rng.choice(('correo', 'mail', 'post', 'posta'))}.example"


def national_identifier(rng: random.Random, country: str, sex: str,
                        birth: date) -> tuple[str, str]:
    """(system, value) of a national-id-like number in the country's format."""
    system = f"urn:spe:national-id:{country.lower()}"
    if country == "ES":  # DNI: 8 digits and the mod-23 letter
        n = rng.randint(10_000_000, 79_999_999)
        return system, f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"
    if country == "FR":  # NIR: sex, yy, mm, department, commune, order, key
        body = f"{1 if sex == 'M' else 2}{birth:%y%m}31{rng.randint(1, 555):03d}" \
               f"{rng.randint(1, 999):03d}"
        return system, f"{body}{97 - int(body) % 97:02d}"
    if country == "NL":  # BSN: 9 digits passing the 11-test
        while True:
            digits = [rng.randint(1, 9)] + [rng.randint(0, 9) for _ in range(8)]
            total = sum(d * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True))
            if (total - digits[8]) % 11 == 0:
                return system, "".join(map(str, digits))
    if country == "PL":  # PESEL: birth date, serial, sex digit, check digit
        month = birth.month + (20 if birth.year >= 2000 else 0)
        body = f"{birth:%y}{month:02d}{birth:%d}{rng.randint(0, 999):03d}" \
               f"{rng.choice('13579' if sex == 'M' else '02468')}"
        weights = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)
        check = (10 - sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 10) % 10
        return system, f"{body}{check}"
    if country == "FI":  # HETU: ddmmyy, century sign, individual number, mod-31 check
        individual = rng.randrange(3 if sex == "M" else 2, 899, 2)
        stem = f"{birth:%d%m%y}{individual:03d}"
        century = "-" if birth.year < 2000 else "A"
        return system, f"{birth:%d%m%y}{century}{individual:03d}" \
                       f"{'0123456789ABCDEFHJKLMNPRSTUVWXY'[int(stem) % 31]}"
    if country == "DE":  # Krankenversichertennummer-like: letter and 9 digits
        return system, f"{rng.choice('ABCDEFGHIJKLMNOPRSTUVWZ')}{_digits(rng, 9)}"
    if country == "IT":  # codice fiscale-like: 6 letters, yy, month letter, dd, place, check
        letters = "".join(rng.choice("BCDFGLMNPRSTVZ") for _ in range(6))
        day = birth.day + (40 if sex == "F" else 0)
        return system, f"{letters}{birth:%y}{'ABCDEHLMPRST'[birth.month - 1]}{day:02d}" \
                       f"F{rng.randint(100, 999)}{rng.choice('ABCDEFGHIJKLMNOPQRSTUVWXYZ')}"
    return system, _digits(rng, 9)
