"""Regret of a dueling policy (algorithms.md §B.1).

Per round t with true utilities r*(x_t, .) and the played pair (a1, a2):

- average regret (the paper's): r*(x_t, a*_t) - (r*(x_t, a1) + r*(x_t, a2)) / 2
- weak regret:                  r*(x_t, a*_t) - max(r*(x_t, a1), r*(x_t, a2))

where a*_t = argmax_a r*(x_t, a). Cumulative regret is the running sum over rounds.
"""

from __future__ import annotations

import numpy as np


def average_regret(utilities: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per-round average regret. utilities (T, K): r* of each round's query; first/second (T,) arm indices."""
    u = np.asarray(utilities, dtype=np.float64)
    rows = np.arange(u.shape[0])
    return u.max(axis=1) - 0.5 * (u[rows, first] + u[rows, second])


def weak_regret(utilities: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per-round weak regret: the better of the two arms against the best arm, (T,)."""
    u = np.asarray(utilities, dtype=np.float64)
    rows = np.arange(u.shape[0])
    return u.max(axis=1) - np.maximum(u[rows, first], u[rows, second])


def cumulative(per_round: np.ndarray) -> np.ndarray:
    """Running sum over the last axis."""
    return np.cumsum(np.asarray(per_round, dtype=np.float64), axis=-1)
