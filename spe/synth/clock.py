"""Dates and local times of the synthetic world, formatted for FHIR and for DICOM.

Nothing here reads the system clock: every date comes from the seeded random generators,
within FIRST_DAY..LAST_DAY. Local times follow the EU summer-time rule (last Sunday of
March to last Sunday of October, switching at 01:00 UTC), computed here rather than with
zoneinfo so the output does not depend on the machine's time-zone database.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta

FIRST_DAY = date(2015, 1, 1)
LAST_DAY = date(2025, 12, 31)
AGE_REFERENCE = date(2025, 1, 1)  # patients are 18-95 years old on this day


def last_sunday(year: int, month: int) -> date:
    day = date(year, month + 1, 1) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() + 1) % 7)


def utc_offset(local: datetime, standard_hours: int) -> int:
    """The UTC offset in hours of a wall-clock time at a site on standard time +N."""
    start = datetime.combine(last_sunday(local.year, 3), datetime.min.time()) \
        + timedelta(hours=1 + standard_hours)
    end = datetime.combine(last_sunday(local.year, 10), datetime.min.time()) \
        + timedelta(hours=1 + standard_hours + 1)
    return standard_hours + (1 if start <= local < end else 0)


def random_day(rng: random.Random, first: date, last: date) -> date:
    if last <= first:
        return first
    return first + timedelta(days=rng.randint(0, (last - first).days))


def working_time(rng: random.Random, day: date) -> datetime:
    """A time during the radiology department's day (07:30-19:59)."""
    minute = rng.randint(7 * 60 + 30, 19 * 60 + 59)
    return datetime(day.year, day.month, day.day, minute // 60, minute % 60,
                    rng.randint(0, 59))


def add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def fhir_datetime(local: datetime, standard_hours: int) -> str:
    """FHIR dateTime with seconds and the UTC offset, e.g. 2019-03-04T10:22:31+01:00."""
    return f"{local:%Y-%m-%dT%H:%M:%S}{_offset(local, standard_hours, ':')}"


def dicom_offset(local: datetime, standard_hours: int) -> str:
    """Timezone Offset From UTC (0008,0201) and the DT suffix, e.g. +0100."""
    return _offset(local, standard_hours, "")


def _offset(local: datetime, standard_hours: int, sep: str) -> str:
    hours = utc_offset(local, standard_hours)
    sign = "-" if hours < 0 else "+"
    return f"{sign}{abs(hours):02d}{sep}00"


def da(day: date) -> str:
    return f"{day:%Y%m%d}"


def tm(moment: datetime) -> str:
    return f"{moment:%H%M%S}"
