"""The FGTS.CDB posterior and its samplers, as pure numpy functions (algorithms.md §B.4).

Posterior of sampler j in {1, 2} given the history S = {(x_i, a_i^1, a_i^2, y_i)}:

    p^j(theta | S) ∝ N(theta; 0, sigma0^2 I) · exp( - Σ_i L^j(theta; x_i, a_i^1, a_i^2, y_i) )
    L^j = eta · l( y_i <theta, z_i> ) - mu · max_a' <theta, phi(x_i, a') - phi(x_i, a_i^{3-j})>
    z_i = phi(x_i, a_i^1) - phi(x_i, a_i^2),   l(m) = log(1 + exp(-m))

The first term is the tempered Bradley-Terry log-loss; the second is the dueling feel-good term:
sampler j is rewarded for believing that some arm beats the arm the *other* sampler played.

Two samplers:

- SGLD (the paper's, constants PROPOSED): ``theta <- theta - (h/2) grad U + sqrt(h / beta) N(0, I)``
  with U = (|S|/|B|) Σ_{i in B} L^j_i + ||theta||^2 / (2 sigma0^2) on a minibatch B.
- Laplace fast path (PROPOSED, as a third-party implementation does): a Gaussian approximation of
  the tempered logistic posterior kept by online Newton steps, whose draws are importance-
  reweighted by exp(mu · Σ_i feel-good_i).

Arms are indexed 0..K-1; ``other`` is the index of the other sampler's arm in each past round.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from caproute.bandits.features import arm_scores


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function 1 / (1 + exp(-z)) = (1 + tanh(z / 2)) / 2."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def logistic_loss(m: np.ndarray) -> np.ndarray:
    """l(m) = log(1 + exp(-m)), stable for large |m|."""
    return np.logaddexp(0.0, -np.asarray(m, dtype=np.float64))


def prior_energy(theta: np.ndarray, sigma0: float, prior_mean: np.ndarray | None = None,
                 prior_prec: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Negative log prior (up to a constant) and its gradient.

    Default N(0, sigma0^2 I): ||theta||^2 / (2 sigma0^2). With ``prior_mean`` m0 and ``prior_prec``
    P0 (a warm-start prior, e.g. :func:`caproute.bandits.prior.offline_prior`): (theta - m0)^T P0
    (theta - m0) / 2; a mean without a precision keeps the isotropic I / sigma0^2.
    """
    r = theta if prior_mean is None else theta - prior_mean
    g = r / sigma0 ** 2 if prior_prec is None else prior_prec @ r
    return 0.5 * float(r @ g), g


def prior_precision(d: int, sigma0: float, prior_prec: np.ndarray | None = None) -> np.ndarray:
    """The prior's precision matrix: ``prior_prec`` or I / sigma0^2."""
    return np.eye(d) / sigma0 ** 2 if prior_prec is None else prior_prec


def feel_good(theta: np.ndarray, X: np.ndarray, arms: np.ndarray, other: np.ndarray,
              scale: float = 1.0) -> np.ndarray:
    """Feel-good term per past round: max_a' <theta, phi(x_i, a')> - <theta, phi(x_i, a_other_i)>.

    theta (d,) or (S, d); X (n, d); other (n,). Returns (n,) or (S, n); always >= 0.
    """
    n, k = X.shape[0], arms.shape[0]
    if theta.ndim == 1:
        s = arm_scores(theta, X, arms, scale)                              # (n, K)
        return s.max(axis=1) - s[np.arange(n), other]
    feats = (X[:, None, :] * arms[None, :, :]).reshape(n * k, -1)         # phi / scale, (n K, d)
    s = (theta @ feats.T).reshape(len(theta), n, k) * scale                # one GEMM, (S, n, K)
    return s.max(axis=2) - s[:, np.arange(n), other]


def potential(theta: np.ndarray, X: np.ndarray, arms: np.ndarray, first: np.ndarray,
              second: np.ndarray, y: np.ndarray, other: np.ndarray, *, eta: float, mu: float,
              sigma0: float, scale: float = 1.0, weight: float = 1.0, prior_mean: np.ndarray | None = None,
              prior_prec: np.ndarray | None = None) -> float:
    """U^j(theta) = weight · Σ_i L^j_i + ||theta||^2 / (2 sigma0^2) (the negative log posterior;
    the last term is :func:`prior_energy`, a warm-start prior when ``prior_mean``/``prior_prec`` are given)."""
    z = scale * X * (arms[first] - arms[second])
    lik = eta * logistic_loss(y * (z @ theta)).sum()
    fg = mu * feel_good(theta, X, arms, other, scale).sum()
    return float(weight * (lik - fg) + prior_energy(theta, sigma0, prior_mean, prior_prec)[0])


def potential_grad(theta: np.ndarray, X: np.ndarray, arms: np.ndarray, first: np.ndarray | None,
                   second: np.ndarray | None, y: np.ndarray, other: np.ndarray, *, eta: float, mu: float,
                   sigma0: float, scale: float = 1.0, weight: float = 1.0,
                   Z: np.ndarray | None = None, prior_mean: np.ndarray | None = None,
                   prior_prec: np.ndarray | None = None) -> np.ndarray:
    """Gradient of :func:`potential` in theta, (d,). X (n, d); first/second/other (n,); y (n,) in {+1, -1}.

    ``Z``: the duel features z_i = phi(x_i, a_first) - phi(x_i, a_second) when already known (then
    ``first``/``second`` are not read and may be None). The feel-good part is mu times :func:`feel_good_grad` (the arg-max arm's (sub)gradient).
    """
    z = scale * X * (arms[first] - arms[second]) if Z is None else Z       # (n, d)
    m = y * (z @ theta)
    g = (-eta * y * sigmoid(-m)) @ z                                       # d/dtheta of eta l(y z.theta)
    if mu != 0.0:
        g = g - mu * feel_good_grad(theta, X, arms, other, scale)
    return weight * g + prior_energy(theta, sigma0, prior_mean, prior_prec)[1]


def feel_good_grad(theta: np.ndarray, X: np.ndarray, arms: np.ndarray, other: np.ndarray,
                   scale: float = 1.0) -> np.ndarray:
    """Gradient of Σ_i feel-good_i(theta) (see :func:`feel_good`): Σ_i phi(x_i, a*_i) - phi(x_i, a_other_i), (d,).

    The feel-good max is piecewise linear; its (sub)gradient uses the arg-max arm a*_i of
    <theta, x_i ⊙ a> = <x_i, theta ⊙ a> (scale > 0 keeps the arg-max), and
    Σ_i x_i ⊙ (a*_i - a_other_i) = Σ_k a_k ⊙ (Σ_i (1[a*_i = k] - 1[other_i = k]) x_i): a (K, n) count
    matrix times X (faster than gathering the (n, d) rows a*_i).
    """
    n, k = X.shape[0], arms.shape[0]
    best = (X @ (arms * theta).T).argmax(axis=1)                           # (n,), a (K, d) product, not (n, d)
    count = np.zeros((k, n))
    cols = np.arange(n)
    count[best, cols] += 1.0                                               # (k_i, i) pairs are distinct
    count[other, cols] -= 1.0
    return scale * ((count @ X) * arms).sum(axis=0)


def tilted_mean(mean: np.ndarray, cov: np.ndarray, grad_fn: Callable[[np.ndarray], np.ndarray], mu: float,
                n_iter: int = 2) -> np.ndarray:
    """Mode of N(mean, cov) · exp(mu · FG(theta)) for a piecewise-linear FG with (sub)gradient
    ``grad_fn``: the fixed point theta = mean + mu cov grad FG(theta), from ``n_iter`` iterations.
    Where FG is linear this is exact: a Gaussian tilted by exp(mu g^T theta) is N(mean + mu cov g, cov)."""
    theta = mean
    for _ in range(max(int(n_iter), 1)):
        theta = mean + mu * (cov @ grad_fn(theta))
    return theta


def sgld_step_size(t: int, h0: float = 1e-3, decay: float = 100.0) -> float:
    """PROPOSED SGLD step h_t = h0 / (1 + t / decay): shrinks as the history (and the curvature) grows."""
    return h0 / (1.0 + t / decay)


def sgld_chain(grad: Callable[[np.ndarray], np.ndarray], theta0: np.ndarray, n_steps: int, step: float,
               rng: np.random.Generator, inv_temp: float = 1.0, path: bool = False):
    """Run ``n_steps`` of Langevin dynamics theta <- theta - (h/2) grad(theta) + sqrt(h / inv_temp) N(0, I).

    ``grad`` may be stochastic (a minibatch estimate). Returns the last theta, or every iterate
    (n_steps, d) when ``path``. For a fixed step h the chain's stationary law approaches
    exp(-inv_temp · U) as h -> 0.
    """
    theta = np.array(theta0, dtype=np.float64, copy=True)
    noise_sd = np.sqrt(step / inv_temp)
    out = np.empty((n_steps, theta.size)) if path else None
    for k in range(n_steps):
        theta = theta - 0.5 * step * grad(theta) + noise_sd * rng.standard_normal(theta.size)
        if out is not None:
            out[k] = theta
    return out if path else theta


# ----------------------------------------------------------------------------------------------
# Laplace fast path
def laplace_update(theta: np.ndarray, cov: np.ndarray, z: np.ndarray, y: float, eta: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One online Newton step of the tempered logistic posterior for a new comparison (z, y).

    Precision H <- H + eta p (1 - p) z z^T with p = sigmoid(y <theta, z>) (Sherman-Morrison on the
    covariance), then theta <- theta - H^-1 grad. O(d^2). Returns new (theta, cov); inputs untouched.
    """
    m = y * float(z @ theta)
    p = 0.5 * (1.0 + math.tanh(0.5 * m))
    w = eta * p * (1.0 - p)
    cz = cov @ z
    denom = 1.0 + w * float(z @ cz)
    cov = cov - np.outer(cz, cz) * (w / denom)
    # H_new^-1 grad with grad = -eta (1 - p) y z, and cov_new @ z = cz / denom
    return theta + (eta * (1.0 - p) * y / denom) * cz, cov


def laplace_fit(Z: np.ndarray, y: np.ndarray, eta: float, sigma0: float, theta0: np.ndarray | None = None,
                n_iter: int = 20, tol: float = 1e-8, prior_mean: np.ndarray | None = None,
                prior_prec: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Batch Laplace approximation: MAP of eta Σ l(y_i <theta, z_i>) + ||theta||^2/(2 sigma0^2) by Newton,
    and the covariance (inverse Hessian) at the MAP. Z (n, d), y (n,). Returns (theta_map, cov).
    ``prior_mean``/``prior_prec``: a warm-start prior instead of N(0, sigma0^2 I) (:func:`prior_energy`)."""
    d = Z.shape[1]
    start = theta0 if theta0 is not None else prior_mean
    theta = np.zeros(d) if start is None else np.array(start, dtype=np.float64, copy=True)
    prior = prior_precision(d, sigma0, prior_prec)
    for _ in range(n_iter):
        m = y * (Z @ theta)
        p = sigmoid(m)
        g = Z.T @ (-eta * (1.0 - p) * y) + prior_energy(theta, sigma0, prior_mean, prior_prec)[1]
        H = prior + (Z * (eta * p * (1.0 - p))[:, None]).T @ Z
        step = np.linalg.solve(H, g)
        theta = theta - step
        if float(np.abs(step).max()) < tol:
            break
    m = y * (Z @ theta)
    p = sigmoid(m)
    H = prior + (Z * (eta * p * (1.0 - p))[:, None]).T @ Z
    return theta, np.linalg.inv(H)


def gaussian_draws(mean: np.ndarray, chol: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws of N(mean, L L^T) given the lower Cholesky factor L: (n, d), in L's dtype
    (pass a float32 factor for speed)."""
    u = rng.standard_normal((n, mean.size), dtype=chol.dtype if chol.dtype == np.float32 else np.float64)
    return mean.astype(u.dtype)[None, :] + u @ chol.T


def importance_pick(log_weights: np.ndarray, rng: np.random.Generator) -> int:
    """Sample one index with probability ∝ exp(log_weights) (self-normalised importance resampling)."""
    lw = np.asarray(log_weights, dtype=np.float64)
    w = np.exp(lw - lw.max())
    w /= w.sum()
    return int(rng.choice(lw.size, p=w))
