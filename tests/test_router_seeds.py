"""Seeds reach every stochastic router family (issue 24.5): the same seed gives the same fit, a
different seed a different fit, and the bench gives each DARS run its own router seed."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from tests.test_router_conformance import synthetic

from caproute.routers.base import REGISTRY, get_router_class

get_router_class("knn")   # registers every family
#: families whose training is random (they take a seed); the rest must be deterministic
STOCHASTIC = sorted(n for n in REGISTRY if "seed" in inspect.signature(get_router_class(n).__init__).parameters)
DETERMINISTIC = sorted(set(REGISTRY) - set(STOCHASTIC))


@pytest.fixture(autouse=True)
def _threads():
    import torch

    torch.set_num_threads(1)


def _fit(name, seed=None):
    X, sup, _ = synthetic(n=90)
    r = get_router_class(name)() if seed is None else get_router_class(name)(seed=seed)
    p = r.fit(X, sup).predict_stats(X, lam=0.05)
    # the predictions and the routes (the random baseline's seed only moves its routes)
    return np.concatenate([p.mu_q.ravel(), p.mu_c.ravel(), p.sigma_q.ravel(), r.route(X, 0.05, 0.2)])


def test_the_stochastic_families_are_the_learned_ones():
    assert {"mf", "mlp", "embedllm", "mirt", "rmsoftmax", "graphrouter"} <= set(STOCHASTIC)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_a_seed_sets_the_fit(name):
    a, b, c = _fit(name, 7), _fit(name, 7), _fit(name, 8)
    np.testing.assert_array_equal(a, b)                    # same seed: the same fit
    assert np.abs(a - c).max() > 1e-6, f"{name}: seeds 7 and 8 gave the same fit"


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_the_other_families_are_deterministic(name):
    np.testing.assert_array_equal(_fit(name), _fit(name))


def test_each_dars_run_of_the_bench_trains_with_its_own_seed():
    from caproute.evaluate.bench import BenchConfig, build_cells, dars_runs_of
    from caproute.evaluate.grid import router_seed

    config = BenchConfig(routers=("mf", "knn"), single_shot_runs=2, dars_runs=3, studies=("main",))
    cells = [c for c in build_cells(config, (1, 1)) if c.supervision == "dars"]
    mf = sorted(router_seed(c) for c in cells if c.router == "mf")
    assert dars_runs_of(config, "mf") == 3 and mf == [config.seed, config.seed + 1, config.seed + 2]
    assert dars_runs_of(config, "knn") == 1     # no seed: one deterministic training
