"""Supervision variants of the paper's ablation (§A.8) and the single-shot baseline.

| variant        | observations used                          | sigma in U                  | beta  |
|----------------|--------------------------------------------|-----------------------------|-------|
| single         | one random observation per pair (seeded)   | 0                           | 0     |
| input_only     | the first decode of each rewrite           | std over those              | beta  |
| output_only    | decodes of the original query if collected, else all decodes of the first rewrite | std | beta |
| no_risk        | all                                        | -                           | 0     |
| rewrite_risk   | all                                        | std_k(mean_r q)             | beta  |
| decode_risk    | all                                        | mean_k std_r(q)             | beta  |
| dars           | all                                        | std of all (ddof = 1)       | beta  |

The exact operationalisations of input-only / output-only and of the rewrite/decode risks are
our choices (the paper describes them only in words); see docs/supervision.md.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from caproute.supervise.normalize import CostNormalizer
from caproute.supervise.sampling import single_shot
from caproute.supervise.stats import capability_stats
from caproute.supervise.supervision import Supervision, from_stats
from caproute.supervise.utility import DEFAULT_BETA

VARIANTS = ("single", "input_only", "output_only", "no_risk", "rewrite_risk", "decode_risk", "dars")


def _input_only(obs: pd.DataFrame) -> pd.DataFrame:
    rew = obs[obs["prompt_variant_id"] >= 0]
    if rew.empty:
        rew = obs
    first = rew.groupby(["dataset", "query_id", "model", "prompt_variant_id"])["decode_id"].transform("min")
    return rew[rew["decode_id"] == first]


def _output_only(obs: pd.DataFrame) -> pd.DataFrame:
    orig = obs[obs["prompt_variant_id"] < 0]
    if not orig.empty:
        return orig
    first = obs.groupby(["dataset", "query_id"])["prompt_variant_id"].transform("min")
    return obs[obs["prompt_variant_id"] == first]


def build_supervision(train_obs: pd.DataFrame, *, variant: str = "dars", beta: float = DEFAULT_BETA,
                      normalizer: CostNormalizer | None = None, seed: int = 42,
                      models: tuple[str, ...] | None = None, drop_incomplete: bool = False,
                      missing: str = "mask") -> Supervision:
    """Supervision of one dataset's training observations for an ablation ``variant``.

    The cost normaliser is fitted on ``train_obs`` unless one is given. ``missing``: what happens
    to (query, model) pairs without observations (:func:`caproute.supervise.supervision.from_stats`);
    by default ``"mask"``: every family trains on the observed pairs (a partial grid, e.g. routed
    traffic with feedback). ``drop_incomplete`` is the older spelling of ``missing="drop"``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown supervision variant '{variant}' (choose from {VARIANTS})")
    normalizer = normalizer or CostNormalizer().fit(train_obs)
    obs = {"single": lambda o: single_shot(o, seed), "input_only": _input_only,
           "output_only": _output_only}.get(variant, lambda o: o)(train_obs)
    stats = capability_stats(obs, normalizer.transform(obs))
    sigma_col = {"rewrite_risk": "sigma_rewrite", "decode_risk": "sigma_decode"}.get(variant, "sigma_q")
    use_beta = 0.0 if variant in ("single", "no_risk") else beta
    sup = from_stats(stats, models=models, kind=variant, beta=use_beta, sigma_column=sigma_col,
                     missing="drop" if drop_incomplete else missing)
    if variant in ("single", "no_risk"):
        sup.sigma_q = np.zeros_like(sup.sigma_q) if variant == "single" else sup.sigma_q
    sup.meta["seed"] = seed if variant == "single" else None
    return sup
