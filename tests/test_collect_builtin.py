"""The observation sets shipped in the package meet the DARS collection protocol (issues 4 and 13), and
the default set's headline numbers hold (issue 13: routing pays on it)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from caproute.data.source import builtin_path, load_observations

# name -> (collection script named in the datasheet, min train queries, min test queries)
SETS = {
    "tinypool-mix": ("scripts/collect_builtin_v2.sh", 80, 50),
    "tinypool-numeric": ("scripts/collect_builtin.sh", 150, 100),
}


@pytest.fixture(scope="module", params=sorted(SETS))
def named(request) -> tuple[str, pd.DataFrame]:
    df, name = load_observations(data=f"builtin:{request.param}")
    assert name == request.param
    return name, df


def test_builtin_is_real_collected_data_with_a_datasheet(named):
    name, obs = named
    folder = builtin_path(f"builtin:{name}").parent
    sheet = (folder / "DATASHEET.md").read_text()
    assert "sha256" in sheet and "Licences" in sheet and SETS[name][0] in sheet
    assert builtin_path(f"builtin:{name}").stat().st_size < 8 * 2**20  # a few MB
    rw = pd.read_parquet(folder / "rewrites.parquet")
    assert set(rw["source"]) <= {"model", "template"} and (rw["source"] == "model").any()
    assert obs["response_text"].notna().all() and obs["cost_known"].all()
    assert (obs["input_tokens"] > 0).all() and (obs["cost"] > 0).all()


def test_protocol_sizes(named):
    name, obs = named
    models = sorted(obs["model"].unique())
    assert len(models) >= 3
    train = obs[obs["split"] == "train"]
    test = obs[obs["split"] == "test"]
    assert train["query_id"].nunique() >= SETS[name][1] and test["query_id"].nunique() >= SETS[name][2]
    # every training (query, model) pair has the full 3 x 3 grid
    grid = train.groupby(["query_id", "model"]).agg(
        k=("prompt_variant_id", "nunique"), r=("decode_id", "nunique"), n=("score", "size")
    )
    assert len(grid) == train["query_id"].nunique() * len(models)
    assert (grid["k"] >= 3).all() and (grid["r"] >= 3).all() and (grid["n"] >= 9).all()
    # both test views for every (query, model) pair
    views = test.groupby(["query_id", "model", "observation_type"]).size().unstack(fill_value=0)
    assert len(views) == test["query_id"].nunique() * len(models)
    assert (views["prompt_variation"] >= 3).all() and (views["decoding_variation"] >= 3).all()
    assert (test.loc[test["observation_type"] == "decoding_variation", "prompt_variant_id"] == -1).all()
    assert not obs.duplicated(
        ["dataset", "split", "query_id", "model", "prompt_variant_id", "decode_id", "observation_type"]
    ).any()


def test_models_differ_and_vary_under_sampling(named):
    _, obs = named
    train = obs[obs["split"] == "train"]
    acc = train.groupby("model")["score"].mean()
    assert acc.max() - acc.min() > 0.05  # accuracies differ between models
    assert ((acc > 0) & (acc < 1)).all()
    # outcomes vary across the 9 observations of a pair for a real share of pairs
    spread = train.groupby(["query_id", "model"])["score"].agg(lambda s: s.max() - s.min())
    assert np.mean(spread > 0) > 0.1


# -- tinypool-mix: complementary strengths (headline numbers of its DATASHEET.md) ---------------------
@pytest.fixture(scope="module")
def mix():
    from caproute.evaluate.protocol import load_experiment

    return load_experiment(data="builtin")


def test_default_set_is_tinypool_mix_with_families():
    obs, name = load_observations(data="builtin")
    assert name == "tinypool-mix"
    q = pd.read_parquet(builtin_path().parent / "queries.parquet")
    assert set(q["task"]) == {"capitals", "sentiment", "arithmetic", "number_words", "first_letter", "antonyms"}
    assert set(obs["query_id"]) == set(q["query_id"])


def test_different_models_win_different_families():
    obs, _ = load_observations(data="builtin")
    q = pd.read_parquet(builtin_path().parent / "queries.parquet")[["query_id", "task"]]
    acc = obs.merge(q, on="query_id").pivot_table(index="task", columns="model", values="score", aggfunc="mean")
    winners = acc.idxmax(axis=1)
    assert winners["arithmetic"] == "smollm2-135m" and winners["number_words"] == "smollm2-135m"
    assert winners["capitals"] == "gemma3-270m"
    assert winners.nunique() >= 2


def test_oracle_headroom_over_the_best_fixed_model(mix):
    # deterministic functions of the shipped data (no seed): pinned to the datasheet's numbers
    gaps = {}
    for view, v in mix.views.items():
        u = v.utility(0.05)
        gaps[view] = float(u.max(axis=1).mean() - u.mean(axis=0).max())
    assert gaps["decode"] >= 0.10  # issue 13's target
    assert gaps["decode"] == pytest.approx(HEADLINE["oracle_gap_decode"], abs=1e-3)
    assert gaps["rewrite"] == pytest.approx(HEADLINE["oracle_gap_rewrite"], abs=1e-3)


HEADLINE = {"oracle_gap_decode": 0.2162, "oracle_gap_rewrite": 0.2010}  # DATASHEET.md, demo output


@pytest.mark.slow
def test_dars_routers_beat_the_best_fixed_model(mix):
    """Issue 13's target, pinned within the seed-to-seed spread measured over 5 DARS trainings."""
    from caproute.evaluate.bench import BenchConfig, run_bench

    routers = tuple(ROUTERS)
    res = run_bench(mix, BenchConfig(routers=routers, single_shot_runs=2, dars_runs=3, studies=("main",)),
                    progress=False)
    rows = res.rows
    fixed = rows[rows["router"] == "best_fixed"].set_index("view")["utility_mean"]
    for router, (lo_rew, lo_dec) in ROUTERS.items():
        d = rows[(rows["router"] == router) & (rows["supervision"] == "dars")].set_index("view")["utility_mean"]
        assert d["rewrite"] >= fixed["rewrite"] + 0.02 and d["decode"] >= fixed["decode"] + 0.02, router
        assert d["rewrite"] >= lo_rew and d["decode"] >= lo_dec, router


# router -> lower bounds of its DARS utility (rewrite, decode): the measured mean over 5 DARS trainings
# minus 3 of their standard deviations (deterministic routers: the value minus 0.01). Measured
# 2026-11-26 with `caproute bench --data builtin --routers all --single-shot-runs 10 --dars-runs 5`:
# best fixed 0.488 / 0.533; knn and embedllm 0.521 / 0.625 (std 0), rmsoftmax 0.560 / 0.689 (std
# 0.011 / 0.029), avengerspro 0.535 / 0.673 (std 0.012 / 0.017).
ROUTERS = {"knn": (0.511, 0.615), "embedllm": (0.511, 0.615), "rmsoftmax": (0.527, 0.60),
           "avengerspro": (0.50, 0.62)}
