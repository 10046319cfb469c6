"""FGTS.CDB and the baselines on a synthetic linear Bradley-Terry environment with known theta;
the posterior samplers against closed forms; persistence; thread safety; hand-computed regret."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from caproute.bandits.baselines import EpsGreedyPolicy, FixedPolicy, MaxInPPolicy, UniformPolicy
from caproute.bandits.features import arm_scores, auto_feature_scale, duel_feature, phi, phi_batch
from caproute.bandits.fgts import FGTSCDB
from caproute.bandits.policy import DuelingPolicy
from caproute.bandits.posterior import (
    feel_good,
    gaussian_draws,
    laplace_fit,
    laplace_update,
    potential,
    potential_grad,
    sgld_chain,
)
from caproute.bandits.regret import average_regret, cumulative, weak_regret
from caproute.errors import ConfigError

D, K = 8, 6


def synthetic(seed: int = 0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=D) * 3.0
    arms = rng.normal(size=(K, D))
    arms /= np.linalg.norm(arms, axis=1, keepdims=True)
    return theta, arms


def play(policy, theta, arms, T: int, seed: int) -> np.ndarray:
    """Per-round average regret of ``policy`` on a linear BT environment r = <theta, x ⊙ a>."""
    rng = np.random.default_rng(seed)
    reg = np.empty(T)
    for t in range(T):
        x = rng.normal(size=D)
        x /= np.linalg.norm(x)
        u = arm_scores(theta, x, arms)
        i, j = policy.select(x)
        y = 1 if rng.random() < 1.0 / (1.0 + np.exp(-(u[i] - u[j]))) else -1
        policy.update(x, i, j, y)
        reg[t] = u.max() - 0.5 * (u[i] + u[j])
    return reg


# -- regret (hand-computed) -----------------------------------------------------------------------
def test_regret_by_hand():
    u = np.array([[0.2, 0.9, 0.5], [1.0, 0.0, 0.4]])
    first, second = np.array([0, 1]), np.array([2, 2])
    # round 1: best 0.9, arms 0.2 and 0.5 -> 0.9 - 0.35 = 0.55; weak: 0.9 - 0.5 = 0.4
    # round 2: best 1.0, arms 0.0 and 0.4 -> 1.0 - 0.2 = 0.8; weak: 1.0 - 0.4 = 0.6
    np.testing.assert_allclose(average_regret(u, first, second), [0.55, 0.8])
    np.testing.assert_allclose(weak_regret(u, first, second), [0.4, 0.6])
    np.testing.assert_allclose(cumulative([0.55, 0.8]), [0.55, 1.35])
    assert average_regret(u, np.array([1, 0]), np.array([1, 0])).sum() == 0.0


def test_feature_map_by_hand():
    x = np.array([1.0, 2.0, 0.0])
    arms = np.array([[1.0, 1.0, 1.0], [0.0, 0.5, 2.0]])
    np.testing.assert_allclose(phi(x, arms, 2.0), [[2.0, 4.0, 0.0], [0.0, 2.0, 0.0]])
    np.testing.assert_allclose(phi_batch(x[None], arms)[0], phi(x, arms))
    theta = np.array([1.0, -1.0, 3.0])
    np.testing.assert_allclose(arm_scores(theta, x, arms), [1.0 - 2.0, -1.0])
    np.testing.assert_allclose(duel_feature(x, arms, 0, 1), [1.0, 1.0, 0.0])
    # the only arm difference is (1, .5, -1); x ⊙ diff = (1, 1, 0), norm sqrt(2)
    assert auto_feature_scale(x[None], arms) == pytest.approx(1 / np.sqrt(2))


def test_feel_good_and_gradient_match_finite_differences():
    theta_true, arms = synthetic(1)
    rng = np.random.default_rng(2)
    n = 20
    X = rng.normal(size=(n, D))
    first, second = rng.integers(0, K, n), rng.integers(0, K, n)
    y = rng.choice([-1.0, 1.0], n)
    theta = rng.normal(size=D)
    fg = feel_good(theta, X, arms, second)
    assert (fg >= 0).all()
    s = X * theta @ arms.T
    np.testing.assert_allclose(fg, s.max(1) - s[np.arange(n), second])
    np.testing.assert_allclose(feel_good(theta[None], X, arms, second)[0], fg)
    kw = dict(eta=0.7, mu=0.3, sigma0=1.5, scale=1.3, weight=2.0)
    g = potential_grad(theta, X, arms, first, second, y, second, **kw)
    eps = 1e-6
    num = np.array([(potential(theta + eps * e, X, arms, first, second, y, second, **kw)
                     - potential(theta - eps * e, X, arms, first, second, y, second, **kw)) / (2 * eps)
                    for e in np.eye(D)])
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-5)


# -- samplers against closed forms --------------------------------------------------------------
def test_sgld_matches_gaussian_target():
    """SGLD on U = (theta - m)^T P (theta - m) / 2 samples N(m, P^-1) (small step, long chain)."""
    rng = np.random.default_rng(0)
    m = np.array([1.0, -2.0, 0.5])
    A = rng.normal(size=(3, 3))
    cov = A @ A.T / 3 + 0.5 * np.eye(3)
    P = np.linalg.inv(cov)
    path = sgld_chain(lambda th: P @ (th - m), np.zeros(3), 60_000, 0.01, rng, path=True)[5_000:]
    np.testing.assert_allclose(path.mean(axis=0), m, atol=0.1)
    np.testing.assert_allclose(np.cov(path.T), cov, atol=0.12 * np.abs(cov).max())


def test_sgld_inverse_temperature_scales_the_variance():
    rng = np.random.default_rng(1)
    path = sgld_chain(lambda th: th, np.zeros(2), 40_000, 0.01, rng, inv_temp=4.0, path=True)[2_000:]
    np.testing.assert_allclose(path.var(axis=0), [0.25, 0.25], rtol=0.15)


def test_laplace_online_matches_batch_on_gaussian_limit():
    """With many observations the online Newton steps reach the batch MAP and covariance."""
    rng = np.random.default_rng(3)
    d = 4
    theta_true = np.array([1.0, -0.5, 0.3, 0.0])
    Z = rng.normal(size=(3000, d)) * 0.5
    y = np.where(rng.random(3000) < 1 / (1 + np.exp(-(Z @ theta_true))), 1.0, -1.0)
    th_b, cov_b = laplace_fit(Z, y, eta=1.0, sigma0=1.0)
    th, cov = np.zeros(d), np.eye(d)
    for z, yy in zip(Z, y, strict=True):
        th, cov = laplace_update(th, cov, z, yy, 1.0)
    np.testing.assert_allclose(th, th_b, atol=0.05)
    np.testing.assert_allclose(cov, cov_b, atol=0.2 * np.abs(cov_b).max())
    np.testing.assert_allclose(th_b, theta_true, atol=0.25)


def test_gaussian_draws_have_the_given_moments():
    rng = np.random.default_rng(4)
    mean = np.array([0.5, -1.0])
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    draws = gaussian_draws(mean, np.linalg.cholesky(cov), 50_000, rng)
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.05)


# -- learning on a synthetic linear BT environment with known theta -----------------------------
@pytest.mark.parametrize("sampler,T", [("laplace", 1500), pytest.param("sgld", 1000, marks=pytest.mark.slow)])
def test_fgts_regret_sublinear_and_far_below_uniform(sampler, T):
    theta, arms = synthetic(0)
    fg, un = [], []
    for seed in (0, 1):
        fg.append(play(FGTSCDB(arms, sampler=sampler, horizon=T, seed=seed), theta, arms, T, seed))
        un.append(play(UniformPolicy(arms, seed=seed), theta, arms, T, seed))
    fg, un = np.mean(fg, axis=0), np.mean(un, axis=0)
    half = T // 2
    assert fg[half:].sum() < 0.6 * fg[:half].sum(), "regret does not flatten (not sublinear)"
    assert fg.sum() < 0.5 * un.sum(), f"FGTS.CDB {fg.sum():.1f} vs uniform {un.sum():.1f}"
    # uniform's regret grows linearly: both halves about equal
    assert un[half:].sum() == pytest.approx(un[:half].sum(), rel=0.15)


def test_baselines_learn_and_reference_is_flat():
    theta, arms = synthetic(0)
    T = 1000
    un = play(UniformPolicy(arms, seed=0), theta, arms, T, 0).sum()
    assert play(MaxInPPolicy(arms, seed=0), theta, arms, T, 0).sum() < 0.5 * un
    assert play(EpsGreedyPolicy(arms, seed=0), theta, arms, T, 0).sum() < 0.7 * un
    fixed = play(FixedPolicy(arms, arm=2, seed=0), theta, arms, 50, 0)
    assert (fixed >= 0).all()


# -- contract: select/update, save/load, thread safety ------------------------------------------
@pytest.mark.parametrize("make", [
    lambda a: FGTSCDB(a, sampler="sgld", seed=3), lambda a: FGTSCDB(a, sampler="laplace", seed=3),
    lambda a: UniformPolicy(a, seed=3), lambda a: FixedPolicy(a, arm=1), lambda a: EpsGreedyPolicy(a, seed=3),
    lambda a: MaxInPPolicy(a, seed=3)])
def test_save_load_round_trip_continues_identically(tmp_path, make):
    theta, arms = synthetic(0)
    policy = make(arms)
    play(policy, theta, arms, 40, 5)
    policy.save(tmp_path / "p")
    restored = DuelingPolicy.load(tmp_path / "p")
    assert type(restored) is type(policy) and restored.t_ == policy.t_ == 40
    assert restored.get_params().keys() == policy.get_params().keys()
    rng = np.random.default_rng(9)
    for _ in range(15):
        x = rng.normal(size=D)
        a, b = policy.select(x), restored.select(x)
        assert a == b
        policy.update(x, *a, 1)
        restored.update(x, *b, 1)


def test_load_rejects_tampered_state(tmp_path):
    _, arms = synthetic(0)
    FGTSCDB(arms, sampler="laplace").save(tmp_path / "p")
    f = tmp_path / "p" / "state.safetensors"
    blob = f.read_bytes()
    f.write_bytes(blob[:-8] + bytes(b ^ 0xFF for b in blob[-8:]))
    with pytest.raises(ConfigError, match="checksum"):
        DuelingPolicy.load(tmp_path / "p")
    with pytest.raises(ConfigError, match="not a saved policy"):
        DuelingPolicy.load(tmp_path / "missing")


def test_bad_calls_raise_clear_errors():
    _, arms = synthetic(0)
    p = FGTSCDB(arms, sampler="laplace")
    with pytest.raises(ValueError, match="dims"):
        p.select(np.zeros(D + 1))
    with pytest.raises(ValueError, match="feedback"):
        p.update(np.zeros(D), 0, 1, 0)
    with pytest.raises(ValueError, match="out of range"):
        p.update(np.zeros(D), 0, K, 1)
    with pytest.raises(ConfigError, match="sampler"):
        FGTSCDB(arms, sampler="mcmc")
    with pytest.raises(ConfigError, match="model names"):
        FGTSCDB(arms, models=["a"])
    with pytest.raises(ConfigError, match="no encoder"):
        p.embed("hello")


@pytest.mark.parametrize("sampler", ["laplace", "sgld"])
def test_concurrent_updates_lose_nothing(sampler):
    _, arms = synthetic(0)
    policy = FGTSCDB(arms, sampler=sampler, n_sgld=2, n_sgld_warm=2, seed=0)
    n_threads, per_thread = 8, 40
    barrier = threading.Barrier(n_threads)
    errors = []

    def worker(k):
        rng = np.random.default_rng(k)
        barrier.wait()
        try:
            for n in range(per_thread):
                x = rng.normal(size=D)
                i, j = policy.select(x)
                # encode the thread and step in x[0] so every update can be found afterwards
                x[0] = 1000 * k + n
                policy.update(x, i, j, 1 if n % 2 else -1)
        except Exception as e:  # pragma: no cover - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert policy.t_ == policy.history_.n == n_threads * per_thread
    assert sorted(policy.history_.x[:, 0].astype(int)) == sorted(1000 * k + n for k in range(n_threads)
                                                                   for n in range(per_thread))


@pytest.mark.slow
def test_embed_and_self_contained_save(tmp_path):
    """The server helper: embed a query with the policy's encoder; save with a copy of the encoder."""
    from caproute.bandits import embed_query, load_policy
    from caproute.features.minilm import minilm_path

    rng = np.random.default_rng(0)
    arms = rng.normal(size=(3, 384))
    policy = FGTSCDB(arms, ["a", "b", "c"], sampler="laplace", encoder=str(minilm_path()))
    x = embed_query(policy, "How many eggs are in 6 dozen?")
    assert x.shape == (384,) and np.linalg.norm(x) == pytest.approx(1.0)
    assert policy.embed(["one", "two"]).shape == (2, 384)
    i, j = policy.select(x)
    policy.update(x, i, j, 1)
    policy.save(tmp_path / "p", copy_encoder=True)
    assert (tmp_path / "p" / "encoder" / "model.safetensors").exists()
    restored = load_policy(tmp_path / "p")
    assert restored.encoder == str(tmp_path / "p" / "encoder")
    np.testing.assert_allclose(restored.embed("How many eggs are in 6 dozen?"), x, atol=1e-6)
    assert restored.select_models(x) == policy.select_models(x)


def test_laplace_refit_matches_the_batch_map_when_the_history_doubles():
    from caproute.bandits.fgts import FGTSCDB
    from caproute.bandits.posterior import laplace_fit

    rng = np.random.default_rng(0)
    k, d = 4, 5
    arms = rng.normal(size=(k, d))
    theta_star = rng.normal(size=d)
    pol = FGTSCDB(arms, sampler="laplace", feel_good="tilt", eta=4.0, mu=0.0, laplace_refit=True, seed=0)
    online = FGTSCDB(arms, sampler="laplace", feel_good="tilt", eta=4.0, mu=0.0, seed=0)
    for _ in range(64):
        x = rng.normal(size=d)
        i, j = rng.choice(k, size=2, replace=False)
        y = 1 if float(theta_star @ (x * (arms[i] - arms[j]))) > 0 else -1
        pol.update(x, int(i), int(j), y)
        online.update(x, int(i), int(j), y)
    h = pol.history_
    batch, _ = laplace_fit(h.z, h.y, 4.0, 1.0)
    np.testing.assert_allclose(pol.theta_map_, batch, atol=1e-6)
    assert np.abs(online.theta_map_ - batch).max() > 1e-3      # the one-step online MAP had drifted
