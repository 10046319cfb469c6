"""The DARS risk-aware utility U = mu_q - lambda * mu_c - beta * sigma_q (paper Eq. for U(x, m)).

Defaults lambda = 0.05 and beta = 0.2 are the paper's (README + code of the reference repo).
Per-dataset overrides exist because an older reference version tuned beta per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_LAMBDA = 0.05
DEFAULT_BETA = 0.2


def utility(mu_q, mu_c, sigma_q, lam: float = DEFAULT_LAMBDA, beta: float = DEFAULT_BETA) -> np.ndarray:
    """U(x, m) = mu_q - lam * mu_c - beta * sigma_q, elementwise on arrays of any shape."""
    return np.asarray(mu_q, float) - lam * np.asarray(mu_c, float) - beta * np.asarray(sigma_q, float)


def observation_utility(score, cost_norm, lam: float = DEFAULT_LAMBDA) -> np.ndarray:
    """u_{x,m,o} = q_{x,m,o} - lam * c_{x,m,o} (per-observation utility)."""
    return np.asarray(score, float) - lam * np.asarray(cost_norm, float)


@dataclass(frozen=True)
class UtilityConfig:
    """lambda / beta with optional per-dataset overrides: ``overrides={"gpqa": {"beta": 0.1}}``."""

    lam: float = DEFAULT_LAMBDA
    beta: float = DEFAULT_BETA
    overrides: dict[str, dict[str, float]] = field(default_factory=dict)

    def for_dataset(self, dataset: str) -> tuple[float, float]:
        o = self.overrides.get(dataset, {})
        lam, beta = float(o.get("lam", o.get("lambda", self.lam))), float(o.get("beta", self.beta))
        if lam < 0 or beta < 0:
            raise ValueError(f"lambda and beta must be >= 0 (dataset {dataset}: {lam}, {beta})")
        return lam, beta
