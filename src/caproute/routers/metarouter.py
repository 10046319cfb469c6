"""Meta-Router, multi-model extension (arXiv 2509.25535, appendix; §C.4 PROPOSED form).

One two-model Meta-Router per model m against a reference model ``ref``: psi_m(q) =
E[quality(m) - quality(ref) | q], learned from a few gold gains plus many biased preference
gains (R- or DR-learner debiasing, :class:`caproute.causal.gain.MetaRouterGain`). Routing picks
argmax_m psi_m(q) - w * C_m with psi_ref = 0, i.e. the DARS utility with lambda = w and no risk
term.

How it consumes data:

- ``fit(X, supervision)``: the supervision's queries are the GOLD queries; the gold gain of m is
  ``mu_q[:, m] - mu_q[:, ref]`` (DARS mean quality difference). Costs C_m are each model's mean
  ``mu_c`` over these queries. On a partial grid the gold gains of m are those of the queries where
  m and the reference were both observed (none: the per-model prior's gains, recorded in
  ``fallback_``), and C_m averages m's observed queries.
- ``fit(X, supervision, X_pref=..., pref=...)``: preference data on other queries. ``pref`` is an
  (n_pref, n_models) array (columns in ``supervision.models`` order) or a DataFrame with model
  columns; entry [j, m] is the preference gain of m over the reference on query j (+1 m better,
  0 tie, -1 worse, or any value on the judge's scale), NaN = no verdict. The reference column is
  ignored. Without preference labels for a model (or with too few), that model falls back to a
  gold-only regression; ``fallback_`` records why.

Predicted statistics: mu_q[:, m] = base_ + psi_m(x) (base_ = mean gold quality of the reference,
a constant that leaves the ranking unchanged), mu_c[:, m] = C_m, sigma_q = 0, so ``beta`` has
no effect. Fitted gain forests are stored as arrays (no pickle; ``causal.forest_arrays``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caproute.errors import DataError
from caproute.routers.base import Router, StatsPrediction, register


@register
class MetaRouter(Router):
    name = "metarouter"
    param_spec = {"gamma": ">= 0", "n_folds": ">= 1", "n_estimators": ">= 1", "effect_n_estimators": ">= 1",
                  "max_depth": ">= 1", "effect_clip": "> 0"}

    def __init__(self, reference: str | None = None, learner: str = "r", align: str = "variance",
                 gamma: float = 1.0, n_folds: int = 5, n_estimators: int = 100, effect_n_estimators: int = 200,
                 max_depth: int = 20, effect_clip: float | None = 1.2, random_state: int = 42):
        self.reference = reference
        self.learner = learner
        self.align = align
        self.gamma = gamma
        self.n_folds = n_folds
        self.n_estimators = n_estimators
        self.effect_n_estimators = effect_n_estimators
        self.max_depth = max_depth
        self.effect_clip = effect_clip
        self.random_state = random_state

    # -- learning ---------------------------------------------------------------------------------
    def _forest(self):
        from caproute.causal.learners import default_outcome_model

        return default_outcome_model(self.random_state).set_params(n_estimators=self.n_estimators,
                                                                   max_depth=self.max_depth)

    def _reference_index(self, models: tuple[str, ...], mu_c: np.ndarray) -> int:
        if self.reference is not None:
            if self.reference not in models:
                raise DataError(f"reference model '{self.reference}' is not in {list(models)}", source="metarouter")
            return models.index(self.reference)
        # default: the cheapest model on average (the paper's alternative M_a); ties -> model order
        return int(np.argmin(np.round(mu_c.mean(axis=0), 12)))

    def fit(self, X, supervision, *, X_pref=None, pref=None) -> MetaRouter:
        from caproute.causal.forest_arrays import ArrayForest
        from caproute.causal.gain import MetaRouterGain
        from caproute.causal.learners import (
            default_effect_model,
            default_propensity_model,
            default_r_effect_model,
        )

        if self.learner not in ("r", "dr"):
            raise ValueError(f"learner must be 'r' or 'dr', not {self.learner!r}")
        X = _features(X, "X")
        models = tuple(supervision.models)
        if X.shape[0] != supervision.n_queries:
            raise DataError(f"X has {X.shape[0]} rows, the supervision {supervision.n_queries} queries",
                            source="metarouter")
        observed = getattr(supervision, "observed", None)
        mask = np.ones(supervision.mu_q.shape, bool) if observed is None else np.asarray(observed, bool)
        costs = np.where(mask, supervision.mu_c, 0.0).sum(axis=0) / np.maximum(mask.sum(axis=0), 1)
        ref = self._reference_index(models, supervision.mu_c if observed is None else costs[None, :])
        P, Xp = self._preferences(X_pref, pref, models, X.shape[1])
        gains = supervision.mu_q - supervision.mu_q[:, [ref]]
        forests, scales, fallback, info = {}, {}, {}, {}
        for m, model in enumerate(models):
            if m == ref:
                continue
            rows = np.isfinite(P[:, m]) if P is not None else np.zeros(0, bool)
            gold = mask[:, m] & mask[:, ref]
            Xg, gm = X[gold], gains[gold, m]
            reason = None
            if not gold.any():
                Xg, gm = X, gains[:, m]
                reason = "no query with this model and the reference both observed (prior gains)"
            elif P is None:
                reason = "no preference labels"
            elif rows.sum() < self.n_folds:
                reason = f"{int(rows.sum())} preference labels (< n_folds = {self.n_folds})"
            elif Xg.shape[0] < self.n_folds:
                reason = f"{Xg.shape[0]} gold queries (< n_folds = {self.n_folds})"
            if reason is None:
                est = MetaRouterGain(
                    self.learner, align=self.align, gamma=self.gamma, n_folds=self.n_folds,
                    outcome_model=self._forest(),
                    propensity_model=default_propensity_model(self.random_state).set_params(
                        n_estimators=self.n_estimators, max_depth=self.max_depth),
                    effect_model=(default_r_effect_model if self.learner == "r" else default_effect_model)(
                        self.random_state).set_params(n_estimators=self.effect_n_estimators),
                    final_model=self._forest(),
                    effect_clip=None if self.effect_clip is None else (-self.effect_clip, self.effect_clip),
                    random_state=self.random_state)
                try:
                    est.fit(Xg, gm, Xp[rows], P[rows, m])
                except DataError as e:  # e.g. gold gains without spread: alignment undefined
                    reason = f"meta-router failed ({e.reason})"
                else:
                    forests[model], scales[model] = ArrayForest.from_model(est.final_model_), est.scale_
                    info[model] = {"n_pref": int(rows.sum()), **est.info()}
            if reason is not None:
                forests[model] = ArrayForest.from_model(self._forest().fit(Xg, gm))
                scales[model], fallback[model] = 1.0, reason
        self.models_ = models
        self.reference_index_ = ref
        self.forests_, self.scales_, self.fallback_, self.info_ = forests, scales, fallback, info
        self.base_ = float(supervision.mu_q[mask[:, ref], ref].mean())
        self.costs_ = supervision.mu_c.mean(axis=0) if observed is None else costs
        self.n_features_ = X.shape[1]
        return self

    def _preferences(self, X_pref, pref, models, d) -> tuple[np.ndarray | None, np.ndarray | None]:
        if pref is None and X_pref is None:
            return None, None
        if pref is None or X_pref is None:
            raise DataError("pass both X_pref and pref (or neither)", source="metarouter")
        Xp = _features(X_pref, "X_pref")
        if Xp.shape[1] != d:
            raise DataError(f"X_pref has {Xp.shape[1]} features, X has {d}", source="metarouter")
        if hasattr(pref, "columns"):
            unknown = [c for c in pref.columns if c not in models]
            if unknown:
                raise DataError(f"preference columns {unknown} are not models of the supervision",
                                source="metarouter", field=str(unknown[0]))
            P = np.column_stack([pref[m].to_numpy(float) if m in pref.columns else np.full(len(pref), np.nan)
                                 for m in models])
        else:
            P = np.asarray(pref, dtype=float)
        if P.shape != (Xp.shape[0], len(models)):
            raise DataError(f"pref has shape {P.shape}, expected {(Xp.shape[0], len(models))}", source="metarouter")
        if np.isinf(P).any():
            raise DataError("pref holds infinite values", source="metarouter")
        return P, Xp

    # -- prediction -------------------------------------------------------------------------------
    def gains(self, X) -> np.ndarray:
        """psi_m(x) for every model (n, m) on the gold-quality scale; 0 for the reference."""
        self._check_fitted()
        X = _features(X, "X")
        out = np.zeros((X.shape[0], len(self.models_)))
        for m, model in enumerate(self.models_):
            if m != self.reference_index_:
                out[:, m] = self.forests_[model].predict(X) / self.scales_[model]
        return out

    def predict_stats(self, X, lam: float | None = None) -> StatsPrediction:
        psi = self.gains(X)
        n = psi.shape[0]
        return StatsPrediction(self.models_, self.base_ + psi, np.tile(self.costs_, (n, 1)), np.zeros_like(psi))

    # -- persistence ------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {"costs": np.asarray(self.costs_, dtype=np.float64)}
        for m, model in enumerate(self.models_):
            if m != self.reference_index_:
                arrays.update(self.forests_[model].to_arrays(f"m{m}."))
        meta = {"reference_index": self.reference_index_, "base": self.base_, "n_features": self.n_features_,
                "scales": {k: float(v) for k, v in self.scales_.items()}, "fallback": self.fallback_,
                "info": self.info_}
        return arrays, meta

    def _load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        from caproute.causal.forest_arrays import ArrayForest

        self.reference_index_ = int(meta["reference_index"])
        self.base_ = float(meta["base"])
        self.n_features_ = int(meta["n_features"])
        self.scales_ = {k: float(v) for k, v in meta["scales"].items()}
        self.fallback_, self.info_ = dict(meta.get("fallback", {})), dict(meta.get("info", {}))
        self.costs_ = np.asarray(arrays["costs"], dtype=np.float64)
        self.forests_ = {model: ArrayForest.from_arrays(arrays, self.n_features_, prefix=f"m{m}.")
                         for m, model in enumerate(self.models_) if m != self.reference_index_}


def _features(X, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"{name} must be 2-D (n, d), got shape {X.shape}", source="metarouter")
    if not np.isfinite(X).all():
        raise DataError(f"{name} holds NaN or infinite features", source="metarouter")
    return X
