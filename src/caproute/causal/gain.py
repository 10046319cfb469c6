"""Gain models psi(q) = E[quality(M_p) - quality(M_a) | q]: the Meta-Router and its baselines.

The Meta-Router (§C.3):

0. align: r <- c * r (:mod:`caproute.causal.align`);
1. pool gold (T = 1) and preference (T = 0) rows;
2. estimate the bias Delta(s) with an R- or DR-learner (:mod:`caproute.causal.learners`);
3. debias: r'_j = y_j + Delta(q'_j);
4. final regression of {r_i} and {r'_j} on the query features, gold rows weighted by ``gamma``
   (gamma = 1 reproduces the paper; PROPOSED option for the gold/preference imbalance).

Baselines (:data:`METHODS`): ``gold-only`` (gold rows), ``pref-only`` (preference rows),
``pooled`` (aligned gold + raw preference, RouteLLM-style), ``mean-shift`` (preference labels
shifted by mean(c r) - mean(y), then pooled; paper ablation ii) and ``all-gold`` (every training
row with its gold label: the upper bound). All share one final model class (default: the code's
RF(100, 20, sqrt)), so only the training labels differ.

Predictions are on the gold scale (the aligned scale divided by c), so psi-hat - w * cost has the
units of the gold gain; the ranking of queries, which the efficiency metric uses, is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone

from caproute.causal.align import scale_factor
from caproute.causal.learners import (
    DEFAULT_EFFECT_CLIP,
    DEFAULT_PROPENSITY_CLIP,
    EFFECT_CHOICES,
    EFFECT_MODELS,
    LEARNERS,
    default_final_model,
)
from caproute.errors import DataError

METHODS: tuple[str, ...] = ("meta-r", "meta-dr", "pooled", "gold-only", "pref-only", "mean-shift", "all-gold")
#: meta-r / meta-dr with a named effect model, e.g. ``meta-r:ridge`` or ``meta-r:auto`` (``meta-r``
#: alone uses the configured effect model, by default ``forest``: the paper's effect forest)
EFFECT_VARIANTS: tuple[str, ...] = tuple(f"{m}:{e}" for m in ("meta-r", "meta-dr") for e in EFFECT_CHOICES)


def is_method(name: str) -> bool:
    return name in METHODS or name in EFFECT_VARIANTS


def method_order(name: str) -> tuple[int, int]:
    """Sort key: METHODS order, effect variants right after their learner."""
    base, _, effect = name.partition(":")
    return (METHODS.index(base) if base in METHODS else 99, EFFECT_CHOICES.index(effect) + 1 if effect else 0)


@dataclass
class GainData:
    """Training data of one split. ``r_pref`` holds the gold labels of the preference rows (NaN
    where unknown) and is read only by the ``all-gold`` upper bound."""

    X_gold: np.ndarray
    r_gold: np.ndarray
    X_pref: np.ndarray
    y_pref: np.ndarray
    r_pref: np.ndarray | None = None

    def __post_init__(self):
        self.X_gold = np.asarray(self.X_gold, dtype=float)
        self.X_pref = np.asarray(self.X_pref, dtype=float)
        self.r_gold = np.asarray(self.r_gold, dtype=float).ravel()
        self.y_pref = np.asarray(self.y_pref, dtype=float).ravel()
        if self.X_gold.shape[0] != self.r_gold.size or self.X_pref.shape[0] != self.y_pref.size:
            raise DataError("features and labels have different lengths", source="gain data")
        if not (np.isfinite(self.r_gold).all() and np.isfinite(self.y_pref).all()):
            raise DataError("gold and preference labels passed for training must be finite", source="gain data")
        if self.r_pref is not None:
            self.r_pref = np.asarray(self.r_pref, dtype=float).ravel()


class MetaRouterGain:
    """Two-model Meta-Router gain estimator (EconML-style: base learners are arguments).

    ``learner``: ``r`` or ``dr``. ``outcome_model`` / ``propensity_model`` / ``effect_model`` /
    ``final_model``: any scikit-learn estimators (None = the official code's random forests).
    ``effect_model`` may also name one of ``forest | ridge | group | constant`` or ``auto`` (the
    one with the lowest cross-fitted loss on the gold rows, see
    :func:`caproute.causal.learners.select_effect_model`; PROPOSED, not in the paper). The default
    ``forest`` (= ``None``) is the paper's effect forest (for the R-learner with overlap-weighted
    leaves, :func:`caproute.causal.learners.default_r_effect_model`).
    ``effect_forest`` replaces the forest of the named set; ``nuisance_cache`` (a dict) shares
    cross-fitted nuisances between estimators fitted on the same data.
    After ``fit``: ``scale_`` (c), ``learner_`` (with ``overlap_``), ``delta_pref_`` (the bias
    added to each preference label, aligned scale), ``final_model_``.
    """

    def __init__(self, learner: str = "r", *, align: str = "variance", gamma: float = 1.0,
                 outcome_model=None, propensity_model=None, effect_model="forest", final_model=None,
                 n_folds: int = 5, propensity_clip: tuple[float, float] = DEFAULT_PROPENSITY_CLIP,
                 min_overlap: float = 0.0, effect_clip: tuple[float, float] | None = DEFAULT_EFFECT_CLIP,
                 random_state: int = 42, effect_forest=None, nuisance_cache: dict | None = None):
        self.learner = learner
        self.align = align
        self.gamma = gamma
        self.outcome_model = outcome_model
        self.propensity_model = propensity_model
        self.effect_model = effect_model
        self.final_model = final_model
        self.n_folds = n_folds
        self.propensity_clip = propensity_clip
        self.min_overlap = min_overlap
        self.effect_clip = effect_clip
        self.random_state = random_state
        self.effect_forest = effect_forest
        self.nuisance_cache = nuisance_cache

    def fit(self, X_gold, r_gold, X_pref, y_pref) -> MetaRouterGain:
        if self.learner not in LEARNERS:
            raise ValueError(f"learner must be one of {sorted(LEARNERS)}, not {self.learner!r}")
        if self.gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        d = GainData(X_gold, r_gold, X_pref, y_pref)
        c = scale_factor(d.r_gold, d.y_pref, self.align)
        r = c * d.r_gold
        X = np.vstack([d.X_gold, d.X_pref])
        T = np.r_[np.ones(d.r_gold.size, int), np.zeros(d.y_pref.size, int)]
        learner = LEARNERS[self.learner](
            self.outcome_model, self.propensity_model, self.effect_model, n_folds=self.n_folds,
            propensity_clip=self.propensity_clip, min_overlap=self.min_overlap, effect_clip=self.effect_clip,
            random_state=self.random_state, effect_forest=self.effect_forest, nuisance_cache=self.nuisance_cache)
        learner.fit(X, np.r_[r, d.y_pref], T)
        delta = learner.effect(d.X_pref)
        weight = None if self.gamma == 1.0 else np.r_[np.full(r.size, float(self.gamma)), np.ones(delta.size)]
        final = self.final_model if self.final_model is not None else default_final_model(self.random_state)
        self.final_model_ = _fit(clone(final), X, np.r_[r, d.y_pref + delta], weight)
        self.scale_, self.learner_, self.delta_pref_ = c, learner, delta
        return self

    def bias(self, X) -> np.ndarray:
        """Estimated Delta(x) = c psi(x) - eta(x) on the aligned (preference) scale."""
        return self.learner_.effect(X)

    def predict(self, X) -> np.ndarray:
        """psi-hat(x) on the gold scale (n,)."""
        if not hasattr(self, "final_model_"):
            raise RuntimeError("MetaRouterGain is not fitted; call fit() first")
        return self.final_model_.predict(np.asarray(X, dtype=float)) / self.scale_

    def info(self) -> dict:
        """Scale factor, overlap report and the mean bias correction, for reports."""
        out = {"scale": float(self.scale_), "overlap": self.learner_.overlap_.to_dict(),
               "mean_delta": float(np.mean(self.delta_pref_))}
        sel = getattr(self.learner_, "effect_selection_", None)
        if sel:
            out["effect"] = {f"chose_{name}": float(name == sel["chosen"]) for name in EFFECT_MODELS}
            out["effect"].update({f"cv_loss_{k}": float(v) for k, v in sel["cv_loss"].items()})
        return out


def _fit(model, X, y, sample_weight=None):
    if sample_weight is None:
        return model.fit(X, y)
    return model.fit(X, y, sample_weight=sample_weight)


@dataclass
class FittedGain:
    """A fitted gain model of any method: ``predict(X)`` gives psi-hat on the gold scale."""

    method: str
    model: object
    scale: float = 1.0
    info: dict = field(default_factory=dict)

    def predict(self, X) -> np.ndarray:
        return self.model.predict(np.asarray(X, dtype=float)) / self.scale


def fit_gain(method: str, data: GainData, *, align: str = "variance", gamma: float = 1.0,
             final_model=None, random_state: int = 42, **learner_kwargs) -> FittedGain:
    """Fit one of :data:`METHODS` on a split. ``learner_kwargs`` go to :class:`MetaRouterGain`."""
    if not is_method(method):
        raise ValueError(f"unknown method '{method}' (choose from {METHODS} or {EFFECT_VARIANTS})")
    final = final_model if final_model is not None else default_final_model(random_state)
    if method.startswith("meta-"):
        base, _, effect = method.partition(":")
        if effect:
            learner_kwargs = {**learner_kwargs, "effect_model": effect}
        est = MetaRouterGain(base.removeprefix("meta-"), align=align, gamma=gamma, final_model=final,
                             random_state=random_state, **learner_kwargs)
        est.fit(data.X_gold, data.r_gold, data.X_pref, data.y_pref)
        return FittedGain(method, est, 1.0, est.info())
    if method == "gold-only":
        return FittedGain(method, clone(final).fit(data.X_gold, data.r_gold))
    if method == "pref-only":
        return FittedGain(method, clone(final).fit(data.X_pref, data.y_pref))
    if method == "all-gold":
        if data.r_pref is None:
            raise DataError("all-gold needs the gold labels of the preference rows (r_pref)", source="gain data")
        known = np.isfinite(data.r_pref)
        X = np.vstack([data.X_gold, data.X_pref[known]])
        return FittedGain(method, clone(final).fit(X, np.r_[data.r_gold, data.r_pref[known]]),
                          info={"pref_rows_without_gold": int((~known).sum())})
    # pooled / mean-shift: gold rows on the aligned scale, preference rows as they are (shifted)
    c = scale_factor(data.r_gold, data.y_pref, align)
    r = c * data.r_gold
    y = data.y_pref
    info = {"scale": c}
    if method == "mean-shift":
        shift = float(np.mean(r) - np.mean(y))
        y = y + shift
        info["shift"] = shift
    X = np.vstack([data.X_gold, data.X_pref])
    weight = None if gamma == 1.0 else np.r_[np.full(r.size, float(gamma)), np.ones(y.size)]
    return FittedGain(method, _fit(clone(final), X, np.r_[r, y], weight), c, info)
