"""Bradley-Terry fits for pairwise data (PandaLM), pure numpy.

A comparison (w, l, c) says item w beat item l with weight c (a tie is two half-weight
comparisons, one each way). The MAP strengths r maximise

    Σ c · log sigmoid(r_w - r_l) - ||r - prior_mean||^2 / (2 prior_var)

(Newton's method; the prior makes the fit identifiable and finite for items that always win).
"""

from __future__ import annotations

import numpy as np

from caproute.bandits.posterior import sigmoid


def fit_bradley_terry(n_items: int, winners: np.ndarray, losers: np.ndarray, weights: np.ndarray | None = None,
                      prior_mean: np.ndarray | float = 0.0, prior_var: float = 1.0,
                      n_iter: int = 50, tol: float = 1e-10) -> np.ndarray:
    """MAP Bradley-Terry strengths (n_items,) with a N(prior_mean, prior_var) prior on each strength."""
    w = np.asarray(winners, dtype=np.int64)
    lo = np.asarray(losers, dtype=np.int64)
    c = np.ones(len(w)) if weights is None else np.asarray(weights, dtype=np.float64)
    m0 = np.broadcast_to(np.asarray(prior_mean, dtype=np.float64), (n_items,)).copy()
    r = m0.copy()
    for _ in range(n_iter):
        p = sigmoid(r[w] - r[lo])                  # P(winner beats loser)
        g = -(r - m0) / prior_var
        np.add.at(g, w, c * (1.0 - p))
        np.add.at(g, lo, -c * (1.0 - p))
        h = c * p * (1.0 - p)
        H = np.eye(n_items) / prior_var
        np.add.at(H, (w, w), h)
        np.add.at(H, (lo, lo), h)
        np.add.at(H, (w, lo), -h)
        np.add.at(H, (lo, w), -h)
        step = np.linalg.solve(H, g)
        r = r + step
        if float(np.abs(step).max()) < tol:
            break
    return r


def comparisons_from_labels(first: np.ndarray, second: np.ndarray, label: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(winners, losers, weights) from labels +1 (first won), -1 (second won), 0 (tie: half each way)."""
    first, second, label = (np.asarray(a) for a in (first, second, label))
    win_first = label > 0
    win_second = label < 0
    tie = label == 0
    winners = np.concatenate([first[win_first], second[win_second], first[tie], second[tie]])
    losers = np.concatenate([second[win_first], first[win_second], second[tie], first[tie]])
    weights = np.concatenate([np.ones(win_first.sum()), np.ones(win_second.sum()),
                              np.full(tie.sum(), 0.5), np.full(tie.sum(), 0.5)])
    return winners.astype(np.int64), losers.astype(np.int64), weights
