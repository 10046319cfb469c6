"""Feature map of the dueling bandit (algorithms.md §B.2).

phi(x, a_k) = s_phi * (x ⊙ a_k): the element-wise product of the query embedding x and the model
embedding a_k (both d-dim), so r(x, a_k) = <theta, phi(x, a_k)> is a diagonal bilinear form.
PROPOSED (the paper's map was not found). A concatenation [x; a_k] would make the preference
between two models independent of the query, so an interaction is required.

``s_phi`` (``feature_scale``) is PROPOSED as well: with unit-norm x and a the products are of order
1/d, and a N(0, I) prior on theta would then forbid the logit differences (up to 1/s = 10) that the
feedback carries. :func:`auto_feature_scale` picks s_phi so that the median arm-difference feature
||x ⊙ (a_k - a_l)|| on offline queries is 1.
"""

from __future__ import annotations

import numpy as np


def phi(x: np.ndarray, arms: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Features of every arm for one query: x (d,), arms (K, d) -> (K, d)."""
    return scale * (arms * x[None, :])


def phi_batch(X: np.ndarray, arms: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Features of every arm for several queries: X (n, d), arms (K, d) -> (n, K, d)."""
    return scale * (X[:, None, :] * arms[None, :, :])


def arm_scores(theta: np.ndarray, X: np.ndarray, arms: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """<theta, phi(x, a_k)> for X (n, d) or (d,), theta (d,) -> (n, K) or (K,).

    Computed as ((theta ⊙ x) @ arms.T) * scale, without materialising phi (O(n K d)).
    """
    return ((X * theta) @ arms.T) * scale


def duel_feature(x: np.ndarray, arms: np.ndarray, i: int, j: int, scale: float = 1.0) -> np.ndarray:
    """z = phi(x, a_i) - phi(x, a_j), (d,): the direction a preference y on (i, j) informs."""
    return scale * x * (arms[i] - arms[j])


def auto_feature_scale(X: np.ndarray, arms: np.ndarray, max_queries: int = 512) -> float:
    """PROPOSED s_phi: 1 / median over queries and arm pairs k < l of ||x ⊙ (a_k - a_l)||_2.

    Returns 1.0 when every arm difference is zero (a single arm, or identical arms).
    """
    X = np.asarray(X, dtype=np.float64)[:max_queries]
    arms = np.asarray(arms, dtype=np.float64)
    k = arms.shape[0]
    iu, ju = np.triu_indices(k, 1)
    if iu.size == 0 or X.size == 0:
        return 1.0
    diff = arms[iu] - arms[ju]                                   # (P, d)
    norms = np.sqrt((X[:, None, :] ** 2 * diff[None, :, :] ** 2).sum(-1))   # (n, P)
    med = float(np.median(norms))
    return 1.0 / med if med > 0 else 1.0
