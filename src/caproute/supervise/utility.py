"""The DARS risk-aware utility U = mu_q - lambda * mu_c - beta * sigma_q (paper Eq. for U(x, m)).

Defaults lambda = 0.05 and beta = 0.2 are the paper's (README + code of the reference repo).
Per-dataset overrides exist because an older reference version tuned beta per dataset.

PROPOSED extension (issue 27, not the paper's): a latency term,
U = mu_q - lambda * mu_c - lambda_t * mu_latency - beta * sigma_q, with mu_latency the mean
latency of the pair in seconds (not normalised: lambda_t is quality per second) and
lambda_t = 0 by default, where U is exactly the paper's (the same float operations).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_LAMBDA = 0.05
DEFAULT_BETA = 0.2
DEFAULT_LAMBDA_T = 0.0   # PROPOSED latency weight (quality per second); 0 = the paper's U


def utility(mu_q, mu_c, sigma_q, lam: float = DEFAULT_LAMBDA, beta: float = DEFAULT_BETA,
            dtype=float, *, mu_latency=None, lam_t: float = DEFAULT_LAMBDA_T) -> np.ndarray:
    """U(x, m) = mu_q - lam * mu_c - lam_t * mu_latency - beta * sigma_q, elementwise on arrays of
    any shape (broadcast; ``lam`` may be an array of lambdas). ``mu_latency``: mean latency in
    seconds (same shape), needed only when ``lam_t`` > 0; with ``lam_t`` = 0 (the default) U is the
    paper's, computed with the same float operations. ``dtype``: the arithmetic's float type
    (float64 by default; the torch routers train on float32). The one place U is computed."""
    mu_q, mu_c, sigma_q = np.asarray(mu_q, dtype), np.asarray(mu_c, dtype), np.asarray(sigma_q, dtype)
    if not (np.any(lam_t) if isinstance(lam_t, (np.ndarray, list, tuple)) else lam_t):   # (a scalar: no array)
        return mu_q - lam * mu_c - beta * sigma_q
    if np.any(np.asarray(lam_t) < 0):
        raise ValueError(f"lambda_t must be >= 0, got {lam_t}")
    if mu_latency is None:
        raise ValueError(f"lambda_t = {lam_t} needs mu_latency (mean latency per pair, seconds); "
                         "the predictions carry none (a router trained without latencies)")
    return mu_q - lam * mu_c - lam_t * np.asarray(mu_latency, dtype) - beta * sigma_q


def observation_utility(score, cost_norm, lam: float = DEFAULT_LAMBDA, dtype=float) -> np.ndarray:
    """u = q - lam * c: the utility without the risk term, of one observation (q_{x,m,o},
    c_{x,m,o}) or of means (mean quality and cost of a pair, as the test views and the duel's
    r*(x, a) use it); ``lam`` may be an array (RM-Softmax's lambda' grid)."""
    return np.asarray(score, dtype) - lam * np.asarray(cost_norm, dtype)


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
