"""The offline warm-start prior of FGTS.CDB (caproute.bandits.prior) and its use by the policy,
the experiment grid and `duel init`: hand-computed cases, gradients, persistence, errors."""

from __future__ import annotations

import numpy as np
import pytest

from caproute.bandits.embeddings import EmbeddingSet
from caproute.bandits.environment import DuelEnvironment
from caproute.bandits.experiment import DuelSpec, run_duel
from caproute.bandits.features import arm_scores
from caproute.bandits.fgts import FGTSCDB
from caproute.bandits.policy import DuelingPolicy
from caproute.bandits.posterior import laplace_fit, potential, potential_grad
from caproute.bandits.prior import (
    offline_prior,
    soft_labels,
    soft_pairwise_hessian,
    soft_pairwise_objective,
)
from caproute.errors import ConfigError


def numeric_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def test_no_information_prior_by_hand():
    # one query x = (1, 1), arms e1 and e2, equal utilities: the soft label is 1/2, so the MAP is 0
    # (the gradient at 0 is sum (sigmoid(0) - 1/2) z = 0); the one pair has z = (1, -1), and with
    # eta = 4, weight = 1 (one query = one duel, one pair) the Hessian is I + 4 * 1/4 * z z^T
    # = [[2, -1], [-1, 2]], whose inverse is [[2, 1], [1, 2]] / 3.
    X = np.array([[1.0, 1.0]])
    arms = np.eye(2)
    mean, cov = offline_prior(X, arms, 1.0, np.array([[0.3, 0.3]]), bt_scale=0.1, eta=4.0)
    np.testing.assert_allclose(mean, 0.0, atol=1e-10)
    np.testing.assert_allclose(cov, np.array([[2.0, 1.0], [1.0, 2.0]]) / 3.0, atol=1e-12)
    # one query's K(K-1)/2 comparisons share its weight: with 3 identical-utility arms each of the 3
    # pairs gets eta * weight / 3
    arms3 = np.eye(3)
    _, cov3 = offline_prior(np.ones((1, 3)), arms3, 1.0, np.zeros((1, 3)), bt_scale=0.1, eta=3.0)
    H = np.eye(3)
    for k, j in ((0, 1), (0, 2), (1, 2)):
        z = arms3[k] - arms3[j]
        H += (3.0 / 3) * 0.25 * np.outer(z, z)
    np.testing.assert_allclose(cov3, np.linalg.inv(H), atol=1e-12)


def test_objective_gradient_and_hessian_match_finite_differences():
    rng = np.random.default_rng(1)
    X, arms, U = rng.normal(size=(7, 4)), rng.normal(size=(3, 4)), rng.normal(size=(7, 3))
    P = soft_labels(U, 0.5)
    np.testing.assert_allclose(P + P.transpose(0, 2, 1), 1.0)
    m0, P0 = rng.normal(size=4), np.diag([1.0, 2.0, 3.0, 4.0])
    theta = rng.normal(size=4)
    kw = {"weight": 0.7, "sigma0": 1.3}
    val, grad = soft_pairwise_objective(theta, X, arms, 1.5, P, **kw)
    np.testing.assert_allclose(grad, numeric_grad(lambda t: soft_pairwise_objective(t, X, arms, 1.5, P, **kw)[0],
                                                  theta), rtol=1e-5, atol=1e-6)
    _, g2 = soft_pairwise_objective(theta, X, arms, 1.5, P, prior_mean=m0, prior_prec=P0)
    np.testing.assert_allclose(g2, numeric_grad(lambda t: soft_pairwise_objective(
        t, X, arms, 1.5, P, prior_mean=m0, prior_prec=P0)[0], theta), rtol=1e-5, atol=1e-6)
    H = soft_pairwise_hessian(theta, X, arms, 1.5, chunk=2, **kw)
    num = np.stack([numeric_grad(lambda t, i=i: soft_pairwise_objective(t, X, arms, 1.5, P, **kw)[1][i], theta)
                    for i in range(4)])
    np.testing.assert_allclose(H, num, rtol=1e-4, atol=1e-5)


def test_prior_mean_is_the_map_and_points_like_the_truth():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 5))
    arms = rng.normal(size=(4, 5))
    theta_star = rng.normal(size=5)
    U = 0.1 * arm_scores(theta_star, X, arms)
    eta, weight = 2.0, 1.0
    mean, cov = offline_prior(X, arms, 1.0, U, bt_scale=0.1, eta=eta, weight=weight)
    w = eta * weight / 6          # 4 arms: 6 pairs share each query's weight
    _, g = soft_pairwise_objective(mean, X, arms, 1.0, soft_labels(U, 0.1), weight=w)
    assert np.abs(g).max() < 1e-4                                       # converged MAP
    cos = float(mean @ theta_star / np.linalg.norm(mean) / np.linalg.norm(theta_star))
    assert cos > 0.95
    np.testing.assert_allclose(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() > 0 and np.linalg.eigvalsh(cov).max() <= 1.0 + 1e-12   # tighter than N(0, I)
    # twice the weight: a tighter prior
    _, cov2 = offline_prior(X, arms, 1.0, U, bt_scale=0.1, eta=eta, weight=2 * weight)
    assert np.trace(cov2) < np.trace(cov)


def test_offline_prior_errors():
    X, arms = np.ones((2, 3)), np.eye(3)
    with pytest.raises(ConfigError, match="utilities must be"):
        offline_prior(X, arms, 1.0, np.zeros((2, 2)), 0.1, eta=1.0)
    with pytest.raises(ConfigError, match="NaN"):
        offline_prior(X, arms, 1.0, np.array([[0, np.nan, 0], [0, 0, 0]]), 0.1, eta=1.0)
    with pytest.raises(ConfigError, match="> 0"):
        offline_prior(X, arms, 1.0, np.zeros((2, 3)), 0.1, eta=1.0, weight=0.0)
    with pytest.raises(ConfigError, match="2 arms"):
        offline_prior(X, arms[:1], 1.0, np.zeros((2, 1)), 0.1, eta=1.0)


def test_posterior_functions_with_a_prior():
    rng = np.random.default_rng(3)
    k, d, n = 3, 4, 6
    X, arms = rng.normal(size=(n, d)), rng.normal(size=(k, d))
    first, second = rng.integers(0, k, n), rng.integers(0, k, n)
    y, other = rng.choice([-1.0, 1.0], n), rng.integers(0, k, n)
    m0 = rng.normal(size=d)
    A = rng.normal(size=(d, d))
    P0 = A @ A.T + d * np.eye(d)
    theta = rng.normal(size=d)
    kw = {"eta": 2.0, "mu": 0.0, "sigma0": 1.0, "scale": 1.5, "prior_mean": m0, "prior_prec": P0}
    np.testing.assert_allclose(
        potential_grad(theta, X, arms, first, second, y, other, **kw),
        numeric_grad(lambda t: potential(t, X, arms, first, second, y, other, **kw), theta), rtol=1e-5, atol=1e-6)
    # no data: the Laplace fit returns the prior itself
    mean, cov = laplace_fit(np.zeros((0, d)), np.zeros(0), 2.0, 1.0, prior_mean=m0, prior_prec=P0)
    np.testing.assert_allclose(mean, m0, atol=1e-10)
    np.testing.assert_allclose(cov, np.linalg.inv(P0), atol=1e-12)


def prior_for(d, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d))
    return rng.normal(size=d), np.linalg.inv(A @ A.T + d * np.eye(d))


@pytest.mark.parametrize("sampler", ["laplace", "sgld"])
def test_policy_starts_from_the_prior_and_round_trips(tmp_path, sampler):
    rng = np.random.default_rng(4)
    k, d = 3, 5
    arms = rng.normal(size=(k, d))
    m0, c0 = prior_for(d)
    pol = FGTSCDB(arms, sampler=sampler, eta=4.0, mu=0.0, seed=0, prior_mean=m0, prior_cov=c0, n_sgld=5,
                  n_sgld_warm=5)
    x = rng.normal(size=d)
    if sampler == "laplace":     # before any feedback the point estimate is the prior mean
        np.testing.assert_allclose(pol.predict_scores(x), arm_scores(m0, x, arms))
    for _ in range(5):
        i, j = pol.select(x)
        pol.update(x, i, (i + 1) % k, 1)
    pol.save(tmp_path / "p")
    back = DuelingPolicy.load(tmp_path / "p")
    np.testing.assert_array_equal(back.prior_mean, m0)
    np.testing.assert_array_equal(back.prior_cov, c0)
    xs = rng.normal(size=(6, d))
    assert [pol.select(z) for z in xs] == [back.select(z) for z in xs]
    # reset forgets the feedback, not the prior
    back.reset()
    np.testing.assert_array_equal(back.theta_map_, m0)
    np.testing.assert_array_equal(back.cov_, c0)
    # without a prior nothing extra is stored
    plain = FGTSCDB(arms, sampler=sampler, seed=0)
    plain.save(tmp_path / "plain")
    again = DuelingPolicy.load(tmp_path / "plain")
    assert again.prior_mean is None and again.prior_cov is None
    np.testing.assert_array_equal(again.theta_map_, np.zeros(d))


def test_refit_keeps_the_prior():
    rng = np.random.default_rng(5)
    k, d = 4, 5
    arms = rng.normal(size=(k, d))
    m0, c0 = prior_for(d, seed=1)
    pol = FGTSCDB(arms, sampler="laplace", feel_good="tilt", eta=4.0, mu=0.0, laplace_refit=True, seed=0,
                  prior_mean=m0, prior_cov=c0)
    theta_star = rng.normal(size=d)
    for _ in range(64):
        x = rng.normal(size=d)
        i, j = rng.choice(k, size=2, replace=False)
        y = 1 if float(theta_star @ (x * (arms[i] - arms[j]))) > 0 else -1
        pol.update(x, int(i), int(j), y)
    h = pol.history_
    batch, _ = laplace_fit(h.z, h.y, 4.0, 1.0, prior_mean=m0, prior_prec=np.linalg.inv(c0), n_iter=50)
    np.testing.assert_allclose(pol.theta_map_, batch, atol=1e-6)
    plain, _ = laplace_fit(h.z, h.y, 4.0, 1.0, n_iter=50)
    assert np.abs(plain - batch).max() > 1e-3


def test_bad_priors_are_named_errors():
    arms = np.eye(3)
    m0, c0 = prior_for(3)
    with pytest.raises(ConfigError, match="both or neither"):
        FGTSCDB(arms, prior_mean=m0)
    with pytest.raises(ConfigError, match="must be"):
        FGTSCDB(arms, prior_mean=np.zeros(2), prior_cov=c0)
    with pytest.raises(ConfigError, match="positive definite"):
        FGTSCDB(arms, prior_mean=m0, prior_cov=-np.eye(3))
    with pytest.raises(ConfigError, match="symmetric"):
        FGTSCDB(arms, prior_mean=m0, prior_cov=np.array([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(ConfigError, match="NaN"):
        FGTSCDB(arms, prior_mean=np.array([np.nan, 0, 0]), prior_cov=np.eye(3))
    with pytest.raises(ConfigError, match="prior-weight"):
        DuelSpec(prior_weight=0.0).validate()


def linear_env(n=300, k=5, d=8, seed=0):
    """r* = <theta*, x ⊙ a> exactly (the learner's model class), two categories."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    arms = rng.normal(size=(k, d))
    arms /= np.linalg.norm(arms, axis=1, keepdims=True)
    theta_star = 3.0 * rng.normal(size=d)
    u = arm_scores(theta_star, X, arms) / 10.0
    env = DuelEnvironment("linear", np.array([f"q{i}" for i in range(n)]), [f"t{i}" for i in range(n)],
                          tuple(f"m{j}" for j in range(k)), u, u, np.zeros((n, k)), np.zeros((n, k)),
                          np.array(["c0", "c1"] * (n // 2)))
    return env, {"minilm": EmbeddingSet("minilm", X, arms, 1.0, "none", np.eye(k), ["c0", "c1"])}


def test_offline_prior_lowers_early_regret_on_a_linear_truth():
    env, embs = linear_env()
    common = {"rounds": 150, "seeds": 3, "policies": ("fgts-cdb",), "embeddings": ("minilm",), "eta": 4.0,
              "mu": 0.0, "references": False, "offline_fraction": 0.3}
    cold = run_duel(env, DuelSpec(**common), prepared=embs, progress=False)
    warm = run_duel(env, DuelSpec(**common, offline_prior=True), prepared=embs, progress=False)
    assert warm.meta.get("n_offline") == cold.meta.get("n_offline") > 0
    c = np.mean([x["average"][:50].sum() for x in cold.cells])
    w = np.mean([x["average"][:50].sum() for x in warm.cells])
    assert w < 0.5 * c, (w, c)
    assert warm.to_meta()["spec"]["offline_prior"] is True
