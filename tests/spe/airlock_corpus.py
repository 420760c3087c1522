"""A corpus of job outputs for the airlock, written from a real staged extract.

`HOSTILE` holds the ways outputs were measured passing the airlock's automatic checks while
they disclosed (issue 15), and variants of each: every one must be blocked or sent to
review, with reasons that name places and never the values. `BENIGN` holds what research
jobs ordinarily write (aggregate tables with counts at or over the threshold, a plot, a
model summary and its coefficients, a README, a JSON of aggregates): at least 90% of them
must pass without review.

Each builder writes into an empty output directory and returns the secrets it planted (the
extract's values, and the small counts as they would be quoted): none may appear in any
reason. Builders read the extract the way a job would: its FHIR NDJSON and DICOM headers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pydicom

EPOCH = date(1970, 1, 1)


@dataclass
class Extract:
    """What a job can read of its staged extract."""

    patients: list[dict]
    observations: list[dict]
    conditions: list[dict]
    studies: list[dict]
    dicom_ids: list[str]

    @classmethod
    def read(cls, folder: Path) -> Extract:
        def ndjson(name: str) -> list[dict]:
            path = folder / "fhir" / f"{name}.ndjson"
            return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]

        ids = []
        for path in sorted((folder / "dicom").rglob("*.dcm"))[:20]:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
            ids.append(str(ds.PatientID))
        return cls(ndjson("Patient"), ndjson("Observation"), ndjson("Condition"),
                   ndjson("ImagingStudy"), sorted(set(ids)))

    @property
    def pseudonyms(self) -> list[str]:
        return [p["id"] for p in self.patients]

    @property
    def mrns(self) -> list[str]:
        return [i["value"] for p in self.patients for i in p.get("identifier", [])]

    @property
    def study_uids(self) -> list[str]:
        return [i["value"].removeprefix("urn:oid:") for s in self.studies
                for i in s.get("identifier", [])]

    def when(self, resource: dict) -> date:
        text = (resource.get("effectiveDateTime") or resource.get("started")
                or resource.get("onsetDateTime") or resource.get("recordedDate"))
        return datetime.fromisoformat(text).date() if "T" in text else date.fromisoformat(text)

    def gender(self, reference: str) -> str:
        pid = reference.rsplit("/", 1)[-1]
        return next(p.get("gender", "unknown") for p in self.patients if p["id"] == pid)


def finding(resource: dict) -> str:
    """What an observation measured, in words: its code's text where the extract has one,
    else the terminology's display (free text is removed by de-identification; a LOINC
    code's display stays)."""
    code = resource["code"]
    return code.get("text") or next(c["display"] for c in code["coding"] if c.get("display"))


def iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def png_plot() -> bytes:
    """A small real PNG (a grey gradient), as a plotting library writes one."""
    width, height = 64, 48
    raw = b"".join(b"\x00" + bytes((x * 4) % 256 for x in range(width)) for _ in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"tEXt", b"Software\x00matplotlib version3.9.2, https://matplotlib.org/")
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


Builder = Callable[[Path, Extract], list[str]]
HOSTILE: dict[str, Builder] = {}
BENIGN: dict[str, Builder] = {}


def hostile(fn: Builder) -> Builder:
    HOSTILE[fn.__name__] = fn
    return fn


def benign(fn: Builder) -> Builder:
    BENIGN[fn.__name__] = fn
    return fn


# ---- record-level rows written as prose, or as tables of text ---------------------------

@hostile
def records_as_prose(out: Path, x: Extract) -> list[str]:
    lines = [f"A {x.gender(o['subject']['reference'])} patient had {finding(o)} of "
             f"{o['valueQuantity']['value']} {o['valueQuantity']['unit']} in week "
             f"{iso_week(x.when(o))}." for o in x.observations[:60] if "valueQuantity" in o]
    (out / "findings.txt").write_text("Findings\n\n" + "\n".join(lines) + "\n")
    return []


@hostile
def records_as_markdown_bullets(out: Path, x: Extract) -> list[str]:
    lines = [f"- {x.gender(o['subject']['reference'])}, {finding(o)}: "
             f"{o['valueQuantity']['value']} ({iso_week(x.when(o))})"
             for o in x.observations[:40] if "valueQuantity" in o]
    (out / "report.md").write_text("# Cohort\n\n" + "\n".join(lines) + "\n")
    return []


@hostile
def records_as_csv_of_text(out: Path, x: Extract) -> list[str]:
    rows = ["sex,region,finding,week"] + [
        f"{x.gender(o['subject']['reference'])},ES-28,{finding(o)},{iso_week(x.when(o))}"
        for o in x.observations[:80]]
    (out / "table.csv").write_text("\n".join(rows) + "\n")
    return []


@hostile
def every_observation_as_text(out: Path, x: Extract) -> list[str]:
    lines = []
    for o in x.observations:
        value = o.get("valueQuantity", {})
        lines.append(f"{finding(o)} = {value.get('value', 'n/a')} "
                     f"{value.get('unit', '')} @ {iso_week(x.when(o))}")
    (out / "observations.txt").write_text("\n".join(lines) + "\n")
    return []


@hostile
def every_value_one_per_line(out: Path, x: Extract) -> list[str]:
    values = [str(o["valueQuantity"]["value"]) for o in x.observations if "valueQuantity" in o]
    (out / "values.txt").write_text("\n".join(values) + "\n")
    return []


# ---- the extract's pseudonyms and ids, disguised ----------------------------------------

@hostile
def pseudonyms_reversed(out: Path, x: Extract) -> list[str]:
    (out / "ids.txt").write_text("".join(f"{p[::-1]}\n" for p in x.pseudonyms))
    return x.pseudonyms + [p[::-1] for p in x.pseudonyms]


@hostile
def pseudonyms_reversed_in_a_table(out: Path, x: Extract) -> list[str]:
    rows = ["ref,sex"] + [f"{p['id'][::-1]},{p.get('gender')}" for p in x.patients]
    (out / "cohort.csv").write_text("\n".join(rows) + "\n")
    return [p[::-1] for p in x.pseudonyms]


@hostile
def pseudonyms_as_numbers(out: Path, x: Extract) -> list[str]:
    numbers = [str(int.from_bytes(base64.b32decode(p.upper()), "big")) for p in x.pseudonyms]
    rows = ["code,weight"] + [f"{n},{60 + i}" for i, n in enumerate(numbers)]
    (out / "codes.csv").write_text("\n".join(rows) + "\n")
    return numbers


@hostile
def mrns_as_numbers_in_text(out: Path, x: Extract) -> list[str]:
    numbers = [str(int.from_bytes(m.encode(), "big")) for m in x.mrns]
    (out / "notes.txt").write_text("Reference numbers: " + " ".join(numbers) + "\n")
    return numbers


@hostile
def pseudonyms_as_numbers_of_ten_digits(out: Path, x: Extract) -> list[str]:
    """A bijection of the job's own: not an encoding anybody can undo, but ids all the same."""
    numbers = [str(10**11 + int(hashlib.sha256(p.encode()).hexdigest()[:8], 16))
               for p in x.pseudonyms]
    rows = ["person,sex"] + [f"{n},{p.get('gender')}" for n, p in zip(numbers, x.patients,
                                                                     strict=True)]
    (out / "people.csv").write_text("\n".join(rows) + "\n")
    return numbers


@hostile
def pseudonyms_hex_and_base64_in_json(out: Path, x: Extract) -> list[str]:
    hexed = [p.encode().hex() for p in x.pseudonyms[:10]]
    b64 = [base64.b64encode(p.encode()).decode() for p in x.pseudonyms[10:20]]
    (out / "keys.json").write_text(json.dumps({"a": hexed, "b": b64}))
    return hexed + b64


@hostile
def pseudonyms_split_across_cells(out: Path, x: Extract) -> list[str]:
    rows = ["part1,part2,sex"] + [f"{p['id'][:16]},{p['id'][16:]},{p.get('gender')}"
                                  for p in x.patients]
    (out / "parts.csv").write_text("\n".join(rows) + "\n")
    return x.pseudonyms


@hostile
def mrn_split_across_lines(out: Path, x: Extract) -> list[str]:
    mrn = x.mrns[0]
    (out / "log.txt").write_text("run finished\n" + "\n".join(mrn[i:i + 4]
                                                               for i in range(0, 16, 4)) + "\n")
    return [mrn]


@hostile
def dicom_patient_ids_in_base64_offsets(out: Path, x: Extract) -> list[str]:
    blobs = [base64.b64encode(f"pid={i}:{pid}".encode()).decode()
             for i, pid in enumerate(x.dicom_ids)]
    (out / "blob.txt").write_text("\n".join(blobs) + "\n")
    return x.dicom_ids + blobs


@hostile
def study_uids_without_dots(out: Path, x: Extract) -> list[str]:
    packed = [u.replace(".", "") for u in x.study_uids[:10]]
    (out / "studies.txt").write_text("\n".join(f"study {u}" for u in packed) + "\n")
    return x.study_uids[:10] + packed


@hostile
def exact_dates_in_prose(out: Path, x: Extract) -> list[str]:
    day = x.when(x.studies[0])
    (out / "summary.md").write_text(f"# Summary\n\nThe first MR was on {day:%d %B %Y}.\n")
    return [day.isoformat(), f"{day:%d %B %Y}"]


@hostile
def shifted_dates_as_day_numbers(out: Path, x: Extract) -> list[str]:
    days = [str((x.when(o) - EPOCH).days) for o in x.observations[:50]]
    rows = ["k,t"] + [f"{i},{d}" for i, d in enumerate(days)]
    (out / "t.csv").write_text("\n".join(rows) + "\n")
    return []


@hostile
def shifted_dates_as_ordinals_in_text(out: Path, x: Extract) -> list[str]:
    days = [str(x.when(o).toordinal()) for o in x.observations[:40]]
    (out / "days.txt").write_text("values: " + ", ".join(days) + "\n")
    return []


# ---- small counts where tables were not looked for ---------------------------------------

@hostile
def small_counts_in_a_json_object(out: Path, x: Extract) -> list[str]:
    (out / "counts.json").write_text(json.dumps({"female": 7, "male": 33}))
    return ["7"]


@hostile
def small_counts_nested_in_json(out: Path, x: Extract) -> list[str]:
    (out / "sites.json").write_text(json.dumps(
        {"site-a": {"hypertension": {"n": 6}, "asthma": {"n": 40}}}, indent=1))
    return ["6"]


@hostile
def small_counts_as_words(out: Path, x: Extract) -> list[str]:
    (out / "result.txt").write_text("Result\n\nTwo patients had a glioma.\n")
    return ["Two", "two", "2"]


@hostile
def small_counts_in_markdown_prose(out: Path, x: Extract) -> list[str]:
    (out / "result.md").write_text("# Result\n\nAmong women aged 40-49, 7 patients had "
                                   "an MR of the spine.\n")
    return ["7"]


@hostile
def small_counts_n_equals(out: Path, x: Extract) -> list[str]:
    (out / "note.md").write_text("# Note\n\nSpine MR (n = 8), brain MR (n = 45).\n")
    return ["8"]


@hostile
def small_counts_in_a_column_named_age(out: Path, x: Extract) -> list[str]:
    (out / "by_code.csv").write_text("code,age\nI10,7\nE11,8\nJ45,6\n")
    return ["7", "8", "6"]


@hostile
def small_counts_in_a_column_named_value(out: Path, x: Extract) -> list[str]:
    (out / "by_code.csv").write_text("code,value\nI10,7\nE11,44\nJ45,6\n")
    return ["7", "6"]


# ---- FHIR without its name --------------------------------------------------------------

@hostile
def fhir_stripped_with_iso_weeks(out: Path, x: Extract) -> list[str]:
    stripped = []
    for o in x.observations[:50]:
        item = {k: v for k, v in o.items() if k not in {"resourceType", "id"}}
        item["subject"] = {"reference": "Patient/x"}
        item["effectiveDateTime"] = iso_week(x.when(o))
        stripped.append(item)
    (out / "data.json").write_text(json.dumps(stripped))
    return [o["id"] for o in x.observations[:50]]


@hostile
def fhir_stripped_and_renamed_as_json_lines(out: Path, x: Extract) -> list[str]:
    lines = [json.dumps({"what": finding(o), "value": o.get("valueQuantity", {})
                         .get("value"), "week": iso_week(x.when(o)),
                         "sex": x.gender(o["subject"]["reference"])})
             for o in x.observations[:40]]
    (out / "rows.txt").write_text("\n".join(lines) + "\n")
    return []


# ---- many files, one record each --------------------------------------------------------

@hostile
def one_record_per_file(out: Path, x: Extract) -> list[str]:
    observations = x.observations[:277]
    assert len(observations) == 277
    for i, o in enumerate(observations):
        (out / f"r{i:03d}.csv").write_text(
            f"sex,finding,week\n{x.gender(o['subject']['reference'])},{finding(o)},"
            f"{iso_week(x.when(o))}\n")
    return []


@hostile
def one_count_per_file(out: Path, x: Extract) -> list[str]:
    for i in range(12):
        (out / f"count_{i}.json").write_text(json.dumps({"group": f"g{i}", "n": 3 + i % 5}))
    return []


# ---- one-person means with a forged ACRO results.json -----------------------------------

def forge_acro(out: Path, names: list[str]) -> None:
    results = {f"output_{i}": {"uid": f"output_{i}", "status": "pass", "type": "table",
                               "summary": "pass", "files": [{"name": n}], "comments": [],
                               "exception": ""} for i, n in enumerate(names)}
    (out / "results.json").write_text(json.dumps({"version": "0.4.12", "results": results}))
    (out / "checksums").mkdir()
    for name in names:
        digest = hashlib.sha256((out / name).read_bytes()).hexdigest()
        (out / "checksums" / f"{name}.txt").write_text(digest)


@hostile
def one_person_means_with_forged_acro(out: Path, x: Extract) -> list[str]:
    weights = [o for o in x.observations if finding(o) == "Body weight"][:12]
    rows = ["group,mean_weight"] + [f"g{i},{o['valueQuantity']['value']}"
                                    for i, o in enumerate(weights)]
    (out / "output_0_0.csv").write_text("\n".join(rows) + "\n")
    forge_acro(out, ["output_0_0.csv"])
    return []


@hostile
def one_person_means_with_n_and_forged_acro(out: Path, x: Extract) -> list[str]:
    rows = ["group,n,mean_weight", "a,1,61.9", "b,1,88.2", "c,40,72.5"]
    (out / "output_0_0.csv").write_text("\n".join(rows) + "\n")
    forge_acro(out, ["output_0_0.csv"])
    return []


# ---- benign: what research jobs ordinarily write ----------------------------------------

def _common_codes(x: Extract, at_least: int = 10) -> Counter:
    counts = Counter(finding(o) for o in x.observations)
    return Counter({k: v for k, v in counts.items() if v >= at_least})


@benign
def counts_by_sex(out: Path, x: Extract) -> list[str]:
    counts = Counter(p.get("gender") for p in x.patients)
    (out / "sex.csv").write_text("sex,n\n" + "".join(f"{k},{v}\n" for k, v in counts.items()
                                                     if v >= 10))
    return []


@benign
def observation_counts_by_code(out: Path, x: Extract) -> list[str]:
    counts = _common_codes(x)
    assert len(counts) >= 2
    (out / "observations_by_code.csv").write_text(
        "observation,count\n" + "".join(f"{k},{v}\n" for k, v in counts.most_common()))
    return []


@benign
def observation_counts_by_year_tsv(out: Path, x: Extract) -> list[str]:
    counts = Counter(x.when(o).year for o in x.observations)
    rows = [f"{y}\t{n}" for y, n in sorted(counts.items()) if n >= 10]
    assert rows
    (out / "by_year.tsv").write_text("year\tobservations\n" + "\n".join(rows) + "\n")
    return []


@benign
def crosstab_with_percentages(out: Path, x: Extract) -> list[str]:
    (out / "modality_by_sex.csv").write_text(
        "modality,female,male,total,pct_female\nMR,14,12,26,53.8\nCT,21,18,39,53.8\n"
        "US,11,15,26,42.3\n")
    return []


@benign
def pandas_crosstab(out: Path, x: Extract) -> list[str]:
    (out / "xtab.csv").write_text("sex,female,male\nage_band,,\n40-59,25,31\n60-79,18,22\n"
                                  "80+,12,10\n")
    return []


@benign
def markdown_report_with_a_table(out: Path, x: Extract) -> list[str]:
    n = len(x.patients)
    (out / "report.md").write_text(
        f"# Cohort description\n\nWe included {n} patients from one site. Counts under 10 "
        "are suppressed.\n\n| modality | studies |\n|---|---:|\n| MR | 21 |\n| CT | 16 |\n\n"
        "See `age_hist.png` for the age distribution.\n")
    return []


@benign
def readme(out: Path, x: Extract) -> list[str]:
    (out / "README.txt").write_text(
        "Outputs of the cohort description job\n\n"
        "sex.csv                   patients by administrative sex\n"
        "observations_by_code.csv  observations by LOINC display name\n"
        "model.txt                 logistic regression of hypertension on age and BMI\n"
        "age_hist.png              the age distribution (10-year bands)\n\n"
        "All counts are at least 10; smaller cells were suppressed before writing.\n"
        "Code: https://example.org/cohort-job (version 1.4.2)\n")
    return []


@benign
def readme_with_a_table_of_files(out: Path, x: Extract) -> list[str]:
    (out / "README.md").write_text(
        "# Outputs\n\n| file | what it holds |\n|---|---|\n"
        "| `sex.csv` | patients by administrative sex |\n"
        "| `model.txt` | the logistic regression's summary |\n"
        "| `age_hist.png` | the age distribution in 10-year bands |\n\n"
        "Counts under 10 were suppressed before writing.\n")
    return []


@benign
def png_plot_file(out: Path, x: Extract) -> list[str]:
    (out / "age_hist.png").write_bytes(png_plot())
    return []


@benign
def statsmodels_summary(out: Path, x: Extract) -> list[str]:
    (out / "model.txt").write_text("""\
                           Logit Regression Results
==============================================================================
Dep. Variable:           hypertension   No. Observations:                  317
Model:                          Logit   Df Residuals:                      313
Method:                           MLE   Df Model:                            3
Date:                Thu, 03 Dec 2026   Pseudo R-squ.:                  0.1124
Time:                        10:14:02   Log-Likelihood:                -187.21
converged:                       True   LL-Null:                       -210.92
==============================================================================
                 coef    std err          z      P>|z|      [0.025      0.975]
------------------------------------------------------------------------------
const         -4.1021      0.812     -5.052      0.000      -5.694      -2.511
age            0.0412      0.009      4.578      0.000       0.024       0.059
bmi            0.0587      0.021      2.795      0.005       0.018       0.100
female        -0.2231      0.241     -0.926      0.354      -0.695       0.249
==============================================================================
""")
    return []


@benign
def coefficient_table(out: Path, x: Extract) -> list[str]:
    (out / "coefficients.csv").write_text(
        "term,coef,std_err,z,p,ci_low,ci_high\n"
        "const,-4.1021,0.812,-5.052,0.000,-5.694,-2.511\n"
        "age,0.0412,0.009,4.578,0.000,0.024,0.059\n"
        "bmi,0.0587,0.021,2.795,0.005,0.018,0.100\n"
        "df_resid,313,,,,,\n")
    return []


@benign
def json_of_aggregates(out: Path, x: Extract) -> list[str]:
    counts = _common_codes(x)
    (out / "summary.json").write_text(json.dumps({
        "n_patients": len(x.patients),
        "by_sex": dict(Counter(p.get("gender") for p in x.patients)),
        "observations": dict(counts.most_common()),
        "pct_female": 50.0, "suppressed_below": 10, "version": "1.4.2"}, indent=2))
    return []


@benign
def json_records_of_counts(out: Path, x: Extract) -> list[str]:
    counts = _common_codes(x)
    records = [{"observation": k, "n": v} for k, v in counts.most_common()]
    (out / "counts.json").write_text(json.dumps(records))
    return []


@benign
def histogram_json(out: Path, x: Extract) -> list[str]:
    (out / "age_hist.json").write_text(json.dumps(
        {"bins": ["40-49", "50-59", "60-69", "70-79"], "counts": [12, 25, 31, 14]}))
    return []


@benign
def model_metrics_json(out: Path, x: Extract) -> list[str]:
    (out / "metrics.json").write_text(json.dumps(
        {"auc": 0.781, "accuracy": 0.74, "brier": 0.181, "folds": 5, "seed": 20261203,
         "n_train": 253, "n_test": 64}))
    return []


@benign
def training_log(out: Path, x: Extract) -> list[str]:
    (out / "training.txt").write_text("".join(
        f"epoch {e:2d}  loss {0.7 - e * 0.02:.4f}  val_auc {0.6 + e * 0.01:.3f}\n"
        for e in range(1, 21)))
    return []


@benign
def markdown_methods(out: Path, x: Extract) -> list[str]:
    (out / "methods.md").write_text(
        "# Methods\n\nWe fitted a logistic regression of hypertension on age, BMI and sex "
        "over all observations of the permit's extract (version 1). Ages are in 10-year "
        "bands; the model was checked with 5-fold cross-validation.\n\n## Outputs\n\n"
        "- `model.txt`: the fitted model\n- `coefficients.csv`: its coefficients\n")
    return []


@benign
def counts_by_age_band_and_sex(out: Path, x: Extract) -> list[str]:
    (out / "age_sex.csv").write_text("age_band,sex,patients\n40-59,female,25\n40-59,male,31\n"
                                     "60-79,female,18\n60-79,male,22\n")
    return []


@benign
def survival_table(out: Path, x: Extract) -> list[str]:
    (out / "survival.csv").write_text(
        "time_months,n_risk,n_event,survival\n12,104,14,0.883\n"
        "24,81,19,0.676\n36,60,13,0.568\n")
    return []


@benign
def counts_by_condition_and_year_long(out: Path, x: Extract) -> list[str]:
    rows = ["condition,year,patients"] + [f"{c},{y},{10 + (i * 7 + y) % 30}"
                                          for i, c in enumerate(["I10", "E11", "J45", "M54"])
                                          for y in (2021, 2022, 2023)]
    (out / "conditions_by_year.csv").write_text("\n".join(rows) + "\n")
    return []


@benign
def svg_plot(out: Path, x: Extract) -> list[str]:
    (out / "bars.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="60">'
        '<rect x="0" y="10" width="40" height="50"/><rect x="60" y="30" width="40" '
        'height="30"/></svg>')
    return []
