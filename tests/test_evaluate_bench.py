"""The bench grid: hand-computed rows on a toy dataset, seeds and feature alignment in the cells,
the studies' cells, and identical numbers for jobs = 1 and jobs = 2."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _evaluate_toy import EXPECTED, toy_observations  # noqa: E402
from caproute.errors import ConfigError  # noqa: E402
from caproute.evaluate.bench import (  # noqa: E402
    BenchConfig,
    build_cells,
    default_pair,
    kxr_protocols,
    resolve_routers,
    run_bench,
)
from caproute.evaluate.protocol import load_experiment, prepare_experiment  # noqa: E402
from caproute.routers.base import REGISTRY, Router, StatsPrediction  # noqa: E402
from caproute.supervise.ablations import build_supervision  # noqa: E402

FITS: list[dict] = []


class AlwaysRouter(Router):
    """Test router: always predicts model ``index`` best; records what fit() received."""

    name = "test_always"

    def __init__(self, index: int = 1, seed: int = 0):
        self.index = index
        self.seed = seed

    def fit(self, X, supervision):
        X = np.asarray(X.toarray() if hasattr(X, "toarray") else X)
        FITS.append({"seed": self.seed, "kind": supervision.kind, "beta": supervision.beta,
                     "query_ids": supervision.query_ids.tolist(), "x0": X[:, 0].tolist(),
                     "mu_q": supervision.mu_q.copy(), "n": None if supervision.n is None else supervision.n.copy()})
        self.models_ = supervision.models
        return self

    def predict_stats(self, X, lam=None):
        n, m = X.shape[0], len(self.models_)
        mu_q = np.zeros((n, m))
        mu_q[:, self.index] = 1.0
        return StatsPrediction(self.models_, mu_q, np.zeros((n, m)), np.zeros((n, m)))

    def _state(self):
        return {}, {}

    def _load_state(self, arrays, meta):
        pass


@pytest.fixture
def always_router():
    REGISTRY[AlwaysRouter.name] = AlwaysRouter
    FITS.clear()
    yield AlwaysRouter.name
    REGISTRY.pop(AlwaysRouter.name, None)
    FITS.clear()


def _toy_features(exp):
    # feature 0 = position of the query in the sorted id list, so a fit can check row alignment
    X_train = np.column_stack([np.arange(len(exp.train_query_ids)), np.ones(len(exp.train_query_ids))])
    X_test = np.column_stack([np.arange(len(exp.test_query_ids)), np.ones(len(exp.test_query_ids))])
    return X_train.astype(np.float32), X_test.astype(np.float32)


def _toy_bench(router, **kw):
    exp = prepare_experiment(toy_observations())
    X_train, X_test = _toy_features(exp)
    config = BenchConfig(routers=(router,), **{"single_shot_runs": 3, "studies": ("main", "pareto", "pair"), **kw})
    return exp, run_bench(exp, config, X_train=X_train, X_test=X_test, progress=False)


def test_rows_by_hand(always_router):
    _, res = _toy_bench(always_router)
    rows = res.rows.set_index(["router", "supervision", "view"])
    for sup, n in (("single", 3), ("dars", 5)):   # DARS: --dars-runs 5 trainings (seeds 42..46)
        for view in ("rewrite", "decode"):
            r = rows.loc[(always_router, sup, view)]
            u, q = EXPECTED["always_b"][view]
            assert r["utility_mean"] == pytest.approx(u) and r["quality_mean"] == pytest.approx(q)
            assert r["utility_std"] == 0.0 and r["n_runs"] == n
    ref = res.rows[res.rows["supervision"].isna()].set_index(["router", "view"])
    assert ref.loc[("best_fixed", "decode"), "utility_mean"] == pytest.approx(EXPECTED["best_fixed"]["decode"][0])
    assert ref.loc[("oracle", "decode"), "utility_mean"] == pytest.approx(EXPECTED["oracle"]["decode"][0])
    js = res.json_rows()
    assert {"router", "supervision", "view", "utility_mean", "utility_std", "quality_mean", "n_runs"} <= set(js[0])
    assert {r["supervision"] for r in js} == {"single", "dars", None}
    assert {r["router"] for r in js} == {always_router, "best_fixed", "oracle"}


def test_cells_get_seeded_single_shot_sets_and_aligned_features(always_router):
    exp, _ = _toy_bench(always_router)
    train = exp.train_obs
    singles = [f for f in FITS if f["kind"] == "single"]
    assert [f["seed"] for f in singles] == [42, 43, 44]
    for run, f in enumerate(singles):
        expected = build_supervision(train, variant="single", seed=42 + run, normalizer=exp.normalizer)
        assert f["mu_q"] == pytest.approx(expected.mu_q)
        assert f["beta"] == 0.0
    dars = [f for f in FITS if f["kind"] == "dars"]
    assert [f["seed"] for f in dars] == [42, 43, 44, 45, 46] and all(f["beta"] == 0.2 for f in dars)
    for f in FITS:   # feature row i belongs to supervision row i
        assert [exp.train_query_ids[int(x)] for x in f["x0"]] == f["query_ids"]


def test_kxr_and_beta_cells(always_router):
    _, res = _toy_bench(always_router, studies=("main", "kxr", "beta"), kxr_protocols=((1, 1), (2, 1)),
                        kxr_subsamples=2, betas=(0.0, 0.2, 0.5))
    kx = [f for f in FITS if f["kind"] == "dars" and f["n"] is not None and f["n"].max() < 4]
    # (1,1) and (2,1) subsamples plus the full 2 x 2 grid (4 obs/pair, not listed here)
    assert sorted({int(f["n"].max()) for f in kx}) == [1, 2]
    assert sorted(set(res.kxr["observations_per_pair"])) == [1, 2, 4]
    assert set(res.kxr["n_subsamples"]) == {2}
    betas = sorted(f["beta"] for f in FITS if f["kind"] == "dars")
    assert 0.0 in betas and 0.5 in betas
    assert sorted(set(res.beta["beta"])) == [0.0, 0.2, 0.5]


def test_pareto_and_two_model_tables(always_router):
    _, res = _toy_bench(always_router, lambdas=(0.0, 0.05))
    p = res.pareto.set_index(["router", "lam", "view"])
    assert p.loc[("fixed:b", 0.05, "rewrite"), "cost"] == pytest.approx(0.5)
    assert p.loc[("fixed:b", 0.05, "rewrite"), "quality"] == pytest.approx(5 / 6)
    assert bool(p.loc[("fixed:b", 0.05, "rewrite"), "best_fixed"])
    assert p.loc[("oracle", 0.05, "decode"), "utility"] == pytest.approx(EXPECTED["oracle"]["decode"][0])
    mine = res.pareto[(res.pareto["router"] == always_router) & (res.pareto["supervision"] == "dars")]
    assert len(mine) == 4      # 2 lambdas x 2 views
    # a constant preference for the strong model: the curve is the straight weak-strong line;
    # in the decode view both models have mean quality 2/3, so APGR is undefined
    pair = res.pair.set_index(["supervision", "view"])
    assert pair.loc[("dars", "rewrite"), "apgr_mean"] == pytest.approx(0.5)
    assert np.isnan(pair.loc[("dars", "decode"), "apgr_mean"])
    assert res.meta["pair"] == ["b", "a"]


def test_default_pair_and_kxr_protocols():
    assert default_pair(prepare_experiment(toy_observations())) == (1, 0)
    # three models: strong = best training quality; weak = the cheaper of the other two
    obs = toy_observations()
    extra = obs[obs["model"] == "a"].assign(model="c", cost=lambda d: d["cost"] * 0.5)
    extra.loc[extra["split"] == "train", "score"] = 0.0
    exp = prepare_experiment(pd.concat([obs, extra], ignore_index=True))
    assert [exp.models[i] for i in default_pair(exp)] == ["b", "c"]
    proposed = ((1, 1), (1, 3), (3, 1), (2, 2), (3, 3), (5, 5))
    assert kxr_protocols(proposed, (1, 7)) == [(1, 1), (1, 2), (1, 3), (1, 5), (1, 7)]
    assert kxr_protocols(proposed, (5, 5)) == [(1, 1), (1, 3), (3, 1), (2, 2), (3, 3), (5, 5)]


def test_build_cells_counts():
    config = BenchConfig(routers=("knn", "random"), single_shot_runs=4, kxr_subsamples=3,
                         kxr_protocols=((1, 1), (3, 3)), betas=(0.0, 0.2, 0.5))
    cells = build_cells(config, (3, 3))
    per = pd.Series([(c.study, c.router) for c in cells]).value_counts()
    assert per[("main", "knn")] == 5 and per[("ablation", "knn")] == 5
    assert per[("kxr", "knn")] == 2 * 3 and per[("beta", "knn")] == 2
    assert ("kxr", "random") not in per.index           # baselines skip the studies by default
    assert ("ablation", "random") not in per.index
    config.runs_by_router = {"random": 2}
    # 2 single-shot sets + 5 DARS trainings (random takes a seed; knn does not: one DARS cell)
    assert sum(c.router == "random" for c in build_cells(config, (3, 3))) == 2 + 5
    assert len({c for c in cells}) == len(cells)


def test_resolve_routers_errors():
    with pytest.raises(ConfigError, match="unknown router 'nope'"):
        resolve_routers("knn,nope")
    with pytest.raises(ConfigError, match="reference row"):
        resolve_routers("oracle")
    assert "knn" in resolve_routers("all")


def test_same_numbers_for_jobs_1_and_2():
    exp = load_experiment(data="builtin")

    def run(jobs):
        config = BenchConfig(routers=("knn", "random"), single_shot_runs=3, kxr_subsamples=2,
                             kxr_protocols=((1, 1), (3, 3)), betas=(0.0, 0.2), lambdas=(0.0, 0.05), jobs=jobs)
        return run_bench(exp, config, progress=False)

    one, two = run(1), run(2)
    pd.testing.assert_frame_equal(one.runs, two.runs)
    pd.testing.assert_frame_equal(one.rows, two.rows)
    pd.testing.assert_frame_equal(one.pareto, two.pareto)
    pd.testing.assert_frame_equal(one.pair, two.pair)
    assert len(one.runs) > 0


@pytest.mark.slow
def test_ray_engine_gives_the_local_numbers():
    ray = pytest.importorskip("ray")
    exp = load_experiment(data="builtin")

    def run(engine):
        config = BenchConfig(routers=("knn",), single_shot_runs=2, studies=("main",), engine=engine)
        return run_bench(exp, config, progress=False)

    try:
        local, remote = run("local"), run("ray")
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(local.runs, remote.runs)


@pytest.mark.slow
def test_minilm_features(monkeypatch, tmp_path):
    monkeypatch.setenv("CAPROUTE_CACHE_DIR", str(tmp_path))
    exp = load_experiment(data="builtin")
    res = run_bench(exp, BenchConfig(routers=("knn",), single_shot_runs=2, studies=("main",), features="minilm"),
                    progress=False, cache=True)
    assert res.meta["encoder"].startswith("minilm")
    assert set(res.rows["view"]) == {"rewrite", "decode"}


@pytest.mark.slow
def test_demo_bench_end_to_end(monkeypatch, tmp_path):
    from rich.console import Console

    import caproute.demo as demo

    monkeypatch.setattr(demo, "DEMO_SINGLE_SHOT_RUNS", 2)
    monkeypatch.setattr(demo, "DEMO_KXR_SUBSAMPLES", 1)
    with open(tmp_path / "log.txt", "w") as log:
        out = demo.run_demo_bench(tmp_path / "bench", Console(file=log), jobs=1)
    routers = {r["router"] for r in out["rows"]}
    assert {"mlp", "knn", "embedllm", "avengerspro", "graphrouter", "mirt", "rmsoftmax"} <= routers
    assert (tmp_path / "bench" / "report.html").exists()
    assert "Full DARS" in (tmp_path / "bench" / "report.md").read_text()


def test_fast_single_shot_supervision_equals_build_supervision():
    from caproute.evaluate.grid import grid_data, single_shot_supervision

    exp = load_experiment(data="builtin")
    data = grid_data(exp, None, None, lam=0.05)
    for seed in (0, 42, 43, 1234):
        fast = single_shot_supervision(data, seed)
        ref = build_supervision(exp.train_obs, variant="single", seed=seed, normalizer=exp.normalizer,
                                models=exp.models)
        assert fast.query_ids.tolist() == ref.query_ids.tolist() and fast.models == ref.models
        np.testing.assert_array_equal(fast.mu_q, ref.mu_q)
        np.testing.assert_array_equal(fast.mu_c, ref.mu_c)
        np.testing.assert_array_equal(fast.sigma_q, ref.sigma_q)
        np.testing.assert_array_equal(fast.n, ref.n)
        assert (fast.kind, fast.beta) == (ref.kind, ref.beta)
    # a pair without observations: no fast path (the general path raises the usual error)
    obs = exp.train_obs
    first = (obs["query_id"] == exp.train_query_ids[0]) & (obs["model"] == exp.models[0])
    exp.train_obs = obs[~first]
    assert single_shot_supervision(grid_data(exp, None, None, lam=0.05), 0) is None
