"""Baseline dueling policies (algorithms.md §B.5, issue 6 item 4). All follow :class:`DuelingPolicy`.

- ``uniform``: a uniformly random pair (i, j), i and j independent.
- ``best-fixed``: always (k, k) for a given arm k. The experiment passes the arm with the highest
  mean utility over the online stream, i.e. the best fixed model in hindsight (an oracle line).
- ``eps-greedy``: with probability eps a uniformly random pair, otherwise (a, a) for the arm with
  the highest score under the regularised logistic (Bradley-Terry) MAP theta_hat, kept by online
  Newton steps. eps = 0.1 PROPOSED.
- ``maxinp`` (Saha 2021, "Optimal algorithms for stochastic contextual preference bandits"):
  keeps the MAP theta_hat and V = lambda I + Σ z z^T; the candidate set holds every arm a with
  <theta_hat, phi_a - phi_b> + beta ||phi_a - phi_b||_{V^-1} >= 0 for all b; it plays the candidate
  pair of maximal uncertainty ||phi_a - phi_b||_{V^-1} ((a, a) when one candidate is left).
  beta = 1 and lambda = 1 PROPOSED (the theoretical beta_t is far too conservative in practice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from caproute.bandits.features import arm_scores, duel_feature, phi
from caproute.bandits.fgts import argmax_random
from caproute.bandits.policy import DuelingPolicy, register_policy
from caproute.bandits.posterior import laplace_update


@register_policy
class UniformPolicy(DuelingPolicy):
    name = "uniform"

    def _reset_state(self) -> None:
        pass

    def _select(self, x):
        i, j = self.rng_.integers(0, self.n_arms, size=2)
        return int(i), int(j)

    def _update(self, x, i, j, y) -> None:
        pass


@register_policy
class FixedPolicy(DuelingPolicy):
    name = "best-fixed"

    def __init__(self, arms: np.ndarray, models: Sequence[str] | None = None, *, arm: int = 0,
                 seed: int = 0, encoder: str | None = None):
        self.arm = arm
        super().__init__(arms, models, seed=seed, encoder=encoder)

    def _reset_state(self) -> None:
        if not 0 <= int(self.arm) < self.n_arms:
            raise ValueError(f"arm {self.arm} out of range 0..{self.n_arms - 1}")

    def _select(self, x):
        return int(self.arm), int(self.arm)

    def _update(self, x, i, j, y) -> None:
        pass


class _LogisticMAP(DuelingPolicy):
    """Shared state: online-Newton MAP of the logistic BT model over phi (eta = 1, N(0, sigma0^2 I) prior)."""

    def _reset_state(self) -> None:
        self.theta_ = np.zeros(self.dim)
        self.cov_ = np.eye(self.dim) * self.sigma0 ** 2

    def _update(self, x, i, j, y) -> None:
        if i != j:
            z = duel_feature(x, self.arms_, i, j, self.feature_scale)
            self.theta_, self.cov_ = laplace_update(self.theta_, self.cov_, z, y, 1.0)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"theta": self.theta_, "cov": self.cov_}, {}

    def _load_state(self, arrays, meta) -> None:
        self.theta_ = arrays["theta"].astype(np.float64)
        self.cov_ = arrays["cov"].astype(np.float64)

    def predict_scores(self, x: np.ndarray) -> np.ndarray:
        x = self._check_x(x)
        with self._lock:
            return arm_scores(self.theta_, x, self.arms_, self.feature_scale)


@register_policy
class EpsGreedyPolicy(_LogisticMAP):
    name = "eps-greedy"

    def __init__(self, arms: np.ndarray, models: Sequence[str] | None = None, *, eps: float = 0.1,
                 sigma0: float = 1.0, feature_scale: float = 1.0, seed: int = 0, encoder: str | None = None):
        self.eps, self.sigma0, self.feature_scale = eps, sigma0, feature_scale
        super().__init__(arms, models, seed=seed, encoder=encoder)

    def _select(self, x):
        if self.rng_.random() < self.eps:
            i, j = self.rng_.integers(0, self.n_arms, size=2)
            return int(i), int(j)
        a = argmax_random(arm_scores(self.theta_, x, self.arms_, self.feature_scale), self.rng_)
        return a, a


@register_policy
class MaxInPPolicy(_LogisticMAP):
    name = "maxinp"

    def __init__(self, arms: np.ndarray, models: Sequence[str] | None = None, *, beta: float = 1.0,
                 lam: float = 1.0, sigma0: float = 1.0, feature_scale: float = 1.0, seed: int = 0,
                 encoder: str | None = None):
        self.beta, self.lam, self.sigma0, self.feature_scale = beta, lam, sigma0, feature_scale
        super().__init__(arms, models, seed=seed, encoder=encoder)

    def _reset_state(self) -> None:
        super()._reset_state()
        self.v_inv_ = np.eye(self.dim) / self.lam

    def _update(self, x, i, j, y) -> None:
        super()._update(x, i, j, y)
        if i != j:
            z = duel_feature(x, self.arms_, i, j, self.feature_scale)
            vz = self.v_inv_ @ z
            self.v_inv_ = self.v_inv_ - np.outer(vz, vz) / (1.0 + float(z @ vz))

    def _select(self, x):
        F = phi(x, self.arms_, self.feature_scale)                    # (K, d)
        s = F @ self.theta_
        Q = (F @ self.v_inv_) @ F.T
        dq = np.diag(Q)
        width = np.sqrt(np.maximum(dq[:, None] + dq[None, :] - 2.0 * Q, 0.0))   # ||phi_a - phi_b||_{V^-1}
        optimistic = (s[:, None] - s[None, :]) + self.beta * width
        cand = np.flatnonzero((optimistic >= -1e-12).all(axis=1))
        if cand.size == 0:                       # cannot happen (the arg-max arm survives); be safe
            cand = np.array([int(np.argmax(s))])
        if cand.size == 1:
            return int(cand[0]), int(cand[0])
        w = width[np.ix_(cand, cand)]
        flat = np.flatnonzero(w >= w.max() - 1e-12)
        pick = int(flat[0]) if flat.size == 1 else int(self.rng_.choice(flat))
        a, b = divmod(pick, cand.size)
        return int(cand[a]), int(cand[b])

    def _state(self):
        arrays, meta = super()._state()
        return {**arrays, "v_inv": self.v_inv_}, meta

    def _load_state(self, arrays, meta) -> None:
        super()._load_state(arrays, meta)
        self.v_inv_ = arrays["v_inv"].astype(np.float64)
