"""Arm (model) embeddings that are distinct by construction, and how distinct they are (issue 14.3).

CCFT's model embeddings a_k = normalise(Σ_m w_{k,m} xi_m) (algorithms.md §B.3) live in the span
of the M category embeddings, so the arm matrix has rank <= M, and with the Excel weightings
every model that is top-tau in no category gets the all-zero score vector, hence the same
embedding (RouterBench subset, M = 3, tau = 3: 6 distinct arms of 11). A duel between two tied
arms has z = phi(x, a_k) - phi(x, a_l) = 0 and carries no information; the learner cannot tell
the tied models apart.

PROPOSED fix (not in the paper): add a per-model component built from the same offline data,

    rho_k = Σ_{i in offline} (s_{i,k} - mean_l s_{i,l}) x_i,   rho_k <- rho_k / ||rho_k||
    a_k   = normalise( a_k^CCFT + gamma · rho_k )

with s_{i,k} = perf_{i,k} - lambda cost_{i,k} the per-query offline utility (the Perf-cost logit
of the weightings, per query instead of per category) and x_i the offline query embeddings. rho_k
points to the queries on which model k is better than the average model: a query-level version of
the category weighting. Two models get the same rho only if their offline score vectors are
equal up to a constant shift on every offline query (then the data cannot tell them apart either),
so arms are distinct by construction for any gamma > 0, and the arm matrix has rank up to K.
gamma = 0 gives the paper's embeddings exactly.
"""

from __future__ import annotations

import numpy as np

#: gamma of the per-model component: 0 = off = the paper's CCFT arms (issue 24.1); 0.5 was the
#: PROPOSED value of the option (``--arm-residual 0.5``; docs/bandits.md, "Tied arms")
DEFAULT_RESIDUAL = 0.0
PROPOSED_RESIDUAL = 0.5
DISTINCT_TOL = 1e-6


def residual_directions(E_off: np.ndarray, scores_off: np.ndarray) -> np.ndarray:
    """rho_k (K, d): unit-norm Σ_i (s_{i,k} - mean_l s_{i,l}) x_i over offline queries.

    E_off (n, d) offline query embeddings; scores_off (n, K) offline per-query utilities (NaN =
    unobserved, counted as the query's mean). A model whose centred scores are all zero gets 0.
    """
    S = np.asarray(scores_off, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        row_mean = np.nanmean(np.where(np.isfinite(S), S, np.nan), axis=1, keepdims=True)
    row_mean = np.where(np.isfinite(row_mean), row_mean, 0.0)
    C = np.where(np.isfinite(S), S, row_mean) - row_mean            # (n, K), rows sum to 0
    rho = C.T @ np.asarray(E_off, dtype=np.float64)                  # (K, d)
    norms = np.linalg.norm(rho, axis=1, keepdims=True)
    return rho / np.where(norms > 0, norms, 1.0)


def add_residual(arms: np.ndarray, rho: np.ndarray, gamma: float) -> np.ndarray:
    """normalise(arms + gamma · rho), row-wise; gamma = 0 returns ``arms`` unchanged."""
    if gamma == 0.0:
        return np.asarray(arms, dtype=np.float64).copy()
    a = np.asarray(arms, dtype=np.float64) + float(gamma) * rho
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norms > 0, norms, 1.0)


def n_distinct(arms: np.ndarray, tol: float = DISTINCT_TOL) -> int:
    """Number of distinct arm embeddings (rows equal within ``tol`` in max-norm count once)."""
    arms = np.asarray(arms, dtype=np.float64)
    reps: list[np.ndarray] = []
    for a in arms:
        if not any(float(np.abs(a - r).max()) <= tol for r in reps):
            reps.append(a)
    return len(reps)


def tied_groups(arms: np.ndarray, models, tol: float = DISTINCT_TOL) -> list[list[str]]:
    """Groups of models whose embeddings are equal (only groups of two or more)."""
    arms = np.asarray(arms, dtype=np.float64)
    groups: list[list[int]] = []
    for k, a in enumerate(arms):
        for g in groups:
            if float(np.abs(a - arms[g[0]]).max()) <= tol:
                g.append(k)
                break
        else:
            groups.append([k])
    return [[str(models[k]) for k in g] for g in groups if len(g) > 1]


def arm_rank(arms: np.ndarray, rtol: float = 1e-6) -> int:
    """Numerical rank of the (K, d) arm matrix (singular values above rtol · the largest)."""
    s = np.linalg.svd(np.asarray(arms, dtype=np.float64), compute_uv=False)
    return int((s > rtol * s[0]).sum()) if s.size and s[0] > 0 else 0


def arm_summary(arms: np.ndarray, models) -> dict:
    """{K, distinct, rank, tied}: reported for every embedding set of every run."""
    return {"K": int(len(arms)), "distinct": n_distinct(arms), "rank": arm_rank(arms),
            "tied": tied_groups(arms, models)}
