"""R-learner and DR-learner for the bias Delta(s) = psi(s) - eta(s) (Meta-Router §C.2-C.3).

The pooled sample is (X, Y, T): T = 1 for gold rows (outcome r, already scale-aligned), T = 0 for
preference rows (outcome y). The bias of the preference mechanism is the conditional average
treatment effect of "being judged by the gold mechanism".

EconML-style: the nuisance models (outcome, propensity) and the effect model are any
scikit-learn estimators passed in (defaults: the official code's random forests); the learners
clone them and do K-fold cross-fitting themselves (folds stratified on T, so every fold holds
gold rows). Cross-fitting is our choice (the illustrative code fits nuisances in-sample).

Overlap. With ~2% gold rows the propensity e(x) = P(T = 1 | x) is ~0.02 everywhere. The released
code clips a *regressor's* propensity to [0.1, 0.9] (R) or [0.05, 0.95] (DR) and then masks rows
with |T - e| <= 0.05 (R) or e(1 - e) <= 0.05 (DR); at 2% gold the DR mask removes nearly every
row. Our default (PROPOSED in the spec): a classifier's ``predict_proba`` propensity clipped to
[0.01, 0.99] and no mask (``min_overlap = 0``); the R-learner's (T - e)^2 weights then handle
overlap, together with an effect forest whose leaves must carry >= 5% of that weight
(:func:`default_r_effect_model`; without it, leaves holding only preference rows estimate the
bias with ~1/e-fold noise). Every choice is reported in :class:`OverlapReport` (rows clipped,
rows masked), so no row leaves silently. :func:`paper_code_settings` gives the released code's
behaviour.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.model_selection import StratifiedKFold

from caproute.errors import DataError

DEFAULT_PROPENSITY_CLIP = (0.01, 0.99)
DEFAULT_EFFECT_CLIP = (-1.2, 1.2)


def default_outcome_model(random_state: int = 42) -> RandomForestRegressor:
    """Outcome nuisance of the official code: RF(100 trees, depth 20, sqrt features)."""
    return RandomForestRegressor(n_estimators=100, max_depth=20, max_features="sqrt",
                                 random_state=random_state, n_jobs=1)


def default_propensity_model(random_state: int = 42) -> RandomForestClassifier:
    """Propensity nuisance: the code's RF settings as a *classifier* (predict_proba; PROPOSED fix)."""
    return RandomForestClassifier(n_estimators=100, max_depth=20, max_features="sqrt",
                                  random_state=random_state, n_jobs=1)


def default_effect_model(random_state: int = 42) -> RandomForestRegressor:
    """Effect (tau) model of the official code: RF(200, depth 30, min split 5, min leaf 2, sqrt,
    bootstrap). The code also sets ``oob_score=True``, a diagnostic that does not change
    predictions; we leave it off to save time."""
    return RandomForestRegressor(n_estimators=200, max_depth=30, min_samples_split=5, min_samples_leaf=2,
                                 max_features="sqrt", bootstrap=True, random_state=random_state, n_jobs=1)


R_EFFECT_MIN_WEIGHT_FRACTION = 0.05


def default_r_effect_model(random_state: int = 42) -> RandomForestRegressor:
    """The code's effect forest with overlap-weighted leaves (PROPOSED; R-learner default).

    The R-learner fits the effect model with weights (T - e)^2: about (1 - e)^2 ~ 1 for a gold
    row and e^2 ~ 0.001 for a preference row at 2-4% gold. A leaf without gold rows then
    estimates Delta from preference rows alone, -(Y - m)/e, whose noise is ~1/e times the label
    noise; with the code's min_samples_leaf = 2 most leaves are like that, and at 4% gold the
    R-learner ranked queries worse than gold-only (synthetic check, docs/meta-router.md).
    ``min_weight_fraction_leaf = 0.05`` makes every leaf carry >= 5% of the total weight, i.e.
    roughly >= 5% of the gold rows, which fixed it. The other settings are the code's.
    """
    return default_effect_model(random_state).set_params(min_weight_fraction_leaf=R_EFFECT_MIN_WEIGHT_FRACTION)


def default_final_model(random_state: int = 42) -> RandomForestRegressor:
    """Final gain model psi of the official code: RF(100, depth 20, sqrt)."""
    return default_outcome_model(random_state)


# ----------------------------------------------------------------------------------------------
# low-variance effect models and their selection (issue 14.4; PROPOSED, not in the paper)
EFFECT_MODELS = ("forest", "ridge", "group", "constant")
"""Named effect models; ``auto`` picks one of them by cross-fitted loss on the gold rows."""
EFFECT_CHOICES = (*EFFECT_MODELS, "auto")
RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)   # PROPOSED grid (weighted GCV picks one per fit)
GROUP_KMEANS = 4                                 # PROPOSED: k-means groups of the continuous features
GROUP_PRIOR_WEIGHT = 5.0                         # PROPOSED: shrinkage, in units of one gold row's weight


class GroupMeanEffect(RegressorMixin, BaseEstimator):
    """Query-group indicators: one constant per group, shrunk towards the overall (weighted) mean.

    Groups: the distinct values of the discrete feature columns (columns with at most 3 distinct
    values, e.g. the signed model-pair indicator: one group per model pair) crossed with
    ``n_clusters`` k-means clusters of the other columns (the query embedding); ``n_clusters = 1``
    and no discrete columns give a single constant (the ``constant`` effect model).
    tau_g = (Σ_g w y + prior_weight · tau_all) / (Σ_g w + prior_weight), tau_all = Σ w y / Σ w.
    """

    def __init__(self, n_clusters: int = GROUP_KMEANS, prior_weight: float = GROUP_PRIOR_WEIGHT,
                 use_discrete: bool = True, random_state: int = 42):
        self.n_clusters = n_clusters
        self.prior_weight = prior_weight
        self.use_discrete = use_discrete
        self.random_state = random_state

    def _keys(self, X: np.ndarray) -> list[tuple]:
        parts = []
        if self.discrete_cols_.size:
            parts.append(np.round(X[:, self.discrete_cols_], 6))
        if self.kmeans_ is not None:
            parts.append(self.kmeans_.predict(X[:, self.continuous_cols_])[:, None].astype(float))
        if not parts:
            return [()] * X.shape[0]
        return [tuple(r) for r in np.hstack(parts)]

    def fit(self, X, y, sample_weight=None):
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float).ravel()
        w = np.ones(y.size) if sample_weight is None else np.asarray(sample_weight, dtype=float).ravel()
        n_distinct = np.array([np.unique(X[:, j]).size for j in range(X.shape[1])]) if X.shape[1] else np.zeros(0)
        discrete = (n_distinct <= 3) if self.use_discrete else np.zeros(X.shape[1], bool)
        self.discrete_cols_ = np.flatnonzero(discrete)
        self.continuous_cols_ = np.flatnonzero(~discrete)
        self.kmeans_ = None
        k = int(min(self.n_clusters, y.size))
        if k > 1 and self.continuous_cols_.size:
            from sklearn.cluster import KMeans

            self.kmeans_ = KMeans(n_clusters=k, n_init=4, random_state=self.random_state).fit(
                X[:, self.continuous_cols_])
        self.global_ = float((w * y).sum() / w.sum()) if w.sum() > 0 else 0.0
        sums: dict = {}
        for key, wi, yi in zip(self._keys(X), w, y, strict=True):
            a = sums.setdefault(key, [0.0, 0.0])
            a[0] += wi * yi
            a[1] += wi
        pw = float(self.prior_weight)
        self.values_ = {key: (sy + pw * self.global_) / (sw + pw) for key, (sy, sw) in sums.items()}
        return self

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        return np.array([self.values_.get(key, self.global_) for key in self._keys(X)])


def effect_candidates(learner: str, random_state: int = 42, forest=None) -> dict:
    """The named effect models for ``learner`` ('r' or 'dr'): forest (the code's; for the R-learner
    with overlap-weighted leaves), ridge (RidgeCV, weighted GCV over :data:`RIDGE_ALPHAS`), group
    (:class:`GroupMeanEffect`) and constant (one weighted mean). ``forest`` replaces the forest."""
    from sklearn.linear_model import RidgeCV

    if forest is None:
        forest = default_r_effect_model(random_state) if learner == "r" else default_effect_model(random_state)
    return {"forest": forest, "ridge": RidgeCV(alphas=RIDGE_ALPHAS),
            "group": GroupMeanEffect(random_state=random_state),
            "constant": GroupMeanEffect(n_clusters=1, use_discrete=False, random_state=random_state)}


def select_effect_model(candidates: dict, X: np.ndarray, z: np.ndarray, w: np.ndarray | None, T: np.ndarray,
                        folds, mask: np.ndarray) -> tuple[str, dict[str, float]]:
    """Pick the effect model with the lowest cross-fitted loss on the gold rows.

    For each fold: fit every candidate on the other folds' usable rows (``mask``), predict the
    fold's gold rows (T = 1), and add the (weighted) squared error of the pseudo-outcome z. The
    R-learner's weights are (T - e)^2, so this is its R-loss restricted to gold rows; the
    DR-learner's are 1. Ties go to the earlier (lower-variance last) candidate in dict order.
    Returns (name, {name: mean loss per unit weight}).
    """
    weight = np.ones(z.size) if w is None else w
    losses = {name: 0.0 for name in candidates}
    total = 0.0
    for train, test in folds:
        tr = train[mask[train]]
        te = test[(T[test] == 1) & mask[test]]
        if te.size == 0 or tr.size == 0:
            continue
        total += float(weight[te].sum())
        for name, model in candidates.items():
            m = clone(model)
            m = m.fit(X[tr], z[tr]) if w is None else m.fit(X[tr], z[tr], sample_weight=weight[tr])
            losses[name] += float((weight[te] * (z[te] - m.predict(X[te])) ** 2).sum())
    losses = {k: v / max(total, 1e-12) for k, v in losses.items()}
    return min(losses, key=lambda k: losses[k]), losses


@dataclass
class OverlapReport:
    """How the propensity was clipped and which rows the effect fit could not use.

    ``propensity_*`` describe the cross-fitted propensity before clipping; ``n_clipped_low`` /
    ``n_clipped_high`` count rows moved to the clip bounds; ``n_masked`` counts rows left out of
    the effect fit by the ``min_overlap`` rule (``rule`` says which).
    """

    n_rows: int
    n_gold: int
    propensity_min: float
    propensity_median: float
    propensity_max: float
    clip_low: float
    clip_high: float
    n_clipped_low: int
    n_clipped_high: int
    min_overlap: float
    rule: str
    n_masked: int

    def to_dict(self) -> dict:
        return asdict(self)


def paper_code_settings(learner: str, random_state: int = 42) -> dict:
    """Keyword arguments reproducing the released code's overlap handling (for comparison).

    R: RF *regressor* propensity clipped to [0.1, 0.9], rows with |T - e| <= 0.05 masked, the
    code's effect forest (min_samples_leaf = 2, no leaf-weight rule).
    DR: RF regressor propensity clipped to [0.05, 0.95], rows with e(1 - e) <= 0.05 masked.
    """
    prop = default_outcome_model(random_state)
    if learner == "r":
        return {"propensity_model": prop, "propensity_clip": (0.1, 0.9), "min_overlap": 0.05,
                "effect_model": default_effect_model(random_state)}
    if learner == "dr":
        return {"propensity_model": prop, "propensity_clip": (0.05, 0.95), "min_overlap": 0.05}
    raise ValueError(f"learner must be 'r' or 'dr', not {learner!r}")


def _check_xyt(X, Y, T, n_folds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float).ravel()
    T = np.asarray(T).ravel()
    if X.ndim != 2 or X.shape[0] != Y.size or Y.size != T.size:
        raise DataError(f"X {X.shape}, Y {Y.shape} and T {T.shape} do not match", source="learner")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise DataError("X and Y must be finite (drop or impute rows with missing labels first)",
                        source="learner")
    if not np.isin(T, (0, 1)).all():
        raise DataError("T must be 0 (preference) or 1 (gold)", source="learner")
    T = T.astype(int)
    n1, n0 = int(T.sum()), int((1 - T).sum())
    if min(n1, n0) < n_folds:
        raise DataError(f"cross-fitting with {n_folds} folds needs at least {n_folds} gold and {n_folds} "
                        f"preference rows (got {n1} gold, {n0} preference)", source="learner")
    return X, Y, T


def _folds(T: np.ndarray, n_folds: int, random_state: int):
    return list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=random_state)
                .split(np.zeros((T.size, 1)), T))


def _predict_propensity(model, X: np.ndarray) -> np.ndarray:
    if hasattr(model, "predict_proba"):
        classes = list(model.classes_)
        return model.predict_proba(X)[:, classes.index(1)]
    return model.predict(X)


def crossfit_propensity(model, X: np.ndarray, T: np.ndarray, folds) -> np.ndarray:
    """Out-of-fold e(x) = P(T = 1 | x): a classifier's predict_proba, or a regressor's predict on T."""
    e = np.empty(T.size)
    for train, test in folds:
        m = clone(model).fit(X[train], T[train])
        e[test] = _predict_propensity(m, X[test])
    return e


def crossfit_outcome(model, X: np.ndarray, Y: np.ndarray, folds) -> np.ndarray:
    """Out-of-fold m(x) = E[Y | x]."""
    out = np.empty(Y.size)
    for train, test in folds:
        out[test] = clone(model).fit(X[train], Y[train]).predict(X[test])
    return out


def _clip_report(e: np.ndarray, T: np.ndarray, clip: tuple[float, float], min_overlap: float,
                 rule: str, mask: np.ndarray) -> OverlapReport:
    lo, hi = clip
    return OverlapReport(n_rows=int(T.size), n_gold=int(T.sum()), propensity_min=float(e.min()),
                         propensity_median=float(np.median(e)), propensity_max=float(e.max()),
                         clip_low=float(lo), clip_high=float(hi), n_clipped_low=int((e < lo).sum()),
                         n_clipped_high=int((e > hi).sum()), min_overlap=float(min_overlap), rule=rule,
                         n_masked=int((~mask).sum()))


class _MetaLearner:
    rule = ""

    def __init__(self, outcome_model=None, propensity_model=None, effect_model=None, *, n_folds: int = 5,
                 propensity_clip: tuple[float, float] = DEFAULT_PROPENSITY_CLIP, min_overlap: float = 0.0,
                 effect_clip: tuple[float, float] | None = DEFAULT_EFFECT_CLIP, random_state: int = 42,
                 effect_forest=None, nuisance_cache: dict | None = None):
        self.outcome_model = outcome_model
        self.propensity_model = propensity_model
        self.effect_model = effect_model
        self.effect_forest = effect_forest
        self.nuisance_cache = nuisance_cache
        self.n_folds = n_folds
        self.propensity_clip = propensity_clip
        self.min_overlap = min_overlap
        self.effect_clip = effect_clip
        self.random_state = random_state

    learner_key = ""

    def _default_effect(self, random_state: int):
        return default_effect_model(random_state)

    def _models(self):
        rs = self.random_state
        effect = self.effect_model
        if effect is None:
            effect = self._default_effect(rs)
        elif isinstance(effect, str):
            if effect not in EFFECT_CHOICES:
                raise ValueError(f"effect model must be an estimator or one of {EFFECT_CHOICES}, not {effect!r}")
            if effect != "auto":
                effect = effect_candidates(self.learner_key, rs, self.effect_forest)[effect]
        return (self.outcome_model if self.outcome_model is not None else default_outcome_model(rs),
                self.propensity_model if self.propensity_model is not None else default_propensity_model(rs),
                effect)

    def _fit_effect(self, effect, X, z, w, T, folds, mask):
        """Fit the effect model on the usable rows; ``effect == 'auto'`` first selects one of
        :data:`EFFECT_MODELS` by :func:`select_effect_model` (recorded in ``effect_selection_``)."""
        if isinstance(effect, str):      # auto
            cands = effect_candidates(self.learner_key, self.random_state, self.effect_forest)
            name, losses = select_effect_model(cands, X, z, w, T, folds, mask)
            self.effect_selection_ = {"chosen": name, "cv_loss": losses}
            effect = cands[name]
        else:
            self.effect_selection_ = None
        model = clone(effect)
        return model.fit(X[mask], z[mask]) if w is None else model.fit(X[mask], z[mask], sample_weight=w[mask])

    def _propensity(self, X, T, folds, prop_model) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.propensity_clip
        if not 0 < lo <= hi < 1:
            raise ValueError(f"propensity_clip must satisfy 0 < low <= high < 1, got {self.propensity_clip}")
        e_raw = crossfit_propensity(prop_model, X, T, folds)
        return e_raw, np.clip(e_raw, lo, hi)

    def _cached(self, X, Y, T, compute):
        """Cross-fitted nuisances, shared through ``nuisance_cache`` between learners fitted on the
        same (X, Y, T) with the same nuisance models and folds (e.g. several effect models on one
        split): exact reuse, keyed by the learner and a digest of the data."""
        if self.nuisance_cache is None:
            return compute()
        import hashlib

        h = hashlib.sha256()
        for a in (X, Y, T):
            h.update(np.ascontiguousarray(a).tobytes())
        key = (type(self).__name__, self.n_folds, self.random_state, getattr(self, "joint_outcome", None),
               tuple(self.propensity_clip), repr(self.outcome_model), repr(self.propensity_model), h.hexdigest())
        if key not in self.nuisance_cache:
            self.nuisance_cache[key] = compute()
        return self.nuisance_cache[key]

    def effect(self, X) -> np.ndarray:
        """Estimated bias Delta(x) (n,), on the scale of the outcomes fitted, clipped to effect_clip."""
        if not hasattr(self, "effect_model_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        tau = self.effect_model_.predict(np.asarray(X, dtype=float))
        return tau if self.effect_clip is None else np.clip(tau, *self.effect_clip)


def r_learner_target(Y: np.ndarray, T: np.ndarray, m_hat: np.ndarray, e_hat: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """R-learner pseudo-outcome Z and weight W (Nie & Wager 2021), arrays (n,):
    Z = (Y - m(X)) / (T - e(X)), W = (T - e(X))^2, with m(X) = E[Y | X] and e(X) = P(T = 1 | X)
    cross-fitted. Rows with T = e(X) give inf and are dropped by the overlap rule."""
    resid_t = T - e_hat
    return (Y - m_hat) / resid_t, resid_t ** 2


def dr_learner_target(Y: np.ndarray, T: np.ndarray, mu1: np.ndarray, mu0: np.ndarray, e_hat: np.ndarray
                      ) -> np.ndarray:
    """DR-learner (AIPW) pseudo-outcome (Kennedy 2023), array (n,):
    Z = (T - e(X)) / (e(X)(1 - e(X))) * (Y - mu(X, T)) + mu(X, 1) - mu(X, 0)."""
    mu_t = np.where(T == 1, mu1, mu0)
    return (T - e_hat) / (e_hat * (1 - e_hat)) * (Y - mu_t) + mu1 - mu0


class RLearner(_MetaLearner):
    """R-learner (Nie & Wager 2021) with K-fold cross-fitted nuisances.

    Z = (Y - m(X)) / (T - e(X)), weight W = (T - e(X))^2, Delta = argmin_h sum W (Z - h(X))^2.
    The effect model must accept ``sample_weight`` in ``fit``; the default is
    :func:`default_r_effect_model` (the code's forest with overlap-weighted leaves).
    """

    rule = "|T - e| > min_overlap"
    learner_key = "r"

    def _default_effect(self, random_state: int):
        return default_r_effect_model(random_state)

    def fit(self, X, Y, T) -> RLearner:
        X, Y, T = _check_xyt(X, Y, T, self.n_folds)
        outcome, prop, effect = self._models()
        folds = _folds(T, self.n_folds, self.random_state)

        def nuisances():
            m = crossfit_outcome(outcome, X, Y, folds)
            return (m, *self._propensity(X, T, folds, prop))

        m_hat, e_raw, e = self._cached(X, Y, T, nuisances)
        resid_t = T - e
        mask = np.abs(resid_t) > self.min_overlap
        if not mask.any():
            raise DataError("no row passes the overlap rule; lower min_overlap", source="R-learner")
        z, w = r_learner_target(Y, T, m_hat, e)
        self.effect_model_ = self._fit_effect(effect, X, z, w, T, folds, mask)
        self.m_hat_, self.e_hat_ = m_hat, e
        self.overlap_ = _clip_report(e_raw, T, self.propensity_clip, self.min_overlap, self.rule, mask)
        return self


class DRLearner(_MetaLearner):
    """DR-learner (Kennedy 2023) with K-fold cross-fitted nuisances.

    Z = (T - e)/(e(1 - e)) * (Y - mu(X, T)) + mu(X, 1) - mu(X, 0); Delta = regression of Z on X.
    ``joint_outcome=True`` (the official code) fits ONE outcome model on [X, T]; ``False`` fits one
    per arm (a T-learner nuisance).
    """

    rule = "e(1 - e) > min_overlap"
    learner_key = "dr"

    def __init__(self, outcome_model=None, propensity_model=None, effect_model=None, *, n_folds: int = 5,
                 propensity_clip: tuple[float, float] = DEFAULT_PROPENSITY_CLIP, min_overlap: float = 0.0,
                 effect_clip: tuple[float, float] | None = DEFAULT_EFFECT_CLIP, random_state: int = 42,
                 joint_outcome: bool = True, effect_forest=None, nuisance_cache: dict | None = None):
        super().__init__(outcome_model, propensity_model, effect_model, n_folds=n_folds,
                         propensity_clip=propensity_clip, min_overlap=min_overlap, effect_clip=effect_clip,
                         random_state=random_state, effect_forest=effect_forest, nuisance_cache=nuisance_cache)
        self.joint_outcome = joint_outcome

    def _outcomes(self, model, X, Y, T, folds) -> tuple[np.ndarray, np.ndarray]:
        mu1, mu0 = np.empty(Y.size), np.empty(Y.size)
        for train, test in folds:
            if self.joint_outcome:
                m = clone(model).fit(np.column_stack([X[train], T[train]]), Y[train])
                mu1[test] = m.predict(np.column_stack([X[test], np.ones(test.size)]))
                mu0[test] = m.predict(np.column_stack([X[test], np.zeros(test.size)]))
            else:
                tr1, tr0 = train[T[train] == 1], train[T[train] == 0]
                mu1[test] = clone(model).fit(X[tr1], Y[tr1]).predict(X[test])
                mu0[test] = clone(model).fit(X[tr0], Y[tr0]).predict(X[test])
        return mu1, mu0

    def fit(self, X, Y, T) -> DRLearner:
        X, Y, T = _check_xyt(X, Y, T, self.n_folds)
        outcome, prop, effect = self._models()
        folds = _folds(T, self.n_folds, self.random_state)

        def nuisances():
            return (*self._outcomes(outcome, X, Y, T, folds), *self._propensity(X, T, folds, prop))

        mu1, mu0, e_raw, e = self._cached(X, Y, T, nuisances)
        overlap = e * (1 - e)
        mask = overlap > self.min_overlap
        if not mask.any():
            raise DataError("no row passes the overlap rule; lower min_overlap", source="DR-learner")
        z = dr_learner_target(Y, T, mu1, mu0, e)
        self.effect_model_ = self._fit_effect(effect, X, z, None, T, folds, mask)
        self.mu1_hat_, self.mu0_hat_, self.e_hat_ = mu1, mu0, e
        self.overlap_ = _clip_report(e_raw, T, self.propensity_clip, self.min_overlap, self.rule, mask)
        return self


LEARNERS = {"r": RLearner, "dr": DRLearner}
