"""Library entry points behind ``caproute supervise`` and ``caproute diagnose``."""

from __future__ import annotations

import pandas as pd

from caproute.supervise.diagnostics import Diagnostics, diagnose
from caproute.supervise.normalize import CostNormalizer
from caproute.supervise.stats import capability_stats
from caproute.supervise.utility import DEFAULT_BETA, DEFAULT_LAMBDA, utility

SUPERVISION_COLUMNS = ["query_id", "model", "n", "mu_q", "mu_c", "sigma_q", "utility",
                       "n_rewrites", "var_input", "var_output"]


def training_rows(obs: pd.DataFrame) -> pd.DataFrame:
    """The rows supervision is built from: the train split (all rows if the data has no split)."""
    train = obs[obs["split"] == "train"]
    return train if len(train) else obs


def supervision_table(obs: pd.DataFrame, lam: float = DEFAULT_LAMBDA, beta: float = DEFAULT_BETA,
                      normalizer: CostNormalizer | None = None) -> pd.DataFrame:
    """DARS statistics and utility per (query, model) of one dataset's training observations."""
    train = training_rows(obs)
    normalizer = normalizer or CostNormalizer().fit(train)
    stats = capability_stats(train, normalizer.transform(train))
    stats["utility"] = utility(stats["mu_q"], stats["mu_c"], stats["sigma_q"], lam, beta)
    return stats[SUPERVISION_COLUMNS].reset_index(drop=True)


def diagnostics(obs: pd.DataFrame, lam: float = DEFAULT_LAMBDA, split: str | None = "train"
                ) -> tuple[Diagnostics, pd.DataFrame]:
    """Diagnostics of one dataset (costs normalised on its training rows) and its pair statistics."""
    rows = obs if split is None else obs[obs["split"] == split]
    if rows.empty:
        from caproute.errors import DataError

        raise DataError(f"no observations in split '{split}'" if split is not None else "no observations",
                        source="observations", field="split")
    normalizer = CostNormalizer().fit(training_rows(obs))
    cost = normalizer.transform(rows)
    return diagnose(rows, cost, lam), capability_stats(rows, cost)
