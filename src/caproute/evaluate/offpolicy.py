"""Off-policy evaluation of a router from a request log (issue 22.3): pure numpy estimators.

Notation, for n logged requests and m models (arrays indexed by request i and model a):

- ``chosen`` a_i (n,): the model the logging policy pi_0 served; ``propensity`` p_i = pi_0(a_i | x_i);
  ``reward`` r_i (n,): the outcome observed for a_i (e.g. u = q - lambda * c of that one answer).
- ``pi`` (n, m): the candidate (target) policy pi(a | x_i); one-hot for a deterministic router.
- ``w_i = pi(a_i | x_i) / p_i``: the importance weight of request i.
- ``qhat`` (n, m): an outcome model's prediction of E[r | x_i, a], cross-fitted (:func:`crossfit_outcome`):
  the prediction for request i comes from a model that never saw request i.

Estimators of V(pi) = E_x sum_a pi(a | x) E[r | x, a] (Dudik, Langford & Li 2011; Swaminathan &
Joachims 2015):

- IPS    V = (1/n) sum_i w_i r_i                                   (unbiased when p_i > 0 wherever pi > 0)
- SNIPS  V = sum_i w_i r_i / sum_i w_i                              (self-normalised; consistent, small bias)
- DR     V = (1/n) sum_i [ sum_a pi(a|x_i) qhat(x_i, a) + w_i (r_i - qhat(x_i, a_i)) ]
- ESS    (sum_i w_i)^2 / sum_i w_i^2                                (Kish's effective sample size)

Confidence intervals of IPS and SNIPS are percentile bootstrap intervals over logged requests
(:func:`bootstrap_counts`: one seeded multinomial resampling shared by every estimator and
candidate, so they are paired). DR's is the influence-function (sandwich) normal interval
mean ± z_(1-alpha/2) sd(terms) / sqrt(n) (:func:`normal_interval`): the DR terms are the estimate's
influence function, and this is the standard interval of a cross-fitted estimator (Chernozhukov et
al. 2018, "Double/debiased machine learning", Theorem 5.1 / Corollary 5.1).
A candidate that puts weight on a model the logging policy could not have chosen (propensity 0:
the log never tried it) cannot be evaluated without assumptions; :func:`check_support` refuses it
with :class:`UnsupportedCandidateError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from caproute.errors import CaprouteError

ESTIMATORS = ("ips", "snips", "dr")
DEFAULT_BOOTSTRAP = 1000
DEFAULT_FOLDS = 5
ALPHA = 0.05


class UnsupportedCandidateError(CaprouteError, ValueError):
    """A candidate puts probability on models the logging policy never could have served (no
    exploration, or a model the log never tried): its value cannot be estimated from the log."""

    def __init__(self, candidate: str, models: Sequence[str], n_rows: int, n: int):
        self.candidate, self.models, self.n_rows, self.n = candidate, list(models), int(n_rows), int(n)
        super().__init__(
            f"candidate '{candidate}' cannot be evaluated from this log: on {n_rows} of {n} requests it "
            f"chooses a model the logging policy could not have served (propensity 0): "
            f"{', '.join(self.models)}. Log with exploration (caproute serve --explore EPS) or drop it")


@dataclass(frozen=True)
class Estimate:
    """One estimate of a candidate's value with its percentile bootstrap interval."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    ess: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# checks and weights

def _as_arrays(pi, chosen, propensity, reward=None):
    pi = np.asarray(pi, dtype=np.float64)
    chosen = np.asarray(chosen, dtype=np.intp)
    propensity = np.asarray(propensity, dtype=np.float64)
    if pi.ndim != 2 or chosen.shape != (pi.shape[0],) or propensity.shape != chosen.shape:
        raise ValueError(f"need pi (n, m), chosen (n,), propensity (n,); got {pi.shape}, "
                         f"{chosen.shape}, {propensity.shape}")
    if chosen.size and (chosen.min() < 0 or chosen.max() >= pi.shape[1]):
        raise ValueError("chosen holds a model index outside pi's columns")
    if not (np.all(propensity > 0) and np.all(propensity <= 1)):
        raise ValueError("propensities must lie in (0, 1]")
    if reward is None:
        return pi, chosen, propensity
    reward = np.asarray(reward, dtype=np.float64)
    if reward.shape != chosen.shape or not np.isfinite(reward).all():
        raise ValueError("reward must be finite with shape (n,)")
    return pi, chosen, propensity, reward


def importance_weights(pi, chosen, propensity) -> np.ndarray:
    """w_i = pi(a_i | x_i) / p_i, shape (n,)."""
    pi, chosen, propensity = _as_arrays(pi, chosen, propensity)
    return pi[np.arange(chosen.size), chosen] / propensity


def effective_sample_size(w) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 (0 when every weight is 0). Equals n for
    equal weights; small when a few requests carry the estimate."""
    w = np.asarray(w, dtype=np.float64)
    s2 = float(np.sum(w * w))
    return 0.0 if s2 == 0 else float(np.sum(w)) ** 2 / s2


def unsupported_rows(pi, support) -> np.ndarray:
    """Boolean (n,): requests on which ``pi`` (n, m) puts weight on a model outside ``support``
    (n, m, True where the logging policy's probability is > 0)."""
    pi = np.asarray(pi, dtype=np.float64)
    support = np.asarray(support, dtype=bool)
    if pi.shape != support.shape:
        raise ValueError(f"pi {pi.shape} and support {support.shape} differ in shape")
    return ((pi > 0) & ~support).any(axis=1)


def check_support(pi, support, models: Sequence[str], candidate: str) -> None:
    """Raise :class:`UnsupportedCandidateError` naming the models ``pi`` uses without support."""
    bad = unsupported_rows(pi, support)
    if bad.any():
        pi = np.asarray(pi)[bad]
        used = ((pi > 0) & ~np.asarray(support, dtype=bool)[bad]).any(axis=0)
        raise UnsupportedCandidateError(candidate, [models[j] for j in np.flatnonzero(used)],
                                        int(bad.sum()), len(np.asarray(support)))


# --------------------------------------------------------------------------------------------
# point estimates

def ips_terms(w, reward) -> np.ndarray:
    """Per-request IPS terms w_i r_i (their mean is the IPS estimate)."""
    return np.asarray(w, dtype=np.float64) * np.asarray(reward, dtype=np.float64)


def ips(pi, chosen, propensity, reward) -> float:
    """Inverse propensity scoring: (1/n) sum_i w_i r_i."""
    pi, chosen, propensity, reward = _as_arrays(pi, chosen, propensity, reward)
    return float(np.mean(ips_terms(importance_weights(pi, chosen, propensity), reward)))


def snips(pi, chosen, propensity, reward) -> float:
    """Self-normalised IPS: sum_i w_i r_i / sum_i w_i (NaN when every weight is 0: the candidate
    never agrees with the log)."""
    pi, chosen, propensity, reward = _as_arrays(pi, chosen, propensity, reward)
    w = importance_weights(pi, chosen, propensity)
    return float(np.sum(w * reward) / np.sum(w)) if np.sum(w) > 0 else float("nan")


def dr_terms(pi, chosen, propensity, reward, qhat) -> np.ndarray:
    """Per-request doubly robust terms sum_a pi(a|x_i) qhat(x_i,a) + w_i (r_i - qhat(x_i,a_i))."""
    pi, chosen, propensity, reward = _as_arrays(pi, chosen, propensity, reward)
    qhat = np.asarray(qhat, dtype=np.float64)
    if qhat.shape != pi.shape or not np.isfinite(qhat).all():
        raise ValueError(f"qhat must be finite with pi's shape {pi.shape}, got {qhat.shape}")
    w = importance_weights(pi, chosen, propensity)
    rows = np.arange(chosen.size)
    return np.sum(pi * qhat, axis=1) + w * (reward - qhat[rows, chosen])


def doubly_robust(pi, chosen, propensity, reward, qhat) -> float:
    """Doubly robust estimate: the mean of :func:`dr_terms`. Unbiased when the propensities are
    right, whatever ``qhat`` is, provided ``qhat`` for request i does not depend on r_i
    (cross-fitting); a good ``qhat`` lowers its variance."""
    return float(np.mean(dr_terms(pi, chosen, propensity, reward, qhat)))


# --------------------------------------------------------------------------------------------
# bootstrap

def bootstrap_counts(n: int, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """(n_boot, n) multinomial counts: how often each logged request appears in each bootstrap
    resample (resampling requests with replacement). Seeded; share it between estimators and
    candidates so that their intervals come from the same resamples."""
    if n < 1 or n_boot < 1:
        raise ValueError("need n >= 1 and n_boot >= 1")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def percentile_interval(samples, alpha: float = ALPHA) -> tuple[float, float]:
    """The (alpha/2, 1 - alpha/2) percentiles of bootstrap ``samples`` (NaNs ignored)."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(s, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def bootstrap_means(terms, counts) -> np.ndarray:
    """Bootstrap replicates of the mean of ``terms`` (n,) for resample ``counts`` (B, n)."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts @ np.asarray(terms, dtype=np.float64) / counts.sum(axis=1)


def bootstrap_ratios(num, den, counts) -> np.ndarray:
    """Bootstrap replicates of sum(num) / sum(den) (NaN where a resample's denominator is 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    d = counts @ np.asarray(den, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d > 0, (counts @ np.asarray(num, dtype=np.float64)) / d, np.nan)


def normal_interval(terms, alpha: float = ALPHA) -> tuple[float, float]:
    """The influence-function (sandwich) interval of the mean of ``terms`` (n,): mean +/- z sd / sqrt(n),
    z the (1 - alpha/2) normal quantile and sd with ddof 1 (NaNs when n < 2)."""
    from statistics import NormalDist

    t = np.asarray(terms, dtype=np.float64)
    if t.size < 2:
        return float("nan"), float("nan")
    half = NormalDist().inv_cdf(1 - alpha / 2) * float(np.std(t, ddof=1)) / np.sqrt(t.size)
    mean = float(t.mean())
    return mean - half, mean + half


def dr_estimate(pi, chosen, propensity, reward, qhat, *, alpha: float = ALPHA, ess: float | None = None,
                label: str = "dr") -> Estimate:
    """The DR estimate with its :func:`normal_interval` (``ess``: that of the weights, computed when None)."""
    t = dr_terms(pi, chosen, propensity, reward, qhat)
    if ess is None:
        ess = effective_sample_size(importance_weights(pi, chosen, propensity))
    return Estimate(label, float(t.mean()), *normal_interval(t, alpha), float(ess), int(t.size))


def evaluate_policy(pi, chosen, propensity, reward, qhat=None, *, counts=None, alpha: float = ALPHA,
                    n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                    dr_label: str = "dr") -> list[Estimate]:
    """IPS, SNIPS (percentile bootstrap intervals) and, when ``qhat`` is given, DR (influence-function
    interval, :func:`dr_estimate`) estimates of ``pi`` at level 1 - ``alpha``. ``counts``: precomputed :func:`bootstrap_counts` (else drawn
    with ``n_boot`` and ``seed``). ESS is that of the importance weights (the same for all three)."""
    pi, chosen, propensity, reward = _as_arrays(pi, chosen, propensity, reward)
    n = chosen.size
    if counts is None:
        counts = bootstrap_counts(n, n_boot, seed)
    w = importance_weights(pi, chosen, propensity)
    ess = effective_sample_size(w)
    wr = ips_terms(w, reward)
    out = [Estimate("ips", float(wr.mean()), *percentile_interval(bootstrap_means(wr, counts), alpha), ess, n)]
    sn = float(wr.sum() / w.sum()) if w.sum() > 0 else float("nan")
    out.append(Estimate("snips", sn, *percentile_interval(bootstrap_ratios(wr, w, counts), alpha), ess, n))
    if qhat is not None:
        out.append(dr_estimate(pi, chosen, propensity, reward, qhat, alpha=alpha, ess=ess, label=dr_label))
    return out


def observed_mean(reward, *, counts=None, alpha: float = ALPHA, n_boot: int = DEFAULT_BOOTSTRAP,
                  seed: int = 0) -> Estimate:
    """The logging policy's on-policy value: the mean logged reward with its bootstrap interval."""
    r = np.asarray(reward, dtype=np.float64)
    if counts is None:
        counts = bootstrap_counts(r.size, n_boot, seed)
    return Estimate("observed", float(r.mean()), *percentile_interval(bootstrap_means(r, counts), alpha),
                    float(r.size), int(r.size))


# --------------------------------------------------------------------------------------------
# cross-fitting

def fold_ids(n: int, folds: int = DEFAULT_FOLDS, seed: int = 0, groups=None) -> np.ndarray:
    """A fold index in 0..folds-1 per row, seeded and balanced. With ``groups`` (n,), rows of one
    group share a fold (e.g. requests for the same query)."""
    if folds < 2:
        raise ValueError("cross-fitting needs at least 2 folds")
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.permutation(np.arange(n) % folds)
    uniq, inv = np.unique(np.asarray(groups), return_inverse=True)
    return rng.permutation(np.arange(uniq.size) % folds)[inv]


def crossfit_outcome(make_model: Callable[[], object], X, chosen, reward, n_models: int, *,
                     folds: int = DEFAULT_FOLDS, seed: int = 0, groups=None) -> np.ndarray:
    """Cross-fitted outcome predictions qhat (n, m): for each fold, ``make_model()`` is fitted on
    the other folds' logged (x, chosen model, reward) rows (``fit(X, chosen, reward, n_models)``)
    and predicts every model for the fold's rows (``predict(X) -> (n_fold, m)``)."""
    chosen = np.asarray(chosen, dtype=np.intp)
    reward = np.asarray(reward, dtype=np.float64)
    n = chosen.size
    fid = fold_ids(n, folds, seed, groups)
    qhat = np.empty((n, n_models), dtype=np.float64)
    for f in range(folds):
        test = fid == f
        if not test.any():
            continue
        train = ~test
        model = make_model().fit(_rows(X, train), chosen[train], reward[train], n_models)
        qhat[test] = model.predict(_rows(X, test))
    return qhat


def _rows(X, mask):
    return X[np.flatnonzero(mask)] if hasattr(X, "tocsr") else np.asarray(X)[mask]


def one_hot(choice, n_models: int) -> np.ndarray:
    """(n, m) deterministic policy matrix of a router's chosen model indices (n,)."""
    choice = np.asarray(choice, dtype=np.intp)
    out = np.zeros((choice.size, n_models), dtype=np.float64)
    out[np.arange(choice.size), choice] = 1.0
    return out


def epsilon_greedy(choice, n_models: int, eps: float) -> np.ndarray:
    """(n, m) epsilon-greedy policy around deterministic choices: (1 - eps) on the router's choice
    plus eps / m on every model (so the choice gets 1 - eps + eps / m)."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError("eps must lie in [0, 1]")
    return (1.0 - eps) * one_hot(choice, n_models) + eps / n_models
