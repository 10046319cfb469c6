"""The Meta-Router's evaluation metric (§C.4): efficiency gain over random routing vs usage.

Route the test queries with the highest predicted gain psi-hat to the primary model M_p. At
primary-model usage ratio p (PMUR, the fraction of test queries sent to M_p) the *total
efficiency* is the sum of the GOLD gains of the queries sent to M_p. The *efficiency gain* is
that total minus random routing's at the same usage; curves live on the grid p = 0.2 ... 0.8
(61 points) with linear interpolation between k/n usages, as in the official code.

Our choices where the code differs (documented in docs/meta-router.md):
- random routing's total at usage p is its exact expectation p * sum(gold), not one random
  permutation per run (same mean, no extra noise);
- tied predictions are broken at random *in expectation*: inside a block of equal psi-hat the
  curve is linear between the block's ends (the mean over all orders of the tied queries);
- the curve covers every usage in the grid (the code stops at the last positive psi-hat, so
  runs drop out of its per-usage median at high usage); runs are averaged with the mean.
"""

from __future__ import annotations

import numpy as np

USAGE_GRID: np.ndarray = np.linspace(0.2, 0.8, 61)
"""PMUR grid of the paper's figure: 0.20, 0.21, ..., 0.80."""


def _check(pred, gold) -> tuple[np.ndarray, np.ndarray]:
    pred, gold = np.asarray(pred, dtype=float).ravel(), np.asarray(gold, dtype=float).ravel()
    if pred.size != gold.size or pred.size == 0:
        raise ValueError(f"pred ({pred.size}) and gold ({gold.size}) must be non-empty and of equal length")
    if not (np.isfinite(pred).all() and np.isfinite(gold).all()):
        raise ValueError("pred and gold must be finite")
    return pred, gold


def efficiency_curve(pred, gold, grid=USAGE_GRID) -> np.ndarray:
    """Total efficiency (sum of gold gains routed to M_p) at each usage ratio in ``grid``.

    pred, gold: (n,) predicted and gold gains of the n test queries. Returns (len(grid),).
    """
    pred, gold = _check(pred, gold)
    n = pred.size
    order = np.argsort(-pred, kind="stable")
    p_sorted, cum = pred[order], np.r_[0.0, np.cumsum(gold[order])]
    # ends of blocks of tied predictions: the curve is linear inside a block
    ends = np.r_[0, np.flatnonzero(np.diff(p_sorted) != 0) + 1, n]
    return np.interp(np.asarray(grid, dtype=float), ends / n, cum[ends])


def random_efficiency(gold, grid=USAGE_GRID) -> np.ndarray:
    """Expected total efficiency of random routing at each usage: p * sum(gold)."""
    gold = np.asarray(gold, dtype=float).ravel()
    return np.asarray(grid, dtype=float) * gold.sum()


def efficiency_gain(pred, gold, grid=USAGE_GRID) -> np.ndarray:
    """Efficiency gain over random routing at each usage in ``grid`` (the paper's y-axis before
    its dataset constant)."""
    return efficiency_curve(pred, gold, grid) - random_efficiency(gold, grid)


def resampled_se(std, runs: int, test_fraction: float | None = None):
    """Standard error of a mean over ``runs`` train/test resplits of the same data.

    ``test_fraction = None``: std / sqrt(runs) (independent runs). Otherwise the Nadeau-Bengio
    (2003) correction for overlapping resplits, std * sqrt(1/runs + n_test/n_train) with
    n_test/n_train = test_fraction / (1 - test_fraction): more runs do not shrink it below
    std * sqrt(n_test/n_train). ``std``: a number or an array (ddof = 1 across runs).
    """
    std = np.asarray(std, dtype=float)
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if test_fraction is None:
        return std / np.sqrt(runs)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    return std * np.sqrt(1.0 / runs + test_fraction / (1.0 - test_fraction))


def summarize_curves(curves, grid=USAGE_GRID, test_fraction: float | None = None) -> dict:
    """Mean over runs of per-run gain curves (runs, len(grid)) and the peak of the mean curve.

    Returns mean, std (ddof = 1 across runs; 0 for one run) and se curves (:func:`resampled_se`:
    corrected for overlapping resplits when ``test_fraction`` is given), ``peak`` (max of the
    mean curve), ``peak_usage`` (its usage), ``peak_std`` (std across runs at that usage) and
    ``peak_se``.
    """
    c = np.atleast_2d(np.asarray(curves, dtype=float))
    grid = np.asarray(grid, dtype=float)
    if c.shape[1] != grid.size:
        raise ValueError(f"curves have {c.shape[1]} points, grid has {grid.size}")
    mean = c.mean(axis=0)
    std = c.std(axis=0, ddof=1) if c.shape[0] > 1 else np.zeros_like(mean)
    se = resampled_se(std, c.shape[0], test_fraction)
    k = int(np.argmax(mean))
    return {"mean": mean, "std": std, "se": se, "peak": float(mean[k]), "peak_usage": float(grid[k]),
            "peak_std": float(std[k]), "peak_se": float(se[k]), "runs": int(c.shape[0])}
