"""The federated query: what a researcher asks, what the hub sends to the nodes, and what
the nodes answer. Shared by the hub (gateway.hub) and the nodes (gateway.node.query) as
data, never as code paths (ARCHITECTURE: they share the wire format only).

A query is a tree of `and` / `or` / `not` over criteria on the patient, their conditions,
observations and imaging, plus the answer asked for. Everything is validated here with
limits on size and depth, so a node never compiles an unbounded tree.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_DEPTH = 6
MAX_CRITERIA = 40
MAX_LIST = 20

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9.\-_]+$")]
Token = Annotated[str, Field(min_length=1, max_length=64)]

#: Code systems by the short names a query may use, and the FHIR URIs they cover in the
#: index (ICD-10 as WHO publishes it and its US clinical modification alike).
CODE_SYSTEMS = {
    "icd-10": ("http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm"),
    "snomed": ("http://snomed.info/sct",),
    "loinc": ("http://loinc.org",),
}
#: Age bands for stratification: [low, high] in completed years, inclusive.
AGE_BANDS = {"0-17": (0, 17), "18-39": (18, 39), "40-64": (40, 64), "65+": (65, 200)}
Stratum = Literal["sex", "age_band", "modality", "site"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgeRange(_Strict):
    """Age in completed years, at a given date or at each of the patient's studies."""

    min: int | None = Field(default=None, ge=0, le=150)
    max: int | None = Field(default=None, ge=0, le=150)
    at: date | Literal["study"] = "study"

    @model_validator(mode="after")
    def _ordered(self) -> AgeRange:
        if self.min is None and self.max is None:
            raise ValueError("an age range needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"age min ({self.min}) is above max ({self.max})")
        return self


class PatientCriterion(_Strict):
    type: Literal["patient"]
    sex: Literal["female", "male", "other", "unknown"] | None = None
    age: AgeRange | None = None

    @model_validator(mode="after")
    def _something(self) -> PatientCriterion:
        if self.sex is None and self.age is None:
            raise ValueError("a patient criterion needs sex or age")
        return self


class ConditionCriterion(_Strict):
    """A patient with a condition coded so; `prefix` matches ICD-10 categories and chapters
    ("C71" matches C71.9)."""

    type: Literal["condition"]
    system: Literal["icd-10", "snomed"]
    code: Code
    prefix: bool = False


class ObservationCriterion(_Strict):
    type: Literal["observation"]
    system: Literal["loinc"] = "loinc"
    code: Code
    min: float | None = None
    max: float | None = None
    unit: Token | None = None  # UCUM, compared as written in the index

    @model_validator(mode="after")
    def _ordered(self) -> ObservationCriterion:
        if (self.min is not None or self.max is not None) and self.unit is None:
            raise ValueError("an observation range needs its unit (UCUM, e.g. \"kg\"): "
                             "values in other units are not comparable")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"observation min ({self.min}) is above max ({self.max})")
        return self


class ImagingCriterion(_Strict):
    """A patient with at least one series matching every given field."""

    type: Literal["imaging"]
    modality: list[Token] = Field(default_factory=list, max_length=MAX_LIST)
    body_part: list[Token] = Field(default_factory=list, max_length=MAX_LIST)
    manufacturer: Token | None = None
    study_from: date | None = None
    study_to: date | None = None

    @model_validator(mode="after")
    def _something(self) -> ImagingCriterion:
        if not (self.modality or self.body_part or self.manufacturer or self.study_from
                or self.study_to):
            raise ValueError("an imaging criterion needs modality, body_part, manufacturer "
                             "or a study date")
        if self.study_from and self.study_to and self.study_from > self.study_to:
            raise ValueError("study_from is after study_to")
        return self


class And(_Strict):
    type: Literal["and"]
    of: list[Criterion] = Field(min_length=1, max_length=MAX_LIST)


class Or(_Strict):
    type: Literal["or"]
    of: list[Criterion] = Field(min_length=1, max_length=MAX_LIST)


class Not(_Strict):
    type: Literal["not"]
    of: Criterion


Criterion = Annotated[
    PatientCriterion | ConditionCriterion | ObservationCriterion | ImagingCriterion
    | And | Or | Not,
    Field(discriminator="type"),
]
for _model in (And, Or, Not):
    _model.model_rebuild()


# ---- variables of the statistics kinds --------------------------------------------------
# One value per patient of the cohort (`where`); a patient without one (no birth date, no
# observation of that code and unit, sex neither female nor male) is left out of that
# statistic (complete cases), which the answer's n shows.

MAX_PREDICTORS = 10
MAX_VARIABLES = 10
MAX_EDGES = 51
MAX_PROBABILITIES = 19


class AgeVariable(_Strict):
    """Completed years at the patient's latest dated study, else today."""

    type: Literal["age"]


class SexVariable(_Strict):
    """Categorical: female / male (other and unknown are left out); 1 for male as a
    number (a predictor, a correlation)."""

    type: Literal["sex"]


class ObservationVariable(_Strict):
    """The patient's latest (by date) value, or the mean of their values, of a LOINC code
    in one UCUM unit (values in other units are not comparable, and are left out)."""

    type: Literal["observation"]
    system: Literal["loinc"] = "loinc"
    code: Code
    unit: Token
    summary: Literal["latest", "mean"] = "latest"


class ConditionVariable(_Strict):
    """1 if the patient has a condition so coded (`prefix`: an ICD-10 category or
    chapter), else 0; categorical "yes" / "no" in a table."""

    type: Literal["condition"]
    system: Literal["icd-10", "snomed"]
    code: Code
    prefix: bool = False


class ImagingVariable(_Strict):
    """How many studies the patient has with at least one series of that modality."""

    type: Literal["imaging"]
    modality: Token


Variable = Annotated[
    AgeVariable | SexVariable | ObservationVariable | ConditionVariable | ImagingVariable,
    Field(discriminator="type"),
]
NUMERIC = (AgeVariable, ObservationVariable, ImagingVariable)
"""Variables with a scale: means, quantiles, histograms, a linear model's outcome."""
BINARY = (SexVariable, ConditionVariable)
"""Two levels, 0/1 as numbers: a logistic model's outcome."""


def variable_name(v: Variable) -> str:
    """How a variable is named in an answer: "age", "sex", "observation 8480-6 [mm[Hg]]
    (latest)", "condition icd-10 C71*", "imaging MR"."""
    match v:
        case AgeVariable():
            return "age"
        case SexVariable():
            return "sex"
        case ObservationVariable():
            return f"observation {v.code} [{v.unit}] ({v.summary})"
        case ConditionVariable():
            return f"condition {v.system} {v.code}{'*' if v.prefix else ''}"
        case ImagingVariable():
            return f"imaging {v.modality}"
    raise TypeError(type(v).__name__)


def predictor_name(v: Variable) -> str:
    """The name of a predictor's coefficient: what 1 means for binary ones."""
    if isinstance(v, SexVariable):
        return "sex (male)"
    return variable_name(v)


def _kind_of(v: Variable) -> str:
    return ("categorical (sex)" if isinstance(v, SexVariable)
            else "yes/no (a condition)" if isinstance(v, ConditionVariable) else "numeric")


class ConditionEvent(_Strict):
    """The first onset of a condition so coded."""

    type: Literal["condition"]
    system: Literal["icd-10", "snomed"]
    code: Code
    prefix: bool = False


class StudyEvent(_Strict):
    """The patient's first study (of that modality, if given)."""

    type: Literal["study"]
    modality: Token | None = None


Event = Annotated[ConditionEvent | StudyEvent, Field(discriminator="type")]


class Bins(_Strict):
    """`count` equal bins from `start` to `stop`."""

    start: float
    stop: float
    count: int = Field(ge=1, le=MAX_EDGES - 1)

    @model_validator(mode="after")
    def _ordered(self) -> Bins:
        if not (math.isfinite(self.start) and math.isfinite(self.stop)):
            raise ValueError("bins need finite start and stop")
        if self.start >= self.stop:
            raise ValueError(f"bins start ({self.start}) is not below stop ({self.stop})")
        return self

    def edges(self) -> list[float]:
        step = (self.stop - self.start) / self.count
        return [self.start + i * step for i in range(self.count)] + [self.stop]


STATISTICS = ("mean", "quantiles", "histogram", "table", "correlation", "linear",
              "logistic", "survival")
AnswerKind = Literal["boolean", "count", "stratified", "mean", "quantiles", "histogram",
                     "table", "correlation", "linear", "logistic", "survival"]
#: Which parameters each kind takes (others are refused, so a typo is not ignored).
_PARAMETERS = {
    "boolean": set(), "count": set(), "stratified": {"by"},
    "mean": {"variable"}, "quantiles": {"variable", "probabilities"},
    "histogram": {"variable", "bins", "edges"}, "table": {"variables"},
    "correlation": {"variables"}, "linear": {"outcome", "predictors"},
    "logistic": {"outcome", "predictors"}, "survival": {"start", "end", "unit"},
}
_ALL_PARAMETERS = set().union(*_PARAMETERS.values())


class Answer(_Strict):
    """What comes back about the patients `where` selects: a count (or yes/no, or strata)
    or a statistic over their variables (see README, "Federated statistics")."""

    kind: AnswerKind = "count"
    by: list[Stratum] = Field(default_factory=list, max_length=2)
    variable: Variable | None = None
    variables: list[Variable] | None = Field(default=None, max_length=MAX_VARIABLES)
    outcome: Variable | None = None
    predictors: list[Variable] | None = Field(default=None, max_length=MAX_PREDICTORS)
    probabilities: list[float] | None = Field(default=None, max_length=MAX_PROBABILITIES)
    bins: Bins | None = None
    edges: list[float] | None = Field(default=None, max_length=MAX_EDGES)
    start: Event | None = None
    end: Event | None = None
    unit: Literal["day", "week", "month"] | None = None

    @model_validator(mode="after")
    def _strata(self) -> Answer:
        if self.kind == "stratified" and not self.by:
            raise ValueError("a stratified answer needs `by` (one or two of sex, age_band, "
                             "modality, site)")
        if self.kind != "stratified" and self.by:
            raise ValueError("`by` is only for a stratified answer")
        if len(set(self.by)) != len(self.by):
            raise ValueError("`by` names a stratum twice")
        given = {f for f in _ALL_PARAMETERS - {"by"} if getattr(self, f) is not None}
        extra = sorted(given - _PARAMETERS[self.kind])
        if extra:
            takes = sorted(_PARAMETERS[self.kind]) or ["nothing more"]
            raise ValueError(f"a {self.kind} answer takes {', '.join(takes)}, not "
                             f"{', '.join(extra)}")
        check = getattr(self, f"_check_{self.kind}", None)
        if check is not None:
            check()
        return self

    # -- per kind: what it needs, in words a researcher can act on --------------------

    def _numeric(self, v: Variable | None, role: str) -> None:
        if v is None:
            raise ValueError(f"a {self.kind} answer needs `{role}` (age, an observation or "
                             "an imaging count)")
        if not isinstance(v, NUMERIC):
            raise ValueError(f"`{role}` of a {self.kind} answer must be numeric (age, an "
                             f"observation or an imaging count); {variable_name(v)} is "
                             f"{_kind_of(v)}: ask for a table (or a logistic model) "
                             "instead")

    def _check_mean(self) -> None:
        self._numeric(self.variable, "variable")

    def _check_quantiles(self) -> None:
        self._numeric(self.variable, "variable")
        ps = self.probabilities if self.probabilities is not None else [0.25, 0.5, 0.75]
        if not ps:
            raise ValueError("`probabilities` is empty")
        if any(not (0.0 < p < 1.0) for p in ps):
            raise ValueError("quantile probabilities must lie strictly between 0 and 1 "
                             "(0.5 is the median)")
        if len(set(ps)) != len(ps):
            raise ValueError("`probabilities` names a probability twice")

    def _check_histogram(self) -> None:
        self._numeric(self.variable, "variable")
        if (self.bins is None) == (self.edges is None):
            raise ValueError("a histogram needs either `bins` ({start, stop, count}) or "
                             "`edges` (increasing bin boundaries), not both")
        if self.edges is not None:
            if len(self.edges) < 2:
                raise ValueError("`edges` needs at least two boundaries (one bin)")
            if any(not math.isfinite(e) for e in self.edges):
                raise ValueError("`edges` must be finite numbers")
            if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
                raise ValueError("`edges` must be strictly increasing")

    def _check_table(self) -> None:
        vs = self.variables or []
        if len(vs) != 2:
            raise ValueError("a table needs `variables`: exactly two (rows, then columns)")
        for v in vs:
            if isinstance(v, ObservationVariable):
                raise ValueError(f"{variable_name(v)} is continuous and cannot be a table's "
                                 "rows or columns: ask for a histogram, or select a range "
                                 "of it in `where`")
        if variable_name(vs[0]) == variable_name(vs[1]):
            raise ValueError("a table's rows and columns are the same variable")

    def _check_correlation(self) -> None:
        vs = self.variables or []
        if len(vs) < 2:
            raise ValueError("a correlation needs `variables`: at least two")
        names = [variable_name(v) for v in vs]
        if len(set(names)) != len(names):
            raise ValueError("`variables` names a variable twice")

    def _model(self) -> None:
        if not self.predictors:
            raise ValueError(f"a {self.kind} model needs `predictors` (at least one)")
        names = [variable_name(v) for v in self.predictors]
        if len(set(names)) != len(names):
            raise ValueError("`predictors` names a variable twice")
        if self.outcome is not None and variable_name(self.outcome) in names:
            raise ValueError("the outcome is also a predictor")

    def _check_linear(self) -> None:
        self._numeric(self.outcome, "outcome")
        self._model()

    def _check_logistic(self) -> None:
        if self.outcome is None:
            raise ValueError("a logistic model needs `outcome`: sex or a condition (yes/no)")
        if not isinstance(self.outcome, BINARY):
            raise ValueError(f"a logistic model's outcome must be yes/no (sex or a "
                             f"condition); {variable_name(self.outcome)} is numeric: ask "
                             "for a linear model instead")
        self._model()

    def _check_survival(self) -> None:
        if self.start is None or self.end is None:
            raise ValueError("a survival answer needs `start` and `end` events (a condition "
                             "{system, code} or a study {modality})")
        if self.start == self.end:
            raise ValueError("a survival answer's start and end are the same event")
        if self.unit is None:
            raise ValueError("a survival answer needs `unit`: day, week or month")

    def quantile_probabilities(self) -> list[float]:
        return sorted(self.probabilities if self.probabilities is not None
                      else [0.25, 0.5, 0.75])

    def histogram_edges(self) -> list[float]:
        return list(self.edges) if self.edges is not None else self.bins.edges()


def _walk(c, depth: int = 1):
    yield c, depth
    children = c.of if isinstance(c, And | Or) else [c.of] if isinstance(c, Not) else []
    for child in children:
        yield from _walk(child, depth + 1)


class Query(_Strict):
    """`where` selects patients; `answer` says what comes back about them."""

    where: Criterion
    answer: Answer = Field(default_factory=Answer)

    @model_validator(mode="after")
    def _bounded(self) -> Query:
        nodes = list(_walk(self.where))
        if len(nodes) > MAX_CRITERIA:
            raise ValueError(f"the query has {len(nodes)} criteria; at most {MAX_CRITERIA}")
        depth = max(d for _, d in nodes)
        if depth > MAX_DEPTH:
            raise ValueError(f"the query is nested {depth} deep; at most {MAX_DEPTH}")
        return self

    def digest(self) -> str:
        """SHA-256 of the canonical JSON: what the audit logs and the hub's context name."""
        data = self.model_dump(mode="json", exclude_defaults=False)
        # The statistics' parameters only where given: a count's digest is as it was.
        data["answer"] = {k: v for k, v in data["answer"].items()
                          if v is not None or k not in _ALL_PARAMETERS}
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# ---- what a node answers ----------------------------------------------------------------

class Cell(BaseModel):
    """One count. `suppressed` marks a count under the threshold: `value` is then None,
    never 0 and never exact. Shown values are rounded to `rounding`.

    In the statistics tier a shown value is `perturbed` (the cell-key method): the count
    plus a noise of at most `max_noise` either way and standard deviation at most `sd`, the
    same for the same set of patients however asked. `reason` says why a value is
    suppressed or perturbed, in words a researcher can act on."""

    key: dict[str, str] = Field(default_factory=dict)  # stratum -> value; {} for the total
    value: int | None
    suppressed: bool = False
    perturbed: bool = False
    reason: str | None = None
    max_noise: int | None = None
    sd: float | None = None


class NodeAnswer(BaseModel):
    node_id: str
    tier: str
    kind: AnswerKind
    exists: bool | None = None  # boolean answers
    total: Cell | None = None
    cells: list[Cell] = Field(default_factory=list)
    threshold: int
    rounding: int
    notes: list[str] = Field(default_factory=list)  # e.g. why an answer was suppressed
    # The statistics kinds: the node's summary for the hub to combine (kind-specific, see
    # gateway/node/query/statistics.py), perturbed in the statistics tier; None when the
    # node's disclosure rules refused it (`notes` say why).
    statistic: dict | None = None


MAX_ROUNDS = 64
MAX_STEP_VALUES = 2048


class Step(_Strict):
    """One round of a statistic the hub computes in rounds (quantiles: counts at or below
    `points`; logistic regression: sums at the coefficients `beta`). Never from a
    researcher: the hub sends it beside the query, under a context naming both
    (`step_digest`)."""

    round: int = Field(ge=1, le=MAX_ROUNDS)
    points: list[float] | None = Field(default=None, max_length=MAX_STEP_VALUES)
    beta: list[float] | None = Field(default=None, max_length=MAX_PREDICTORS + 1)

    @model_validator(mode="after")
    def _finite(self) -> Step:
        for v in [*(self.points or []), *(self.beta or [])]:
            if not math.isfinite(v):
                raise ValueError("a step's values must be finite")
        return self


def step_digest(query_hash: str, step: Step | None) -> str:
    """What the hub's context names for one round: the query's digest alone for the first
    (or only) round, else the SHA-256 of the query's digest and the step."""
    if step is None:
        return query_hash
    canonical = json.dumps({"query": query_hash, "step": step.model_dump(mode="json")},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


__all__ = [
    "AGE_BANDS", "BINARY", "CODE_SYSTEMS", "MAX_CRITERIA", "MAX_DEPTH", "NUMERIC",
    "STATISTICS", "AgeRange", "AgeVariable", "And", "Answer", "AnswerKind", "Bins", "Cell",
    "ConditionCriterion", "ConditionEvent", "ConditionVariable", "Criterion", "Event",
    "ImagingCriterion", "ImagingVariable", "NodeAnswer", "Not", "ObservationCriterion",
    "ObservationVariable", "Or", "PatientCriterion", "Query", "SexVariable", "Step",
    "StudyEvent", "Stratum", "Variable", "predictor_name", "step_digest", "variable_name",
]
