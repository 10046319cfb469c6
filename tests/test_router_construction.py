"""One construction path (issue 14): a ``caproute bench`` cell and ``caproute train`` build the
same router for the same arguments: the same hyper-parameters (MF's lam and RM-Softmax's
lambda_max follow --lambda in both, as do --param values), the same extra fit inputs (GraphRouter's
model-description features), and so the same fitted predictions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _evaluate_toy import toy_observations  # noqa: E402
from caproute.evaluate.bench import BenchConfig, _featurize, available_routers, fit_inputs  # noqa: E402
from caproute.evaluate.grid import Cell, grid_data, train_router  # noqa: E402
from caproute.evaluate.protocol import prepare_experiment  # noqa: E402
from caproute.routers.pipeline import train_pipeline  # noqa: E402

LAM, SEED = 0.3, 7
FAST = {"mlp": {"max_iter": 30}, "graphrouter": {"epochs": 5}, "rmsoftmax": {"epochs": 3}, "mirt": {"epochs": 3},
        "embedllm": {"epochs": 3}, "mf": {"epochs": 3}, "avengerspro": {"n_clusters": 2},
        "metarouter": {"n_estimators": 5}}


def _bench_router(name: str, params: dict):
    obs = toy_observations()
    exp = prepare_experiment(obs)
    config = BenchConfig(routers=(name,), lam=LAM, seed=SEED, router_params={name: params})
    X_train, X_test, enc = _featurize(exp, "tfidf")
    data = grid_data(exp, X_train, X_test, lam=LAM, fit_kw=fit_inputs(config, enc, exp.models))
    cell = Cell("main", name, "dars", 0, SEED, 0.2, params=tuple(sorted(params.items())))
    router, sup, *_ = train_router(cell, data)
    return exp, router, X_test


@pytest.mark.parametrize("name", [n for n in available_routers() if n != "metarouter"])
def test_bench_cell_and_train_build_identical_routers(name):
    params = dict(FAST.get(name, {}))
    exp, bench, X_test = _bench_router(name, params)
    pipe = train_pipeline(toy_observations(), router=name, supervision="dars", lam=LAM, beta=0.2, seed=SEED,
                          params=params)
    assert type(bench) is type(pipe.router)
    assert bench.get_params() == pipe.router.get_params()
    if name == "mf":
        assert bench.lam == LAM
    if name == "rmsoftmax":
        assert bench.lambda_max == LAM
    if name == "graphrouter":      # model-description features (not one-hot alone) in both
        a = bench.net_.model_features.numpy()
        b = pipe.router.net_.model_features.numpy()
        assert a.shape[1] > len(exp.models) and np.array_equal(a, b)
    got = bench.predict_stats(X_test, lam=LAM)
    want = pipe.predict_stats(exp.test_texts, lam=LAM)
    for k in ("mu_q", "mu_c", "sigma_q"):
        np.testing.assert_allclose(getattr(got, k), getattr(want, k), rtol=1e-5, atol=1e-6)


def test_param_ranges_are_named_errors():
    """--param values outside a family's declared range are a ConfigError naming the router and the
    parameter (issue 25), from the one factory; `caproute train --param k=0` says so instead of a
    traceback."""
    from typer.testing import CliRunner

    from caproute.cli import app
    from caproute.errors import ConfigError
    from caproute.routers.pipeline import make_router

    for name, params, msg in [("knn", {"k": 0}, "knn': k must be >= 1"), ("mlp", {"hidden": (64, 0)}, "hidden must be >= 1"),
                              ("mlp", {"lr": 0.0}, "lr must be > 0"), ("mf", {"lr": -1.0}, "lr must be > 0")]:
        with pytest.raises(ConfigError, match=msg):
            make_router(name, params=params)
    assert make_router("knn", params={"k": 1}).k == 1
    res = CliRunner().invoke(app, ["train", "--router", "knn", "--data", "builtin", "--out", "unused-dir",
                                   "--param", "k=0"])
    # a ConfigError (cli.main prints it as one line, exit 2), raised before any data is read
    assert isinstance(res.exception, ConfigError) and "k must be >= 1" in str(res.exception)
    assert not Path("unused-dir").exists()


def test_routers_listing_shows_ranges():
    from typer.testing import CliRunner

    from caproute.cli import app

    res = CliRunner().invoke(app, ["routers"], env={"COLUMNS": "400"})
    assert res.exit_code == 0 and "k >= 1" in res.output and "lr > 0" in res.output


def test_one_decision_rule():
    """A prediction becomes a decision in one place (Router.choose): the pipeline's decide and the
    bench's scoring agree with route() for every family."""
    from caproute.evaluate.bench import available_routers as names

    obs = toy_observations()
    for name in ["knn", "random", "cheapest", "mlp"]:
        assert name in names()
        pipe = train_pipeline(obs, router=name, params=dict(FAST.get(name, {})), seed=SEED)
        texts = ["what is 2+2", "write a poem about the sea"]
        X = pipe.features(texts)
        want = pipe.router.route(X, 0.1, 0.2)
        got = [d.index for d in pipe.decide(texts, 0.1, 0.2)]
        assert list(want) == got
