"""What a researcher sends to start a federated run, and what they read of it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from spe.sandbox.limits import RequestedLimits
from spe.wire.jobs import MAX_CODE_B64
from spe.wire.rounds import PrivacySpec, RunConfig


class FedRunSubmission(BaseModel):
    permit: str = Field(min_length=1, max_length=32)
    app: Literal["combat", "flower"]
    # flower: base64 of a tar.gz of the Flower app's folder (its pyproject.toml names the
    # ServerApp and ClientApp, as `flwr run` reads it); combat: none (the app is ours).
    code: Annotated[str, Field(min_length=4, json_schema_extra={"maxLength": MAX_CODE_B64})
                    ] | None = None
    nodes: list[Annotated[str, Field(max_length=64)]] | None = Field(default=None,
                                                                     max_length=100)
    # What to do with a node that fails, is refused or times out in a round: "stop" the
    # run, "retry" it (`retries` times, then stop), or "skip" it for the rest of the run.
    on_failure: Literal["stop", "retry", "skip"] = "stop"
    retries: int = Field(default=1, ge=0, le=5)
    min_nodes: int = Field(default=2, ge=1, le=100)  # fewer left: the run stops
    round_timeout: float = Field(default=600.0, ge=5.0, le=3600.0)
    privacy: PrivacySpec | None = None
    # combat: {"covariates": {"age": "continuous", "sex": "categorical", ...},
    #          "diagnosis_codes": ["C71"], "modality": "MR", "body_part": "BRAIN"};
    # flower: overrides of the app's [tool.flwr.app.config] (num-server-rounds, ...).
    config: RunConfig = Field(default_factory=dict)
    limits: RequestedLimits = Field(default_factory=dict)

    @model_validator(mode="after")
    def _code_for_flower(self) -> FedRunSubmission:
        if self.app == "flower" and not self.code:
            raise ValueError("a Flower run needs code: the app's folder as a base64 tar.gz")
        if self.app == "combat" and self.code:
            raise ValueError("a ComBat run takes no code: the harmonisation is the SPE's")
        return self


class NodeRoundView(BaseModel):
    state: str  # accepted | refused | failed | unreachable | skipped
    reason: str = ""
    seconds: float = 0.0
    attempts: int = 1
    epsilon: float | None = None  # the privacy this run has spent at the node so far


class RoundView(BaseModel):
    round: int
    kind: str
    at: str
    nodes: dict[str, NodeRoundView]
    metrics: dict[str, float] = Field(default_factory=dict)


class FedRunView(BaseModel):
    id: str
    permit: str
    user: str
    app: str
    state: str
    reason: str = ""
    nodes: list[str]
    rounds_planned: int | None = None
    rounds: list[RoundView]
    privacy: dict[str, float] = Field(default_factory=dict)
    airlock: str | None = None
    created_at: datetime
    updated_at: datetime
