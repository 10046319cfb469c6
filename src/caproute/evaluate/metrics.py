"""Evaluation metrics of the DARS protocol (spec §A.6) and RouteLLM's two-model metrics (§E.1).

Pure numpy functions on per-view matrices; no I/O. Shapes: ``n`` test queries, ``m`` models.

A *view* (rewrite or decode) summarises the test observations of each (query, model) pair by
their means ``Q`` (quality) and ``C`` (normalised cost), both (n, m). Because the mean of
``u = q - lambda c`` over a pair's observations is ``Q - lambda C``, the paper's view utility

    U_view = (1/|X|) sum_x (1/|O_view(x)|) sum_{o in O_view(x)} u_{x, m_hat(x), o}

is ``mean_x (Q - lambda C)[x, m_hat(x)]`` (:func:`view_utility`).
"""

from __future__ import annotations

import numpy as np

from caproute.supervise.labels import hard_labels

# --------------------------------------------------------------------------------------------
# DARS protocol (§A.6)


def routed_mean(values: np.ndarray, choice: np.ndarray) -> float:
    """``mean_x values[x, choice[x]]``: the mean of a per-(query, model) matrix under a routing.

    ``values`` (n, m); ``choice`` (n,) model indices.
    """
    values = np.asarray(values, dtype=float)
    choice = np.asarray(choice, dtype=np.intp)
    if values.ndim != 2 or choice.shape != (values.shape[0],):
        raise ValueError(f"values must be (n, m) and choice (n,); got {values.shape} and {choice.shape}")
    if values.shape[0] == 0:
        raise ValueError("no queries")
    return float(values[np.arange(values.shape[0]), choice].mean())


def view_utility(q: np.ndarray, c: np.ndarray, choice: np.ndarray, lam: float) -> float:
    """U_rew / U_dec of §A.6: mean over queries of the chosen model's mean of ``q - lam * c``.

    ``q``, ``c``: (n, m) per-view mean quality and mean normalised cost; ``choice`` (n,).
    """
    return routed_mean(np.asarray(q, float) - lam * np.asarray(c, float), choice)


def view_quality(q: np.ndarray, choice: np.ndarray) -> float:
    """Mean quality of the chosen model (the reference code's ``rewrite_score``/``decoding_score``)."""
    return routed_mean(q, choice)


def fixed_model_means(u: np.ndarray) -> np.ndarray:
    """Mean over queries of each model's value: (m,)."""
    return np.asarray(u, dtype=float).mean(axis=0)


def best_fixed(u: np.ndarray) -> tuple[int, float]:
    """Best fixed model of a view: ``argmax_m mean_x u[x, m]`` and that mean (first model on a tie)."""
    means = fixed_model_means(u)
    i = int(np.argmax(means))
    return i, float(means[i])


def oracle_choice(u: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    """Per-query best model of a view (ties: lower cost, then model order)."""
    return hard_labels(u, c)


def oracle_value(u: np.ndarray) -> float:
    """Oracle of a view: ``mean_x max_m u[x, m]``."""
    return float(np.asarray(u, dtype=float).max(axis=1).mean())


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof = 1, as the reference code's pandas ``.std()``; 0 for
    a single value) and count of a series of run results."""
    v = np.asarray(values, dtype=float).reshape(-1)
    if v.size == 0:
        raise ValueError("no values")
    # identical values give exactly 0 (not a rounding residue of the mean)
    std = float(v.std(ddof=1)) if v.size > 1 and np.ptp(v) > 0 else 0.0
    return float(v.mean()), std, int(v.size)


def choice_shares(choice: np.ndarray, n_models: int) -> np.ndarray:
    """Fraction of queries routed to each model: (m,)."""
    counts = np.bincount(np.asarray(choice, dtype=np.intp), minlength=n_models)
    return counts / max(int(counts.sum()), 1)


# --------------------------------------------------------------------------------------------
# Cost-quality frontier (§A.9, Figure 4(b))


def pareto_mask(cost: np.ndarray, quality: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Non-dominated points: no other point has cost <= and quality >= with one strictly better.

    ``cost``, ``quality``: (p,). Duplicated points are all kept.
    """
    cost = np.asarray(cost, dtype=float)
    quality = np.asarray(quality, dtype=float)
    le_cost = cost[None, :] <= cost[:, None] + tol          # [i, j]: j costs no more than i
    ge_q = quality[None, :] >= quality[:, None] - tol        # [i, j]: j is at least as good as i
    strict = (cost[None, :] < cost[:, None] - tol) | (quality[None, :] > quality[:, None] + tol)
    dominated = (le_cost & ge_q & strict).any(axis=1)
    return ~dominated


def operating_point(q: np.ndarray, c: np.ndarray, choice: np.ndarray) -> tuple[float, float]:
    """(mean normalised cost, mean quality) of a routing on one view."""
    return routed_mean(c, choice), routed_mean(q, choice)


# --------------------------------------------------------------------------------------------
# RouteLLM's two-model metrics (§E.1; official ``routellm/evals``)


def strong_call_curve(score: np.ndarray, perf_strong: np.ndarray, perf_weak: np.ndarray,
                      n_thresholds: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of strong-model calls and mean performance at RouteLLM's thresholds.

    ``score`` (n,): the router's preference for the strong model (higher = strong). Thresholds are
    the ``n_thresholds``-quantile edges of ``score`` (``pd.qcut(score, n, retbins=True)``), i.e.
    ``n_thresholds + 1`` points; at every edge but the last a query goes to the strong model iff
    ``score >= t``, at the last iff ``score > t`` (so the curve runs from all-strong to all-weak).
    ``perf_strong``/``perf_weak`` (n,): each model's per-query performance.

    Returns (calls, perf), sorted by calls ascending; ``calls`` are fractions in [0, 1].
    """
    score = np.asarray(score, dtype=float)
    ps, pw = np.asarray(perf_strong, dtype=float), np.asarray(perf_weak, dtype=float)
    if not (score.shape == ps.shape == pw.shape) or score.ndim != 1 or score.size == 0:
        raise ValueError("score, perf_strong and perf_weak must be equal-length non-empty vectors")
    if n_thresholds < 1:
        raise ValueError("n_thresholds must be >= 1")
    thresholds = np.quantile(score, np.linspace(0.0, 1.0, n_thresholds + 1))
    strong = score[None, :] >= thresholds[:, None]
    strong[-1] = score > thresholds[-1]
    calls = strong.mean(axis=1)
    perf = np.where(strong, ps[None, :], pw[None, :]).mean(axis=1)
    order = np.argsort(calls, kind="stable")
    return calls[order], perf[order]


def auc(calls: np.ndarray, perf: np.ndarray) -> float:
    """Area under performance vs strong-call fraction (trapezoid rule; RouteLLM's ``AUC``)."""
    calls, perf = np.asarray(calls, dtype=float), np.asarray(perf, dtype=float)
    order = np.argsort(calls, kind="stable")
    calls, perf = calls[order], perf[order]
    return float(np.sum(np.diff(calls) * (perf[1:] + perf[:-1]) / 2.0))


def pgr(perf: float, weak: float, strong: float) -> float:
    """Performance gap recovered: ``(perf - weak) / (strong - weak)``."""
    if strong == weak:
        return float("nan")
    return (perf - weak) / (strong - weak)


def apgr(calls: np.ndarray, perf: np.ndarray, weak: float, strong: float) -> float:
    """Average performance gap recovered, RouteLLM's definition:
    ``(AUC_router - AUC_weak) / (AUC_strong - AUC_weak)``, the constant curves integrated over the
    same call range as the router's. NaN when the two models perform equally."""
    calls = np.asarray(calls, dtype=float)
    span = float(calls.max() - calls.min())
    if strong == weak or span == 0:
        return float("nan")
    return (auc(calls, perf) - weak * span) / ((strong - weak) * span)


def cpt(calls: np.ndarray, perf: np.ndarray, weak: float, strong: float, x: float) -> float:
    """Call-performance threshold CPT(x): the strong-call percentage (0-100) at which performance
    first reaches ``weak + x (strong - weak)``, interpolating linearly along the curve.

    RouteLLM computes ``np.interp(target, perf, calls)``, which is only valid when performance
    rises monotonically with calls; for such curves this gives the same number. On a
    non-monotone curve (routers are noisy) we return the first crossing instead of what
    ``np.interp`` would give for an unsorted ``xp``. NaN when the target is never reached.
    """
    calls, perf = np.asarray(calls, dtype=float), np.asarray(perf, dtype=float)
    order = np.argsort(calls, kind="stable")
    calls, perf = calls[order], perf[order]
    if strong == weak:
        return float("nan")
    target = weak + x * (strong - weak)
    reached = perf >= target - 1e-12
    if not reached.any():
        return float("nan")
    i = int(np.argmax(reached))
    if i == 0:
        return float(100.0 * calls[0])
    c0, c1, p0, p1 = calls[i - 1], calls[i], perf[i - 1], perf[i]
    return float(100.0 * (c0 + (target - p0) * (c1 - c0) / (p1 - p0)))


def two_model_metrics(score: np.ndarray, perf_strong: np.ndarray, perf_weak: np.ndarray,
                      n_thresholds: int = 10) -> dict[str, float]:
    """APGR, AUC and CPT(20/50/80) of a two-model router with RouteLLM's definitions.

    ``weak``/``strong`` are the mean performance of always routing to one model.
    """
    calls, perf = strong_call_curve(score, perf_strong, perf_weak, n_thresholds)
    weak, strong = float(np.mean(perf_weak)), float(np.mean(perf_strong))
    return {"apgr": apgr(calls, perf, weak, strong), "auc": auc(calls, perf),
            "cpt20": cpt(calls, perf, weak, strong, 0.2), "cpt50": cpt(calls, perf, weak, strong, 0.5),
            "cpt80": cpt(calls, perf, weak, strong, 0.8), "weak": weak, "strong": strong}
