"""Full-information pairwise fits from scored queries, and the offline warm-start prior of FGTS.CDB.

Given queries with known per-model utilities u_ik (offline observations: a DARS store, a scored
benchmark), every pair of arms k != l of every query i is a *soft* Bradley-Terry comparison with
label p_ikl = sigmoid((u_ik - u_il) / s) (s = the Bradley-Terry scale of the feedback). Over the
dueling feature map phi(x, a) = s_phi x ⊙ a (:mod:`caproute.bandits.features`) the fit minimises

    J(theta) = w · Σ_i Σ_{k<l} CE(p_ikl, sigmoid(<theta, z_ikl>)) + (theta - m)^T P (theta - m) / 2
    z_ikl    = s_phi x_i ⊙ (a_k - a_l),   CE(p, q) = -p log q - (1 - p) log(1 - q)

(weight w per comparison; prior N(m, P^-1), by default N(0, sigma0^2 I)). Two uses:

- the full-information reference of the dueling experiments (w = 1, the same model class and
  likelihood as the learners, fitted on every comparison: a reference, not a bound);
- :func:`offline_prior` (PROPOSED, not in the paper): the Laplace approximation of FGTS.CDB's own
  tempered posterior after the offline comparisons, N(theta_off, H^-1) with H the Hessian of J at
  its minimum, used as the learner's prior instead of N(0, sigma0^2 I). The
  offline split already feeds CCFT, the Perf/Cost tables and the DARS kNN baseline; the prior lets
  the online learner start from what those scores say instead of from zero. ``weight`` (PROPOSED
  1) is how many duels one offline QUERY counts as: its K(K-1)/2 soft comparisons share it
  (w = eta · weight / (K(K-1)/2)), so n offline queries make the prior as confident as n online
  duels, never more; not tuned.
"""

from __future__ import annotations

import numpy as np

from caproute.bandits.posterior import prior_energy, prior_precision, sigmoid
from caproute.errors import ConfigError


def soft_labels(utilities: np.ndarray, bt_scale: float) -> np.ndarray:
    """P[i, k, l] = P(arm k beats arm l on query i) = sigmoid((u_ik - u_il) / bt_scale), (n, K, K)."""
    U = np.asarray(utilities, dtype=np.float64)
    return sigmoid((U[:, :, None] - U[:, None, :]) / bt_scale)


def soft_pairwise_objective(theta: np.ndarray, X: np.ndarray, arms: np.ndarray, scale: float, P: np.ndarray, *,
                            weight: float = 1.0, sigma0: float = 1.0, prior_mean: np.ndarray | None = None,
                            prior_prec: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """J(theta) and its gradient (module docstring). X (n, d), arms (K, d), P (n, K, K)."""
    S = scale * ((X * theta) @ arms.T)                                # (n, K) scores
    M = S[:, :, None] - S[:, None, :]                                 # margins of ordered pairs (k, l)
    off = ~np.eye(arms.shape[0], dtype=bool)[None, :, :]
    # cross-entropy over ordered pairs / 2 = over unordered pairs
    loss = 0.5 * float(np.where(off, P * np.logaddexp(0.0, -M) + (1 - P) * np.logaddexp(0.0, M), 0.0).sum())
    G = np.where(off, sigmoid(M) - P, 0.0).sum(axis=2)               # d loss / d S, (n, K)
    grad = scale * ((G.T @ X) * arms).sum(axis=0)
    e, g = prior_energy(theta, sigma0, prior_mean, prior_prec)
    return weight * loss + e, weight * grad + g


def soft_pairwise_fit(X: np.ndarray, arms: np.ndarray, scale: float, P: np.ndarray, *, weight: float = 1.0,
                      sigma0: float = 1.0, max_iter: int = 2000) -> np.ndarray:
    """argmin J (L-BFGS from 0, run to a tight tolerance: J is strictly convex, and a fit stopped
    early is a shrunk, differently regularised one), (d,)."""
    from scipy.optimize import minimize

    X = np.asarray(X, dtype=np.float64)
    A = np.asarray(arms, dtype=np.float64)
    res = minimize(lambda th: soft_pairwise_objective(th, X, A, scale, P, weight=weight, sigma0=sigma0),
                   np.zeros(X.shape[1]), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "ftol": 1e-13, "gtol": 1e-8})
    return res.x


def soft_pairwise_hessian(theta: np.ndarray, X: np.ndarray, arms: np.ndarray, scale: float, *,
                          weight: float = 1.0, sigma0: float = 1.0, chunk: int = 256) -> np.ndarray:
    """Hessian of J at theta: I / sigma0^2 + w Σ_i Σ_{k<l} q(1 - q) z_ikl z_ikl^T, q = sigmoid(<theta, z_ikl>).

    Accumulated over chunks of ``chunk`` queries (memory O(chunk K^2 d))."""
    X = np.asarray(X, dtype=np.float64)
    A = np.asarray(arms, dtype=np.float64)
    d = X.shape[1]
    iu, ju = np.triu_indices(A.shape[0], 1)
    D = A[iu] - A[ju]                                                 # (pairs, d)
    H = prior_precision(d, sigma0).copy()
    for start in range(0, X.shape[0], chunk):
        Z = (scale * X[start:start + chunk, None, :] * D[None, :, :]).reshape(-1, d)
        q = sigmoid(Z @ theta)
        H += weight * (Z * (q * (1.0 - q))[:, None]).T @ Z
    return H


def offline_prior(X: np.ndarray, arms: np.ndarray, scale: float, utilities: np.ndarray, bt_scale: float, *,
                  eta: float, weight: float = 1.0, sigma0: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of FGTS.CDB's warm-start prior from offline scored queries (module docstring).

    X (n, d) offline query embeddings, arms (K, d), ``scale`` the feature scale s_phi, utilities
    (n, K) the offline r*(x, a), ``bt_scale`` the Bradley-Terry scale s of the feedback, ``eta``
    the learner's likelihood temperature. Every offline query counts as ``weight`` duels, shared by
    its K(K-1)/2 pairs.
    """
    U = np.asarray(utilities, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    if U.ndim != 2 or U.shape[0] != X.shape[0] or U.shape[1] != np.asarray(arms).shape[0]:
        raise ConfigError(f"offline prior: utilities must be (queries, arms) = ({X.shape[0]}, "
                          f"{np.asarray(arms).shape[0]}), got {U.shape}")
    if not np.all(np.isfinite(U)):
        raise ConfigError("offline prior: the offline utilities contain NaN or infinite values "
                          "(every model must be scored on every offline query)")
    if X.shape[0] == 0:
        raise ConfigError("offline prior: no offline queries")
    if not (eta > 0 and weight > 0 and sigma0 > 0):
        raise ConfigError(f"offline prior: eta, weight and sigma0 must be > 0 (got {eta}, {weight}, {sigma0})")
    k = np.asarray(arms).shape[0]
    if k < 2:
        raise ConfigError("offline prior: needs at least 2 arms")
    w = float(eta) * float(weight) / (k * (k - 1) / 2)
    mean = soft_pairwise_fit(X, arms, scale, soft_labels(U, bt_scale), weight=w, sigma0=sigma0)
    H = soft_pairwise_hessian(mean, X, arms, scale, weight=w, sigma0=sigma0)
    cov = np.linalg.inv(H)
    return mean, 0.5 * (cov + cov.T)
