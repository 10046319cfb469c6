"""FGTS.CDB: Feel-Good Thompson Sampling for contextual dueling bandits (Li, Zhao, Gu, ICML 2024),
as used for LLM routing with dueling feedback (algorithms.md §B.4).

Each round draws TWO INDEPENDENT posterior samples theta^1, theta^2, one per sampler j, from

    p^j(theta | S) ∝ N(0, sigma0^2 I) · exp(-Σ_i [eta l(y_i <theta, z_i>) - mu max_a' <theta, phi(x_i,a') - phi(x_i,a_i^{3-j})>])

and plays a^j = argmax_a <theta^j, phi(x_t, a)> (the two arms may coincide). See
:mod:`caproute.bandits.posterior` for the math.

One default set (issue 24.1), :data:`DEFAULTS`, shared by :class:`FGTSCDB`, ``caproute duel``
(:class:`caproute.bandits.experiment.DuelSpec`) and ``caproute duel init``: the paper's FGTS.CDB
with the feel-good term on, SGLD, and arms = CCFT embeddings only. Every extension (Laplace
sampler, eta other than the paper's, mu = 0, the per-model arm component gamma, the offline
warm-start prior, laplace_refit) is an explicit option, and :func:`method_label` names what ran
("dueling-TS (Laplace, η 4, μ 0)" when the feel-good term is off).

Constants (FOUND-2nd = from a secondary source, PROPOSED = our choice, see docs/bandits.md):
  eta = 0.25 (FOUND-2nd, third-party code), mu = 1/sqrt(horizon) (PROPOSED; the third-party code
  cites the paper's theoretical 1/(10 e^B sqrt(T))), sampler SGLD (FOUND-2nd), sigma0 = 1 (PROPOSED),
  SGLD: 50 steps per sample (100 while t < 50), minibatch 64, h_t = 1e-3 / (1 + t/100), inverse
  temperature 1 (all PROPOSED); Laplace fast path: n_draws = 32 Gaussian draws in float32 (PROPOSED; the
  third-party code uses 400), feel-good weights on a minibatch of fg_batch = 32 past rounds, and the
  Cholesky factor of the Laplace covariance refreshed every ``chol_refresh`` = 10 rounds (PROPOSED; in
  between, draws use the last factor, whose covariance is slightly wider: more, not less, exploration).
  ``feel_good="importance"`` reweights the draws by exp(mu Σ feel-good) (the third-party recipe);
  ``feel_good="tilt"`` (PROPOSED, fastest) instead shifts the Gaussian to the mode of
  N(theta_map, cov) · exp(mu Σ feel-good) (exact where the feel-good sum is linear) and takes one draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from caproute.bandits.defaults import DEFAULTS, method_label
from caproute.bandits.features import arm_scores, duel_feature
from caproute.bandits.history import DuelHistory
from caproute.bandits.policy import DuelingPolicy, register_policy
from caproute.bandits.posterior import (
    feel_good,
    feel_good_grad,
    gaussian_draws,
    importance_pick,
    laplace_fit,
    laplace_update,
    potential_grad,
    prior_energy,
    sgld_chain,
    sgld_step_size,
    tilted_mean,
)
from caproute.errors import ConfigError

SAMPLERS = ("sgld", "laplace")
FEEL_GOOD_MODES = ("importance", "tilt")


def argmax_random(scores: np.ndarray, rng: np.random.Generator) -> int:
    """Arg-max with ties broken uniformly at random (a zero theta must not always pick arm 0)."""
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return int(best[0]) if best.size == 1 else int(rng.choice(best))


@register_policy
class FGTSCDB(DuelingPolicy):
    """FGTS.CDB over phi(x, a) = feature_scale · x ⊙ a (d-dim arm embeddings ``arms``, (K, d))."""

    name = "fgts-cdb"
    array_params = ("arms", "prior_mean", "prior_cov")

    def __init__(self, arms: np.ndarray, models: Sequence[str] | None = None, *, eta: float = DEFAULTS.eta,
                 mu: float | None = DEFAULTS.mu, horizon: int = DEFAULTS.horizon, sigma0: float = 1.0,
                 sampler: str = DEFAULTS.sampler, n_sgld: int = 50, n_sgld_warm: int = 100, warm_rounds: int = 50,
                 batch_size: int = 64, step0: float = 1e-3, step_decay: float = 100.0,
                 inv_temp: float = 1.0, n_draws: int = 32, fg_batch: int = 32, chol_refresh: int = 10,
                 feel_good: str = DEFAULTS.feel_good, laplace_refit: bool = False,
                 feature_scale: float = 1.0, seed: int = 0, encoder: str | None = None,
                 prior_mean: np.ndarray | None = None, prior_cov: np.ndarray | None = None):
        if sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got '{sampler}'")
        if feel_good not in FEEL_GOOD_MODES:
            raise ConfigError(f"feel_good must be one of {FEEL_GOOD_MODES}, got '{feel_good}'")
        self.feel_good = feel_good
        self.laplace_refit = laplace_refit
        self.eta, self.mu, self.horizon, self.sigma0 = eta, mu, horizon, sigma0
        self.sampler, self.n_sgld, self.n_sgld_warm, self.warm_rounds = sampler, n_sgld, n_sgld_warm, warm_rounds
        self.batch_size, self.step0, self.step_decay, self.inv_temp = batch_size, step0, step_decay, inv_temp
        self.n_draws, self.fg_batch, self.chol_refresh = n_draws, fg_batch, chol_refresh
        self.feature_scale = feature_scale
        self.prior_mean, self.prior_cov = prior_mean, prior_cov
        super().__init__(arms, models, seed=seed, encoder=encoder)

    @property
    def method_(self) -> str:
        """:func:`method_label` of this policy's settings (the arm component lives in ``arms``)."""
        return method_label(eta=self.eta, mu=self.mu, horizon=self.horizon, sampler=self.sampler,
                            feel_good=self.feel_good, offline_prior=self.prior_mean is not None,
                            laplace_refit=self.laplace_refit)

    @property
    def mu_(self) -> float:
        """Feel-good weight: ``mu`` or, when None, the PROPOSED 1/sqrt(horizon)."""
        return float(self.mu) if self.mu is not None else 1.0 / np.sqrt(max(int(self.horizon), 1))

    def _check_prior(self) -> None:
        """Validate ``prior_mean``/``prior_cov`` and keep the prior's mean and precision (None = N(0, sigma0^2 I))."""
        d = self.dim
        self._prior_m = self._prior_C = self._prior_P = None
        if self.prior_mean is None and self.prior_cov is None:
            return
        if self.prior_mean is None or self.prior_cov is None:
            raise ConfigError("prior_mean and prior_cov go together (both or neither)")
        m = np.asarray(self.prior_mean, dtype=np.float64).reshape(-1)
        c = np.asarray(self.prior_cov, dtype=np.float64)
        if m.size != d or c.shape != (d, d):
            raise ConfigError(f"prior_mean must be ({d},) and prior_cov ({d}, {d}), got {m.shape} and {c.shape}")
        if not (np.all(np.isfinite(m)) and np.all(np.isfinite(c))):
            raise ConfigError("prior_mean/prior_cov contain NaN or infinite values")
        if not np.allclose(c, c.T, rtol=1e-8, atol=1e-12):
            raise ConfigError("prior_cov must be symmetric")
        try:
            np.linalg.cholesky(c)
        except np.linalg.LinAlgError:
            raise ConfigError("prior_cov must be positive definite") from None
        self._prior_m, self._prior_C, self._prior_P = m, c, np.linalg.inv(c)

    def _reset_state(self) -> None:
        d = self.dim
        self._check_prior()
        self.history_ = DuelHistory(d)
        m0 = np.zeros(d) if self._prior_m is None else self._prior_m
        c0 = np.eye(d) * self.sigma0 ** 2 if self._prior_C is None else self._prior_C
        self.theta_ = np.tile(m0, (2, 1))                 # SGLD chains, warm-started round to round
        self.theta_map_ = m0.copy()                       # Laplace mean
        self.cov_ = c0.copy()                             # Laplace covariance
        self._chol = self._chol32 = None
        self._chol_t = -1

    # -- sampling ---------------------------------------------------------------------------------
    def _minibatch(self, size: int, j: int):
        h = self.history_
        n = h.n
        idx = self.rng_.integers(0, n, size=min(n, size)) if n > size else np.arange(n)
        other = h.second[idx] if j == 0 else h.first[idx]    # the OTHER sampler's arm in that round
        return idx, other, n / len(idx)

    def _sample_sgld(self, j: int) -> np.ndarray:
        h = self.history_
        n = h.n
        steps = self.n_sgld_warm if n < self.warm_rounds else self.n_sgld
        step = sgld_step_size(n, self.step0, self.step_decay)
        mu, s = self.mu_, self.feature_scale

        if n == 0:
            def grad(theta):
                return prior_energy(theta, self.sigma0, self._prior_m, self._prior_P)[1]
        else:
            # the history's views and the minibatch rule of :meth:`_minibatch`, hoisted out of the
            # step loop (the same random draws, in the same order)
            hx, hz, hy, arms, rng = h.x, h.z, h.y, self.arms_, self.rng_
            hother = h.second if j == 0 else h.first       # the OTHER sampler's arm in each round
            size = min(n, self.batch_size)
            weight = n / size
            full = np.arange(n) if n <= self.batch_size else None
            kw = {"eta": self.eta, "mu": mu, "sigma0": self.sigma0, "scale": s, "weight": weight,
                  "prior_mean": self._prior_m, "prior_prec": self._prior_P}

            def grad(theta):
                idx = full if full is not None else rng.integers(0, n, size=size)
                return potential_grad(theta, hx[idx], arms, None, None, hy[idx], hother[idx], Z=hz[idx], **kw)
        self.theta_[j] = sgld_chain(grad, self.theta_[j], steps, step, self.rng_, self.inv_temp)
        return self.theta_[j]

    def _laplace_chol(self, dtype=np.float64) -> np.ndarray:
        """Lower Cholesky factor of the Laplace covariance, refreshed every ``chol_refresh`` rounds or,
        once the history is long, whenever it has grown by 5% (the covariance then moves by O(1/n))."""
        n = self.history_.n
        every = max(int(self.chol_refresh), 1, n // 20)
        if self._chol is None or n - self._chol_t >= every or n < self._chol_t:
            cov = 0.5 * (self.cov_ + self.cov_.T)
            try:
                self._chol = np.linalg.cholesky(cov)
            except np.linalg.LinAlgError:      # rounding after many rank-1 updates: add jitter
                self._chol = np.linalg.cholesky(cov + 1e-9 * np.trace(cov) / self.dim * np.eye(self.dim))
            self._chol32 = self._chol.astype(np.float32)
            self._chol_t = n
        return self._chol32 if dtype == np.float32 else self._chol

    def _sample_laplace(self, j: int) -> np.ndarray:
        if self.feel_good == "tilt":
            return self._sample_tilt(j)
        draws = gaussian_draws(self.theta_map_, self._laplace_chol(np.float32), max(int(self.n_draws), 1), self.rng_)
        h = self.history_
        if h.n == 0 or self.mu_ == 0.0 or len(draws) == 1:
            return draws[0].astype(np.float64)
        idx, other, weight = self._minibatch(self.fg_batch, j)
        fg = feel_good(draws, h.x[idx].astype(np.float32), self.arms_.astype(np.float32), other,
                       self.feature_scale).sum(axis=1, dtype=np.float64) * weight
        return draws[importance_pick(self.mu_ * fg, self.rng_)].astype(np.float64)

    def _sample_tilt(self, j: int) -> np.ndarray:
        h, chol = self.history_, self._laplace_chol()
        mean = self.theta_map_
        if h.n > 0 and self.mu_ > 0.0:
            idx, other, weight = self._minibatch(self.fg_batch, j)
            X = h.x[idx]
            mean = tilted_mean(mean, self.cov_, lambda th: weight * feel_good_grad(
                th, X, self.arms_, other, self.feature_scale), self.mu_)
        u = self.rng_.standard_normal(self.dim)
        return mean + chol @ u

    def sample_theta(self, j: int) -> np.ndarray:
        """One posterior draw for sampler j in {0, 1} (advances the random stream)."""
        with self._lock:
            return (self._sample_sgld(j) if self.sampler == "sgld" else self._sample_laplace(j)).copy()

    def _select(self, x: np.ndarray) -> tuple[int, int]:
        pair = []
        for j in (0, 1):
            theta = self._sample_sgld(j) if self.sampler == "sgld" else self._sample_laplace(j)
            scores = arm_scores(theta, x, self.arms_, self.feature_scale)
            pair.append(argmax_random(scores, self.rng_))
        self._second_scores = scores
        return pair[0], pair[1]

    def _other_arm(self, x: np.ndarray, i: int) -> int:
        """The second posterior sample's best arm other than ``i`` (two different models)."""
        scores = np.array(self._second_scores, dtype=np.float64)
        scores[i] = -np.inf
        return argmax_random(scores, self.rng_)

    def _update(self, x: np.ndarray, i: int, j: int, y: float) -> None:
        z = duel_feature(x, self.arms_, i, j, self.feature_scale)
        self.history_.append(x, i, j, y, z)
        if self.sampler == "laplace" and i != j:       # z = 0 when i == j: no likelihood information
            self.theta_map_, self.cov_ = laplace_update(self.theta_map_, self.cov_, z, y, self.eta)
            n = self.history_.n
            if self.laplace_refit and n >= 64 and (n & (n - 1)) == 0:
                # PROPOSED option: one online Newton step per comparison never revisits old points,
                # so the MAP can drift from the batch MAP; re-fit it by batch Newton (warm start) each
                # time the history doubles (64, 128, ...), O(n d^2) each, O(T d^2) in total
                h = self.history_
                self.theta_map_, self.cov_ = laplace_fit(h.z[:n], h.y[:n], self.eta, self.sigma0,
                                                         theta0=self.theta_map_, n_iter=10,
                                                         prior_mean=self._prior_m, prior_prec=self._prior_P)
                self._chol = None           # refresh the Cholesky factor on the next draw

    def predict_scores(self, x: np.ndarray) -> np.ndarray:
        """Posterior-mean estimate of r(x, a) per arm, (K,): the Laplace mean, or the mean of the two
        SGLD chains. For routing to a single model without a duel."""
        x = self._check_x(x)
        with self._lock:
            theta = self.theta_map_ if self.sampler == "laplace" else self.theta_.mean(axis=0)
            return arm_scores(theta, x, self.arms_, self.feature_scale)

    # -- persistence ------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {**self.history_.arrays(), "theta": self.theta_, "theta_map": self.theta_map_, "cov": self.cov_}
        if self._chol is not None:      # the (possibly stale) factor in use, so a restored policy continues identically
            arrays["chol"] = self._chol
        return arrays, {"chol_t": self._chol_t}

    def _load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.history_ = DuelHistory.from_arrays(self.dim, arrays)
        h = self.history_
        h.set_z(self.feature_scale * h.x * (self.arms_[h.first] - self.arms_[h.second]))
        self.theta_ = arrays["theta"].astype(np.float64)
        self.theta_map_ = arrays["theta_map"].astype(np.float64)
        self.cov_ = arrays["cov"].astype(np.float64)
        self._chol = arrays["chol"].astype(np.float64) if "chol" in arrays else None
        self._chol32 = None if self._chol is None else self._chol.astype(np.float32)
        self._chol_t = int(meta.get("chol_t", -1)) if self._chol is not None else -1
