"""Layer 3: re-identification risk measured and reduced, its CLI, and the policy choosing it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spe.anonymize.extract import ExtractError, load_fhir_extract
from spe.anonymize.risk import HIERARCHIES, STAR, k_for, measure, rare_code_set, reduce
from spe.cli.main import app
from spe.policy import make_policy_service
from spe.settings import Settings


def people(*groups: tuple[int, str, int]) -> list[dict]:
    """`count` records per (age, sex)."""
    return [{"age": age, "sex": sex} for age, sex, count in groups for _ in range(count)]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    from spe.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, institutions=1, patients=120, seed=2)
    return out / "site-a"


@pytest.fixture(scope="module")
def extract(site: Path) -> list[dict]:
    return load_fhir_extract(site)


# --- measures -------------------------------------------------------------------------------

def test_classes_k_and_prosecutor_risk_on_known_records():
    records = people((30, "F", 3), (30, "M", 2), (40, "F", 1))
    report = measure(records, qis=("age", "sex"), threshold=0.4)
    assert report.records == 6
    assert report.classes == 3
    assert report.k == 1
    assert report.max_risk == 1.0
    # (3 * 1/3 + 2 * 1/2 + 1 * 1) / 6
    assert report.average_risk == pytest.approx(0.5)
    assert report.at_risk == 3  # the pair (1/2) and the single (1); 1/3 is under 0.4
    assert report.distinct == {"age": 2, "sex": 2}
    assert report.suppressed == 0
    assert report.to_dict()["levels"] == {"age": 0, "sex": 0}


def test_one_class_of_five_is_5_anonymous():
    report = measure(people((50, "F", 5)), qis=("age", "sex"))
    assert (report.k, report.max_risk, report.average_risk, report.at_risk) == (5, 0.2, 0.2, 0)


def test_an_empty_extract_has_no_risk():
    report = measure([], qis=("age",))
    assert (report.records, report.k, report.max_risk, report.at_risk) == (0, 0, 0.0, 0)


def test_only_rare_codes_are_quasi_identifiers():
    records = [{"codes": ("I10",)} for _ in range(5)] + [
        {"codes": ("I10", "G12.2")}, {"codes": ("G10",)}, {"codes": ()}]
    assert rare_code_set(records, rare_below=5) == {"G12.2", "G10"}
    report = measure(records, qis=("codes",), rare_below=5)
    # Common I10 does not split the five I10-only patients from the one without codes.
    assert report.classes == 3
    assert report.k == 1


# --- hierarchies ----------------------------------------------------------------------------

def test_age_hierarchy():
    age = HIERARCHIES["age"]
    assert [age.generalise(67, level) for level in range(age.top + 1)] == [
        67, "65-69", "60-69", "60-79", STAR]
    assert age.generalise(None, 1) == STAR


def test_sex_hierarchy():
    assert [HIERARCHIES["sex"].generalise("female", n) for n in (0, 1)] == ["female", STAR]


def test_region_hierarchy_ends_at_the_country():
    region = HIERARCHIES["region"]
    assert [region.generalise("ES:28029", level) for level in range(region.top + 1)] == [
        "ES:28029", "ES:280", "ES:28", "ES:2", "ES", STAR]
    assert region.generalise("PT", 2) == "PT"
    assert region.generalise(None, 0) == STAR


def test_rare_code_hierarchy_climbs_icd10_categories():
    codes = HIERARCHIES["codes"]
    assert [codes.generalise(("C71.9", "G12.2"), level) for level in range(codes.top + 1)] == [
        ("C71.9", "G12.2"), ("C71", "G12"), STAR]
    assert codes.generalise(("C71.1", "C71.9"), 1) == ("C71",)


# --- the extract ----------------------------------------------------------------------------

def test_the_extract_has_one_record_per_patient(site: Path, extract: list[dict]):
    lines = (site / "fhir" / "Patient.ndjson").read_text().splitlines()
    assert len(extract) == len(lines) == 120
    assert load_fhir_extract(site / "fhir") == extract
    first = extract[0]
    assert set(first) == {"id", "age", "sex", "region", "codes"}
    assert all(0 <= r["age"] <= 110 for r in extract)
    assert {r["sex"] for r in extract} == {"female", "male"}
    assert all(r["region"].startswith("ES:") for r in extract)
    # ICD-10 only: SNOMED CT codes are all digits.
    assert any(r["codes"] for r in extract)
    assert all(not c.isdigit() for r in extract for c in r["codes"])


def test_the_loader_refuses_what_is_not_an_extract(tmp_path: Path):
    with pytest.raises(ExtractError, match="not a folder"):
        load_fhir_extract(tmp_path / "missing")
    with pytest.raises(ExtractError, match="no Patient.ndjson"):
        load_fhir_extract(tmp_path)


def test_the_synthetic_extract_is_not_5_anonymous(extract: list[dict]):
    assert measure(extract).k == 1


# --- reduction ------------------------------------------------------------------------------

def test_reduce_to_k5_generalises_and_keeps_suppression_in_bounds(extract: list[dict]):
    out, report, steps = reduce(extract, k_min=5, max_suppression=0.05)
    assert report.before.k == 1
    assert report.k >= 5
    assert report.suppressed <= 0.05 * len(extract)
    assert len(out) == len(extract) - report.suppressed
    assert steps
    assert any(level > 0 for level in report.levels.values())
    assert [s.level for s in steps if s.qi == "age"] == list(
        range(1, report.levels["age"] + 1))
    assert measure(out, qis=("age", "sex", "region"), threshold=0.2).k >= 5
    assert report.max_risk <= 0.2
    assert report.at_risk == 0


def test_max_risk_009_asks_for_k_12(extract: list[dict]):
    assert k_for(max_risk=0.09) == 12 == math.ceil(1 / 0.09)
    assert k_for(max_risk=0.2) == 5
    assert k_for(k_min=5, max_risk=0.09) == 12
    _, report, _ = reduce(extract, max_risk=0.09)
    assert report.k_min == 12
    assert report.k >= 12
    assert report.max_risk <= 0.09


def test_reduce_suppresses_when_that_is_cheap_enough():
    records = people((30, "F", 20), (80, "M", 1))
    out, report, steps = reduce(records, k_min=5, max_suppression=0.05, qis=("age", "sex"))
    assert steps == []
    assert report.suppressed == 1
    assert report.k == 20
    assert out == records[:20]
    _, strict, strict_steps = reduce(records, k_min=5, max_suppression=0.0, qis=("age", "sex"))
    assert strict_steps
    assert strict.suppressed == 0
    assert strict.k == 21


def test_reduce_is_deterministic(extract: list[dict]):
    first = reduce(extract, k_min=5)
    again = reduce([dict(r) for r in extract], k_min=5)
    assert first[0] == again[0]
    assert first[1].to_dict() == again[1].to_dict()
    assert first[2] == again[2]
    backwards = reduce(list(reversed(extract)), k_min=5)
    assert backwards[1].levels == first[1].levels
    assert sorted(r["id"] for r in backwards[0]) == sorted(r["id"] for r in first[0])


def test_released_codes_say_no_more_than_the_measured_level(extract: list[dict]):
    out, report, _ = reduce(extract, k_min=5)
    rare = rare_code_set(extract)
    if report.levels["codes"] == HIERARCHIES["codes"].top:
        assert not any(c in rare for r in out for c in r["codes"])


def test_reduce_needs_a_threshold():
    with pytest.raises(ValueError, match="k_min or max_risk"):
        reduce(people((30, "F", 1)))
    with pytest.raises(ValueError, match="max_risk"):
        k_for(max_risk=0)


# --- CLI ------------------------------------------------------------------------------------

def test_cli_prints_k_and_prosecutor_risk(site: Path):
    result = CliRunner().invoke(app, ["risk", str(site)])
    assert result.exit_code == 0, result.output
    assert "k 1," in text(result)
    assert "max prosecutor risk 1.0000" in text(result)
    assert "region" in result.output


def test_cli_reduce_json_parses(site: Path):
    result = CliRunner().invoke(app, ["risk", str(site / "fhir"), "--reduce", "--max-risk",
                                      "0.09", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["k"] >= 12
    assert report["before"]["k"] == 1
    assert report["steps"]


def test_cli_reduce_prints_steps(site: Path):
    result = CliRunner().invoke(app, ["risk", str(site), "--reduce", "--k", "5"])
    assert result.exit_code == 0, result.output
    assert "step 1: region -> level 1" in text(result)
    assert "after:" in text(result)


def text(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_cli_missing_folder_is_a_clear_error(tmp_path: Path):
    result = CliRunner().invoke(app, ["risk", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "is not a folder" in text(result)
    assert "Traceback" not in result.output
    empty = CliRunner().invoke(app, ["risk", str(tmp_path)])
    assert empty.exit_code == 2
    assert "no Patient.ndjson" in text(empty)


# --- policy ---------------------------------------------------------------------------------

def test_policy_picks_layers_and_thresholds(tmp_path: Path):
    policy = make_policy_service(Settings(data_dir=tmp_path))
    engine = policy.engine
    permit = {"id": "P-1", "status": "active", "pseudonymised_justified": True}
    inside = {"tier": "permit", "release": False, "permit": permit}
    assert policy.decide("anonymization/decision", inside).allow
    decision = engine.evaluate("anonymization/decision", inside)
    assert decision["pseudonymised"] is True
    assert decision["k_min"] == 5
    released = engine.evaluate("anonymization/decision", {**inside, "release": True})
    assert released["pseudonymised"] is False
    assert released["k_min"] == k_for(max_risk=released["max_risk"]) == 12
    assert "output_control" in released["layers"]


def test_policy_denies_tier_permit_without_a_permit(tmp_path: Path):
    policy = make_policy_service(Settings(data_dir=tmp_path))
    decision = policy.decide("anonymization/decision",
                             {"tier": "permit", "release": False, "permit": None})
    assert not decision.allow
    assert not decision.error
    assert "permit" in decision.reason


def test_weights_keep_a_quasi_identifier_detailed_longer(extract: list[dict]):
    """Datafly coarsens the quasi-identifier with the most distinct values first; a weight
    under 1 on age makes it give up the others before age."""
    _, plain, plain_steps = reduce(extract, k_min=5)
    _, weighted, steps = reduce(extract, k_min=5, weights={"age": 0.1})
    first_age = [s.qi for s in plain_steps].index("age")
    assert "age" not in [s.qi for s in steps[:first_age + 1]]
    assert weighted.levels["age"] <= plain.levels["age"]
    assert weighted.k >= 5
