"""Baseline routers that ignore the query text.

- ``best_fixed``: always the model with the best mean training utility at the routing lambda/beta.
  It predicts every query's statistics as the training means per model; since U is linear in
  (mu_q, mu_c, sigma_q), the argmax of those means is the best mean training utility.
- ``cheapest``: always the model with the lowest mean (normalised) training cost.
- ``random``: a model uniformly at random, seeded. The draw depends on (seed, the query's
  features), not on the batch, so a query gets the same model alone or in a batch.
- The oracle needs the test outcomes, so it is no router: :func:`oracle_choices` picks
  argmax of the true test utility and the evaluator (caproute.evaluate) applies it per view.
"""

from __future__ import annotations

import hashlib

import numpy as np

from caproute.routers.base import Router, StatsPrediction, clipped_targets, register
from caproute.supervise.labels import hard_labels
from caproute.supervise.utility import DEFAULT_BETA, DEFAULT_LAMBDA


def oracle_choices(u_true: np.ndarray, cost: np.ndarray | None = None) -> np.ndarray:
    """Oracle model index per query: argmax of the true utility (n, m), hard-label tie rule."""
    return hard_labels(u_true, cost)


class _MeanRouter(Router):
    """Predicts the training mean of mu_q, mu_c, sigma_q per model for every query."""

    beta_in_training = False

    def fit(self, X, supervision):
        self._validate_fit(X, supervision)
        observed = getattr(supervision, "observed", None)
        if observed is None:
            self.means_ = np.stack([t.astype(np.float64).mean(axis=0) for t in clipped_targets(supervision)])
        else:   # partial grid: each model's mean over the queries where it was observed
            w = np.asarray(observed, np.float64)
            self.means_ = np.stack([(t.astype(np.float64) * w).sum(axis=0) / np.maximum(w.sum(axis=0), 1.0)
                                    for t in clipped_targets(supervision)])
        return self

    def predict_stats(self, X, lam: float | None = None) -> StatsPrediction:
        X = self._validate_X(X)
        n = X.shape[0]
        mu_q, mu_c, sigma = (np.tile(self.means_[i], (n, 1)) for i in range(3))
        return StatsPrediction(self.models_, mu_q, mu_c, sigma)

    def _state(self):
        return {"means": self.means_}, {}

    def _load_state(self, arrays, meta) -> None:
        self.means_ = arrays["means"].astype(np.float64)


@register
class BestFixedRouter(_MeanRouter):
    """Always the model with the best mean training utility at the routing lambda/beta."""

    name = "best_fixed"

    def __init__(self):
        pass


@register
class CheapestRouter(_MeanRouter):
    """Always the model with the lowest mean normalised training cost."""

    name = "cheapest"
    fixed_route = True

    def __init__(self):
        pass

    def route(self, X, lam: float = DEFAULT_LAMBDA, beta: float = DEFAULT_BETA) -> np.ndarray:
        pred = self.predict_stats(X)
        return hard_labels(-pred.mu_c)          # lowest mean cost; ties to model order


@register
class RandomRouter(_MeanRouter):
    """A model uniformly at random, seeded per (seed, query features)."""

    name = "random"
    fixed_route = True

    def __init__(self, seed: int = 42):
        self.seed = seed

    def route(self, X, lam: float = DEFAULT_LAMBDA, beta: float = DEFAULT_BETA) -> np.ndarray:
        X = self._validate_X(X)
        m = len(self.models_)
        out = np.empty(X.shape[0], np.intp)
        for i, row in enumerate(np.ascontiguousarray(X)):
            h = hashlib.sha256(int(self.seed).to_bytes(8, "little", signed=True) + row.tobytes()).digest()
            out[i] = int.from_bytes(h[:8], "little") % m
        return out
