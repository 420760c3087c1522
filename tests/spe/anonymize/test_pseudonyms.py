"""Layer 2: keyed pseudonyms, UIDs and date shifts (spe.anonymize.pseudonyms)."""

from __future__ import annotations

import re
from datetime import date

import pytest

from spe.anonymize.pseudonyms import (
    MAX_SHIFT_DAYS,
    PermitKey,
    shift_da,
    shift_dt,
    shift_fhir,
)

SECRET = b"node secret for the tests, 32+ b"
UID = re.compile(r"^2\.25\.[1-9][0-9]*$")


def outputs(key: PermitKey) -> tuple:
    return (key.pseudonym("HVH0623648", "patient"), key.uid("1.2.840.1234.5"),
            key.date_shift_days("HVH0623648"), key.pseudonym("x", "fhir-id", 32))


def test_same_key_and_permit_give_the_same_outputs_in_two_runs():
    assert outputs(PermitKey.derive(SECRET, "permit-1")) == \
        outputs(PermitKey.derive(SECRET, "permit-1"))


def test_different_permits_and_secrets_give_unrelated_outputs():
    one, two = outputs(PermitKey.derive(SECRET, "permit-1")), \
        outputs(PermitKey.derive(SECRET, "permit-2"))
    assert one[0] != two[0]
    assert one[1] != two[1]
    assert one[3] != two[3]
    other = outputs(PermitKey.derive(SECRET + b"!", "permit-1"))
    assert other[0] != one[0]


def test_key_file_bytes_are_the_secret(tmp_path):
    path = tmp_path / "node.key"
    path.write_bytes(SECRET)
    assert outputs(PermitKey.from_key_file(path, "p")) == outputs(PermitKey.derive(SECRET, "p"))


def test_key_file_missing_or_empty_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="key file not found"):
        PermitKey.from_key_file(tmp_path / "absent.key")
    (tmp_path / "empty.key").write_bytes(b"")
    with pytest.raises(ValueError, match="key file is empty"):
        PermitKey.from_key_file(tmp_path / "empty.key")


@pytest.mark.parametrize("secret", [b"", b"short", b"x" * 15])
def test_derive_refuses_empty_or_short_secrets(secret):
    with pytest.raises(ValueError, match="secret"):
        PermitKey.derive(secret, "p")


def test_key_material_must_be_32_bytes():
    with pytest.raises(ValueError, match="32 bytes"):
        PermitKey(b"x" * 31)
    assert "secret" in repr(PermitKey(b"x" * 32))


def test_pseudonym_charset_length_and_kinds():
    key = PermitKey.derive(SECRET, "p")
    for length in (8, 16, 32, 52):
        value = key.pseudonym("HVH0623648", "patient", length)
        assert re.fullmatch(r"[A-Z2-7]+", value)
        assert len(value) == length
    assert key.pseudonym("v", "patient") != key.pseudonym("v", "accession")
    assert key.pseudonym("v", "patient", 32).startswith(key.pseudonym("v", "patient", 16))
    for bad in (7, 53):
        with pytest.raises(ValueError, match="length"):
            key.pseudonym("v", length=bad)


def test_uids_are_valid_dicom_uids_and_unrelated_to_pseudonyms():
    key = PermitKey.derive(SECRET, "p")
    uids = {key.uid(f"1.2.3.{n}") for n in range(500)}
    assert len(uids) == 500
    for uid in uids:
        assert UID.match(uid)
        assert len(uid) <= 64
    assert key.uid("1.2.3") == key.uid("1.2.3")


def test_date_shift_is_negative_never_zero_and_spread():
    key = PermitKey.derive(SECRET, "p")
    shifts = [key.date_shift_days(f"MRN{n:05d}") for n in range(2000)]
    assert all(-MAX_SHIFT_DAYS <= s <= -1 for s in shifts)
    assert len(set(shifts)) > 600
    # Each third of the range gets a fair share.
    thirds = [sum(1 for s in shifts if (s + 1) // -365 == i) for i in range(3)]
    assert sum(thirds) == len(shifts)
    assert min(thirds) > 400


def test_shift_keeps_the_interval_between_two_dates_of_a_patient():
    days = PermitKey.derive(SECRET, "p").date_shift_days("HVH0623648")
    first, second = shift_da("20190304", days), shift_da("20200229", days)
    parse = lambda s: date(int(s[:4]), int(s[4:6]), int(s[6:]))  # noqa: E731
    assert (parse(second) - parse(first)).days == (date(2020, 2, 29) - date(2019, 3, 4)).days
    a = shift_fhir("2019-03-04T10:22:31+01:00", days)
    b = shift_fhir("2019-03-10", days)
    assert (date.fromisoformat(b) - date.fromisoformat(a[:10])).days == 6


@pytest.mark.parametrize(("value", "days", "expected"), [
    ("20190304", -30, "20190202"),
    ("20200301", -1, "20200229"),  # leap day
    ("20210301", -1, "20210228"),
    ("20190101", -1, "20181231"),
    ("20200229", -366, "20190228"),
    ("20190304 ", -3, "20190301"),  # DICOM pads to even length
])
def test_shift_da(value, days, expected):
    assert shift_da(value, days) == expected


@pytest.mark.parametrize(("value", "days", "expected"), [
    ("2019", -30, "2018"),  # Jan 1 moved back, truncated to the year
    ("2019", -1, "2018"),
    ("201903", -1, "201902"),
    ("20190301", -1, "20190228"),
    ("2020030110", -1, "2020022910"),
    ("202003011022", -1, "202002291022"),
    ("20200301102231", -1, "20200229102231"),
    ("20200301102231.123456", -1, "20200229102231.123456"),
    ("20200301102231.5+0100", -1, "20200229102231.5+0100"),
    ("20200331235959-0500", -31, "20200229235959-0500"),
    ("2020+0100", -1, "2019+0100"),
])
def test_shift_dt(value, days, expected):
    assert shift_dt(value, days) == expected


@pytest.mark.parametrize(("value", "days", "expected"), [
    ("2019", -30, "2018"),
    ("2019-03", -1, "2019-02"),
    ("2019-03-04", -30, "2019-02-02"),
    ("2020-03-01", -1, "2020-02-29"),
    ("2019-03-31", -31, "2019-02-28"),
    ("2019-03-04T10:22:31+01:00", -3, "2019-03-01T10:22:31+01:00"),
    ("2020-03-01T00:00:00Z", -1, "2020-02-29T00:00:00Z"),
    ("2020-03-01T23:59:59.123456789-05:00", -1, "2020-02-29T23:59:59.123456789-05:00"),
    ("2015-02-17T14:30:00.000Z", -365, "2014-02-17T14:30:00.000Z"),
    ("2019-03-04T10:22+01:00", -3, "2019-03-01T10:22+01:00"),
])
def test_shift_fhir_keeps_format_and_precision(value, days, expected):
    assert shift_fhir(value, days) == expected


@pytest.mark.parametrize("garbage", [
    "", "yesterday", "2019-13-01", "2019-02-30", "20190230", "2019/03/04", "0001-01-01",
    "2019-03-04T25:00:00Z", "2019-03-04T10:00:00+15:00", None, 20190304, "2019-3-4",
])
def test_garbage_gives_none(garbage):
    assert shift_fhir(garbage, -1) is None
    assert shift_da(garbage, -1) is None
    assert shift_dt(garbage, -1) is None


@pytest.mark.parametrize("garbage", ["2019031", "20190304102231.1234567", "201903041+0100",
                                     "20190304+2500", "2019030410223"])
def test_dt_garbage_gives_none(garbage):
    assert shift_dt(garbage, -1) is None
