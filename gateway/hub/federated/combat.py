"""Distributed ComBat over a permit's nodes, in three rounds (spe/federated/combat.py for
the centre's algebra, spe/federated/apps/combat/ for the step each node runs in its
sandbox): "moments" (X'X, X'Y), "variance" (the sums of squared residuals under the pooled
fit), "adjust" (each node standardises with the pooled estimates, finds its own empirical
Bayes estimates, adjusts its rows and keeps them at `/extract/derived/<run>/`; only its
gamma* and delta* leave). The centre's result (the covariates' coefficients, the grand
mean, the pooled variance, each site's gamma* and delta* with the counts behind them) and
an automatic check of the count behind every estimate go to the airlock.

With the "skip" rule a node refused in the first round is left out and that round sent
again to the others (its batch column must go); a node lost after it stops the run, since
the pooled estimates need every node of the first round.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from gateway.hub.federated.release import as_json, history, release
from gateway.hub.federated.runs import Rounds, RunStopped, arrays_of, set_airlock
from spe.airlock import rules_from_policy
from spe.federated import combat
from spe.federated.apps.combat import features as combat_features
from spe.federated.apps.combat import site as combat_site
from spe.wire.code_archive import pack_code
from spe.wire.jobs import InvalidJob

APPS = Path(__file__).resolve().parents[3] / "spe" / "federated" / "apps"
STEP_FILES = ("step.py", "site.py", "features.py")
DEFAULT_COVARIATES = {"age": "continuous", "sex": "categorical", "diagnosis": "categorical"}
ENTRY = "step.py"


@lru_cache(maxsize=1)
def step_code() -> str:
    """base64 tar.gz of the ComBat step with what it imports (steplib, site, features)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in STEP_FILES:
            shutil.copy(APPS / "combat" / name, Path(tmp) / name)
        shutil.copy(APPS / "steplib.py", Path(tmp) / "steplib.py")
        return base64.b64encode(pack_code(tmp)).decode()


def settings_of(config: dict[str, Any]) -> dict[str, Any]:
    """The run's ComBat settings, checked (InvalidJob names what is wrong)."""
    known = {"covariates", "diagnosis_codes", "modality", "body_part", "features"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise InvalidJob(f"config: {', '.join(unknown)} not known to ComBat "
                         f"({', '.join(sorted(known))})")
    spec = config.get("covariates") or DEFAULT_COVARIATES
    if not isinstance(spec, dict):
        raise InvalidJob("config.covariates: an object of name -> 'continuous', "
                         "'categorical' or a list of levels")
    try:
        combat_site.columns(spec)
    except ValueError as exc:
        raise InvalidJob(f"config.covariates: {exc}") from None
    names = list(config.get("features") or combat_features.FEATURES)
    bad = [n for n in names if n not in combat_features.FEATURES]
    if bad or len(set(names)) != len(names):
        raise InvalidJob(f"config.features: unknown or repeated: {', '.join(bad) or names}"
                         f" (known: {', '.join(combat_features.FEATURES)})")
    codes = config.get("diagnosis_codes") or []
    if not isinstance(codes, list) or not all(isinstance(c, str) and 0 < len(c) <= 16
                                              for c in codes):
        raise InvalidJob("config.diagnosis_codes: a list of ICD-10 codes or prefixes")
    return {"covariates": spec, "features": names, "diagnosis_codes": codes,
            "modality": config.get("modality"), "body_part": config.get("body_part")}


def _effects(replies: dict) -> dict[str, float]:
    gammas = [arrays_of(r)["gamma_star"] for r in replies.values()]
    deltas = [arrays_of(r)["delta_star"] for r in replies.values()]
    if not gammas:
        return {}
    return {"batch_effect": float(np.mean(np.abs(np.concatenate(gammas)))),
            "scale_effect": float(np.mean(np.abs(np.log(np.concatenate(deltas)))))}


async def drive_combat(rounds: Rounds) -> None:
    settings = settings_of(rounds.body.config)
    spec, names = settings["covariates"], settings["features"]
    code, f = step_code(), len(names)
    await run_in_threadpool(set_airlock, rounds.ctx, rounds.run_id, None, 3)
    for _ in range(2):
        batches = list(rounds.active)
        p = combat_site.width(len(batches), spec)
        config = {**settings, "batches": batches}
        moments = await rounds.send(combat.MOMENTS, app="combat", code=code, entry=ENTRY,
                                    contract=combat.moments_contract(p, f), config=config)
        if set(moments) == set(batches):
            break
    else:
        raise RunStopped("the moments round lost nodes twice")
    got = {n: arrays_of(moments[n]) for n in batches}
    B_hat = combat.pool_moments((got[n]["xtx"], got[n]["xty"], moments[n].n or 0)
                                for n in batches)
    sizes = combat.batch_sizes([got[n]["xtx"] for n in batches], len(batches))
    mean = combat.grand_mean(B_hat, sizes)

    def whole(replies: dict, kind: str) -> None:
        if set(replies) != set(batches):
            lost = ", ".join(sorted(set(batches) - set(replies)))
            raise RunStopped(f"the {kind} round lost {lost}: the pooled estimates need "
                             "every node of the moments round")

    variance = await rounds.send(combat.VARIANCE, app="combat", code=code, entry=ENTRY,
                                 contract=combat.variance_contract(p, f), config=config,
                                 arrays={"B_hat": B_hat})
    whole(variance, "variance")
    var_pooled = combat.pool_variance((arrays_of(variance[n])["ssr"], int(sizes[i]))
                                      for i, n in enumerate(batches))
    adjusted = await rounds.send(combat.ADJUST, app="combat", code=code, entry=ENTRY,
                                 contract=combat.adjust_contract(p, f), config=config,
                                 arrays={"B_hat": B_hat, "grand_mean": mean,
                                         "var_pooled": var_pooled}, pool=_effects)
    whole(adjusted, "adjust")
    columns = combat_site.column_names(len(batches), spec)
    threshold = rules_from_policy(rounds.ctx.policy).min_count
    sites = {n: {"samples": int(sizes[i]), "patients": int(adjusted[n].n or 0),
                 "gamma_star": arrays_of(adjusted[n])["gamma_star"].tolist(),
                 "delta_star": arrays_of(adjusted[n])["delta_star"].tolist()}
             for i, n in enumerate(batches)}
    estimates = {
        "method": "distributed ComBat (Chen et al., NeuroImage 2022): the parametric "
                  "empirical Bayes ComBat of neuroCombat 0.2.12, computed across sites",
        "run": rounds.run_id, "permit": rounds.body.permit, "features": names,
        "covariates": spec, "batches": batches,
        "coefficients": {c: B_hat[j].tolist() for j, c in enumerate(columns)
                         if not c.startswith("batch:")},
        "grand_mean": mean.tolist(), "var_pooled": var_pooled.tolist(), "sites": sites,
        "harmonised_features": f"at each node, in /extract/derived/{rounds.run_id}/"
                               "harmonised.csv for later jobs of this permit"}
    checks = [{"estimate": f"{n}: gamma_star, delta_star", "patients": s["patients"],
               "samples": s["samples"], "ok": s["patients"] >= threshold}
              for n, s in sites.items()]
    total = sum(s["patients"] for s in sites.values())
    checks.append({"estimate": "pooled: coefficients, grand_mean, var_pooled",
                   "patients": total, "samples": int(sizes.sum()), "ok": total >= threshold})
    disclosure = {"check": "the count of patients behind each estimate",
                  "threshold": threshold, "estimates": checks,
                  "verdict": "pass" if all(c["ok"] for c in checks) else "review"}

    def send() -> None:
        from spe.db import session_scope
        from spe.federated.models import FedRun
        with session_scope(rounds.ctx.sessions) as session:
            run = session.get(FedRun, rounds.run_id)
            kept = history(run.rounds, run.privacy)
        request = release(rounds.ctx, run_id=rounds.run_id, pid=rounds.body.permit,
                          requester=rounds.caller.id,
                          files={"combat_estimates.json": as_json(estimates),
                                 "rounds.json": as_json(kept),
                                 "disclosure.json": as_json(disclosure)})
        set_airlock(rounds.ctx, rounds.run_id, request)

    await run_in_threadpool(send)
