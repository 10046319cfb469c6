"""One conformance suite run against every registered router (scikit-learn style contract)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from caproute.errors import ConfigError
from caproute.routers.base import FORMAT_VERSION, REGISTRY, Router, StatsPrediction, get_router_class
from caproute.supervise.supervision import Supervision

get_router_class("knn")   # registers every family
ALL = sorted(REGISTRY)
#: Routers that do not read the query (by design): exempt from "beats random".
NOT_LEARNING = {"random", "cheapest"}
QUERY_BLIND = {"random", "cheapest", "best_fixed"}
#: Families whose predictions the spec clips to [0, 1] (DARS §A.10) and the baselines.
CLIPPED = {"mlp", "knn", "embedllm", "avengerspro", "graphrouter", "mirt", "best_fixed", "cheapest", "random"}


@pytest.fixture(autouse=True)
def _threads():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def synthetic(n: int = 150, d: int = 12, seed: int = 0, global_best: bool = False):
    """Three query clusters; in cluster j model j is best (or model 1 everywhere if global_best).

    Returns X (n, d), the Supervision and the true utility (n, 3) at lambda 0.05, beta 0.2.
    """
    centers = np.random.default_rng(1234).normal(0, 3, size=(3, d))   # the same problem for every seed
    rng = np.random.default_rng(seed)
    cl = rng.integers(0, 3, size=n)
    X = (centers[cl] + rng.normal(0, 0.5, size=(n, d))).astype(np.float32)
    mu_q = np.full((n, 3), 0.3)
    if global_best:
        mu_q[:, 1] = 0.8
    else:
        mu_q[np.arange(n), cl] = 0.9
    mu_q = np.clip(mu_q + rng.normal(0, 0.03, size=(n, 3)), 0, 1)
    mu_c = np.tile([0.1, 0.5, 0.9], (n, 1)) + rng.uniform(0, 0.05, size=(n, 3))
    sigma = np.clip(rng.uniform(0.0, 0.2, size=(n, 3)), 0, 1)
    sup = Supervision(np.array([f"q{i}" for i in range(n)]), ("m0", "m1", "m2"), mu_q, mu_c, sigma,
                      kind="dars", beta=0.2)
    return X, sup, sup.utility(0.05, 0.2)


@functools.cache
def fitted(name, n=150, seed=0, global_best=False):
    """A fitted router (shared between tests that only read it: fits are the slow part)."""
    X, sup, u = synthetic(n=n, seed=seed, global_best=global_best)
    return get_router_class(name)().fit(X, sup), X, sup, u


@pytest.mark.parametrize("name", ALL)
def test_params_round_trip(name):
    cls = get_router_class(name)
    r = cls()
    params = r.get_params()
    assert set(params) == set(cls._param_names())
    r2 = cls(**params)
    assert r2.get_params() == params
    assert r.set_params(**params) is r
    with pytest.raises(ValueError):
        r.set_params(no_such_parameter=1)
    json.dumps(params)   # saved in config.json


@pytest.mark.parametrize("name", ALL)
def test_fit_returns_self_shapes_and_ranges(name):
    X, sup, _ = synthetic()
    r = get_router_class(name)()
    assert r.fit(X, sup) is r
    assert r.models_ == sup.models
    pred = r.predict_stats(X[:7], lam=0.05)
    assert isinstance(pred, StatsPrediction)
    for a in (pred.mu_q, pred.mu_c, pred.sigma_q):
        assert a.shape == (7, 3)
        assert np.isfinite(a).all()
    assert (pred.sigma_q >= 0).all()
    if name in CLIPPED:
        for a in (pred.mu_q, pred.mu_c, pred.sigma_q):
            assert (a >= 0).all() and (a <= 1).all()
    if pred.kind == "policy":
        np.testing.assert_allclose(pred.mu_q.sum(axis=1), 1.0, rtol=1e-6)
    for lam, beta in [(0.0, 0.0), (0.05, 0.2), (1.0, 0.5), (10.0, 0.0)]:
        choice = r.route(X[:7], lam, beta)
        assert choice.shape == (7,)
        assert np.issubdtype(choice.dtype, np.integer)
        assert ((choice >= 0) & (choice < 3)).all()


@pytest.mark.parametrize("name", ALL)
def test_predict_before_fit_and_bad_input(name):
    r = get_router_class(name)()
    with pytest.raises(RuntimeError, match="not fitted"):
        r.predict_stats(np.zeros((2, 12), np.float32))
    X, sup, _ = synthetic()
    with pytest.raises(ValueError, match="rows"):
        r.fit(X[:-1], sup)
    r.fit(X, sup)
    with pytest.raises(ValueError, match="feature|shape|expect"):
        r.predict_stats(np.zeros((2, 5), np.float32))


@pytest.mark.parametrize("name", sorted(set(ALL) - {"random", "cheapest"}))
def test_one_router_serves_any_lambda(name):
    """A huge cost weight makes the cheapest model win; no cost weight the best-quality one."""
    r, X, sup, _ = fitted(name, global_best=True)
    cheap = r.route(X, lam=100.0, beta=0.0)
    free = r.route(X, lam=0.0, beta=0.0)
    if r.lambda_aware or r.predict_stats(X[:1], lam=0.05).kind == "policy":
        # policy routers read lambda as an input; trained on lambda' in [0, 0.1], 100 is far outside
        assert r.route(X, lam=0.0, beta=0.0).shape == (len(X),)
        return
    assert (cheap == 0).mean() > 0.9
    assert (free == 1).mean() > 0.9


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip(name, tmp_path):
    r, X, _, _ = fitted(name)
    r.save(tmp_path / "r")
    r2 = Router.load(tmp_path / "r")
    assert type(r2) is type(r) and r2.get_params() == r.get_params() and r2.models_ == r.models_
    p1, p2 = r.predict_stats(X, lam=0.05), r2.predict_stats(X, lam=0.05)
    for a, b in ((p1.mu_q, p2.mu_q), (p1.mu_c, p2.mu_c), (p1.sigma_q, p2.sigma_q)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(r.route(X, 0.05, 0.2), r2.route(X, 0.05, 0.2))
    assert type(r).load(tmp_path / "r").get_params() == r.get_params()


@pytest.mark.parametrize("name", ALL)
def test_corrupt_state_and_wrong_version(name, tmp_path):
    r, _, _, _ = fitted(name, n=60)
    d = r.save(tmp_path / "r")
    state = d / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[-1] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="checksum"):
        Router.load(d)
    d2 = r.save(tmp_path / "r2")
    cfg = json.loads((d2 / "config.json").read_text())
    cfg["format_version"] = FORMAT_VERSION + 1
    (d2 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="format_version"):
        Router.load(d2)
    with pytest.raises(ConfigError, match="not a saved router"):
        Router.load(tmp_path / "missing")


@pytest.mark.parametrize("name", ALL)
def test_deterministic_under_seed(name):
    r1, X, _, _ = fitted(name)
    X2, sup2, _ = synthetic()
    r2 = get_router_class(name)().fit(X2, sup2)       # an independent second fit
    p1, p2 = r1.predict_stats(X, lam=0.05), r2.predict_stats(X, lam=0.05)
    np.testing.assert_array_equal(p1.mu_q, p2.mu_q)
    np.testing.assert_array_equal(p1.mu_c, p2.mu_c)
    np.testing.assert_array_equal(r1.route(X, 0.05, 0.2), r2.route(X, 0.05, 0.2))


def _routed_utility(r, X, u):
    c = r.route(X, 0.05, 0.2)
    return u[np.arange(len(c)), c].mean()


@pytest.mark.parametrize("name", sorted(set(ALL) - NOT_LEARNING))
def test_learns_known_best_model(name):
    """One model is best everywhere: the router must find it far more often than chance."""
    r, _, _, _ = fitted(name, global_best=True)
    Xt, _, ut = synthetic(n=90, seed=1, global_best=True)
    assert _routed_utility(r, Xt, ut) > ut.mean() + 0.2     # ut.mean() = expected utility of random


@pytest.mark.parametrize("name", sorted(set(ALL) - QUERY_BLIND))
def test_learns_query_dependent_best_model(name):
    """The best model depends on the query's cluster: beats both random and the best fixed model."""
    r, _, _, _ = fitted(name, n=240)
    Xt, _, ut = synthetic(n=120, seed=1)
    fixed = ut.mean(axis=0).max()
    assert _routed_utility(r, Xt, ut) > fixed + 0.15


@pytest.mark.parametrize("name", [n for n in ALL if get_router_class(n).accepts_sparse])
def test_sparse_input_gives_dense_results(name):
    import scipy.sparse as sp

    r, X, _, _ = fitted(name)
    Xs = X.copy()
    Xs[np.abs(Xs) < 1.0] = 0.0                     # make it really sparse
    dense, sparse = r.predict_stats(Xs, lam=0.05), r.predict_stats(sp.csr_matrix(Xs), lam=0.05)
    np.testing.assert_allclose(sparse.mu_q, dense.mu_q, atol=1e-5)   # float32 sums in another order
    np.testing.assert_array_equal(r.route(sp.csr_matrix(Xs), 0.05, 0.2), r.route(Xs, 0.05, 0.2))
    np.testing.assert_array_equal(r.predict_stats(sp.csr_matrix(X[:3])).mu_c, r.predict_stats(X[:3]).mu_c)
