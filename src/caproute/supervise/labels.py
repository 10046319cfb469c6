"""Labels derived from utilities (n queries x m models): hard, soft, pairwise, regression.

Tie rule for hard labels (documented, deterministic): among models whose utility is within
``tol`` of the best, pick the one with the lowest mean cost; if costs tie too, the first in
model order. Routing the cheaper of two equally useful models is what a deployer wants, and
model order makes the result reproducible.
"""

from __future__ import annotations

import numpy as np

TIE_TOL = 1e-12


def hard_labels(u: np.ndarray, cost: np.ndarray | None = None, tol: float = TIE_TOL) -> np.ndarray:
    """argmax_m U(x, m) per row with the tie rule above. ``u``, ``cost``: (n, m). Returns (n,) ints."""
    u = np.asarray(u, dtype=float)
    best = u.max(axis=1, keepdims=True)
    tied = u >= best - tol
    # each row whose best is a number has a tied model (the best); as many as such rows: no tie to break
    if cost is None or np.count_nonzero(tied) == np.count_nonzero(best == best):
        return np.argmax(tied, axis=1)
    c = np.where(tied, np.asarray(cost, dtype=float), np.inf)
    cmin = c.min(axis=1, keepdims=True)
    return np.argmax(tied & (c <= cmin + tol), axis=1)


def soft_labels(u: np.ndarray, tau: float = 0.1) -> np.ndarray:
    """p(m | x) = softmax(U(x, .) / tau) per row (paper §A.4; tau = 0.1 is our choice, not the paper's)."""
    if tau <= 0:
        raise ValueError("tau must be > 0")
    z = np.asarray(u, dtype=float) / tau
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def pairwise_preferences(u: np.ndarray, tol: float = TIE_TOL,
                         observed: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """All ordered model pairs (a < b) per query: label 1 if U_a > U_b, 0 if U_a < U_b, 0.5 on a tie.

    Returns arrays ``query`` (row index), ``a``, ``b``, ``label``, ``margin`` = U_a - U_b.
    ``observed``: optional (n, m) mask of observed (query, model) pairs; only pairs of two observed
    models are returned (a partial grid compares what was observed, never a prior).
    """
    u = np.asarray(u, dtype=float)
    n, m = u.shape
    a, b = np.triu_indices(m, k=1)
    margin = u[:, a] - u[:, b]
    label = np.where(margin > tol, 1.0, np.where(margin < -tol, 0.0, 0.5))
    out = {"query": np.repeat(np.arange(n), a.size), "a": np.tile(a, n), "b": np.tile(b, n),
           "label": label.reshape(-1), "margin": margin.reshape(-1)}
    if observed is not None:
        obs = np.asarray(observed, bool)
        keep = (obs[:, a] & obs[:, b]).reshape(-1)
        out = {k: v[keep] for k, v in out.items()}
    return out


def regression_targets(sup) -> dict[str, np.ndarray]:
    """The three regression targets the released routers fit: mu_q, mu_c, sigma_q (n, m)."""
    return {"mu_q": sup.mu_q, "mu_c": sup.mu_c, "sigma_q": sup.sigma_q}
