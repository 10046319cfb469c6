"""Dueling environments (observations and PandaLM pairs), Bradley-Terry fits, splits, streams and
the experiment grid (identical results for any --jobs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from caproute.bandits.bradley_terry import comparisons_from_labels, fit_bradley_terry
from caproute.bandits.embeddings import EmbeddingSet
from caproute.bandits.environment import (
    TIE,
    DuelEnvironment,
    environment_from_observations,
    environment_from_pairs,
    load_environment,
)
from caproute.bandits.experiment import (
    DuelSpec,
    full_information_logistic,
    greedy_regret,
    make_stream,
    pool_and_split,
    run_duel,
    split_offline,
    stratified_subsample,
)
from caproute.bandits.report import write_report
from caproute.errors import ConfigError, DataError


def obs_frame() -> pd.DataFrame:
    """Two queries, two models; q2 lacks model b on purpose in :func:`test_incomplete_query_dropped`."""
    rows = []
    for q, m, scores, costs in [("q1", "a", [1, 0], [1.0, 3.0]), ("q1", "b", [1, 1], [0.0, 0.0]),
                                ("q2", "a", [0, 0], [4.0, 4.0]), ("q2", "b", [1, 0], [2.0, 2.0])]:
        for r, (s, c) in enumerate(zip(scores, costs, strict=True)):
            rows.append({"dataset": "d", "split": "train", "query_id": q, "model": m, "prompt_variant_id": -1,
                         "decode_id": r, "observation_type": "decoding_variation", "score": float(s),
                         "cost": c, "question": f"text of {q}"})
    return pd.DataFrame(rows)


def test_utilities_from_observations_by_hand():
    env = environment_from_observations(obs_frame(), lam=1.0, scale=0.1)
    assert env.models == ("a", "b") and list(env.query_ids) == ["q1", "q2"]
    # costs min-max over the dataset: min 0, max 4 -> q1/a: (0.25 + 0.75)/2 = 0.5; q2/a: 1; q2/b: 0.5
    np.testing.assert_allclose(env.perf, [[0.5, 1.0], [0.0, 0.5]])
    np.testing.assert_allclose(env.cost, [[0.5, 0.0], [1.0, 0.5]])
    np.testing.assert_allclose(env.utilities, [[0.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(env.sigma_q[0], [np.std([1, 0], ddof=1), 0.0])
    assert env.categories is None and env.texts == ["text of q1", "text of q2"]
    # P(b beats a on q1) = sigmoid(1 / 0.1); feedback uses the round's uniform
    p = 1 / (1 + np.exp(-10.0))
    assert env.preference_probability(np.array([0]), np.array([1]), np.array([0]))[0] == pytest.approx(p)
    assert env.feedback(0, 1, 0, p - 1e-9) == 1 and env.feedback(0, 1, 0, p + 1e-9) == -1
    assert env.feedback(0, 1, 1, 0.49) == 1 and env.feedback(0, 1, 1, 0.51) == -1   # same arm: a coin


def test_incomplete_query_dropped_and_categories_from_datasets():
    df = obs_frame()
    df = df[~((df["query_id"] == "q2") & (df["model"] == "b"))]
    env = environment_from_observations(df)
    assert list(env.query_ids) == ["q1"] and env.meta["dropped_incomplete_queries"] == 1
    two = pd.concat([obs_frame(), obs_frame().assign(dataset="e")], ignore_index=True)
    env2 = environment_from_observations(two)
    assert sorted(set(env2.categories)) == ["d", "e"] and env2.n_queries == 4
    assert set(env2.query_ids) == {"d/q1", "d/q2", "e/q1", "e/q2"}
    with pytest.raises(DataError, match="no observations"):
        environment_from_observations(df.iloc[:0])


def test_bradley_terry_fit():
    # balanced record -> equal strengths; a MAP solution has zero gradient
    w, lo, c = comparisons_from_labels(np.array([0, 1]), np.array([1, 0]), np.array([1.0, 1.0]))
    np.testing.assert_allclose(fit_bradley_terry(2, w, lo, c), [0.0, 0.0], atol=1e-12)
    w, lo, c = comparisons_from_labels(np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([1.0, 1.0, 0.0]))
    assert list(w) == [0, 0, 1, 2] and list(lo) == [1, 2, 2, 1] and list(c) == [1, 1, 0.5, 0.5]
    r = fit_bradley_terry(3, w, lo, c, prior_var=2.0)
    p = 1 / (1 + np.exp(-(r[w] - r[lo])))
    grad = -r / 2.0
    np.add.at(grad, w, c * (1 - p))
    np.add.at(grad, lo, -c * (1 - p))
    np.testing.assert_allclose(grad, 0.0, atol=1e-9)
    assert r[0] > r[1] == pytest.approx(r[2])


def pairs_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "instruction": ["i1", "i1", "i1", "i2"], "input": ["", "", "", "ctx"],
        "model_1": ["x", "y", "x", "x"], "model_2": ["y", "z", "z", "y"],
        "human_majority": pd.array([1, 0, pd.NA, 2], dtype="Int64"),
        "gpt35_label": pd.array([2, 1, 1, pd.NA], dtype="Int64"),
        "pandalm7b_label": pd.array([1, 1, 1, 1], dtype="Int64"),
    })


def test_pairs_environment_uses_recorded_labels():
    env = environment_from_pairs(pairs_frame(), label="human")
    assert env.models == ("x", "y", "z") and env.texts == ["i1", "i2\nctx"] and env.scale == 1.0
    x, y, z = 0, 1, 2
    assert env.feedback(0, x, y, 0.99) == 1 and env.feedback(0, y, x, 0.01) == -1    # recorded, any u
    assert env.labels[0, y, z] == TIE and env.labels[0, x, z] == TIE                  # tie / no majority
    assert env.feedback(0, y, z, 0.3) == 1 and env.feedback(0, y, z, 0.7) == -1      # tie: a coin
    assert env.feedback(1, x, y, 0.01) == -1                                         # human: response2
    # i2 never compared x with z: Bradley-Terry on the fitted utilities
    p = 1 / (1 + np.exp(-(env.utilities[1, x] - env.utilities[1, z])))
    assert env.feedback(1, x, z, p - 1e-9) == 1 and env.feedback(1, x, z, p + 1e-9) == -1
    assert env.utilities[0, x] > env.utilities[0, y] and env.utilities[1, y] > env.utilities[1, x]
    np.testing.assert_allclose(env.perf[0], [0.75, 0.25, 0.5])   # won / compared, ties 1/2
    judge = environment_from_pairs(pairs_frame(), label="gpt35")
    assert judge.feedback(0, x, y, 0.0) == -1                    # the judge disagrees with the humans
    assert judge.labels[1, x, y] == 0                            # missing judge verdict: not recorded
    np.testing.assert_allclose(judge.utilities, env.utilities)   # regret stays against human labels
    with pytest.raises(DataError, match="label"):
        environment_from_pairs(pairs_frame(), label="crowd")
    with pytest.raises(DataError, match="line 2, field 'model_2'"):
        environment_from_pairs(pairs_frame().assign(model_2=["y", None, "z", "y"]))


def test_load_environment_errors():
    with pytest.raises(DataError, match="exactly one"):
        load_environment()
    with pytest.raises(DataError, match="unknown dataset"):
        load_environment(data="builtin", dataset="nope")


def test_builtin_environment():
    from caproute.data.source import read_source

    obs = read_source("builtin")
    env = load_environment(data="builtin")
    assert env.n_queries == obs["query_id"].nunique() and env.n_models == obs["model"].nunique()
    assert env.categories is None and np.isfinite(env.utilities).all()


def test_splits_and_streams():
    cats = np.array(["a"] * 50 + ["b"] * 10)
    off, on = split_offline(60, cats, 0.2, 5, 0)
    assert len(np.intersect1d(off, on)) == 0 and len(off) + len(on) == 60
    assert (cats[off] == "a").sum() == 10 and (cats[off] == "b").sum() == 5
    sub = stratified_subsample(60, cats, 30, 0)
    assert len(sub) == 30 and (cats[sub] == "b").sum() == 5
    assert len(stratified_subsample(60, cats, None, 0)) == 60
    s1, u1 = make_stream(7, 100, 3)
    s2, u2 = make_stream(7, 100, 3)
    assert (s1 == s2).all() and (u1 == u2).all() and s1.max() < 7
    assert not (make_stream(7, 100, 4)[0] == s1).all()


def test_full_information_logistic_recovers_a_linear_bt_model():
    # u = <theta*, x ⊙ a>: the full-information BT fit must rank the arms like theta* on every query
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    arms = np.eye(3)
    theta_star = np.array([2.0, -1.0, 0.5])
    u = (X * theta_star) @ arms.T
    theta = full_information_logistic(X, arms, 1.0, u, bt_scale=0.1, sigma0=100.0)
    assert greedy_regret(theta, X, arms, 1.0, u) == pytest.approx(0.0)
    assert float(theta @ theta_star) > 0
    # identical arms cannot be told apart: greedy plays arm 0, the regret is the mean gap to the best
    same = np.ones((2, 3))
    u2 = np.column_stack([np.zeros(40), np.ones(40)])
    t2 = full_information_logistic(X, same, 1.0, u2, bt_scale=0.1)
    assert np.allclose(t2, 0.0) and greedy_regret(t2, X, same, 1.0, u2) == pytest.approx(1.0)


def test_arm_residual_makes_tied_arms_distinct():
    from caproute.bandits import ccft
    from caproute.bandits.arms import add_residual, arm_summary, residual_directions

    rng = np.random.default_rng(1)
    n, k, m, d = 60, 6, 2, 8
    E = rng.normal(size=(n, d))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    cats = np.array(["a", "b"] * (n // 2))
    perf = rng.random((n, k))
    xi = ccft.category_embeddings(E, cats, ["a", "b"])
    table = ccft.category_table(perf, cats, ["a", "b"])
    W = ccft.category_weights(table, np.zeros((k, m)), "excel-mask", tau=1)
    arms = ccft.model_embeddings(xi, W)
    before = arm_summary(arms, [f"m{j}" for j in range(k)])
    assert before["distinct"] <= 3 and before["rank"] <= m and before["tied"]   # top-1 in no category: tied
    fixed = add_residual(arms, residual_directions(E, perf), 0.5)
    after = arm_summary(fixed, [f"m{j}" for j in range(k)])
    assert after["distinct"] == k and after["rank"] == k and after["tied"] == []
    np.testing.assert_allclose(np.linalg.norm(fixed, axis=1), 1.0)
    np.testing.assert_array_equal(add_residual(arms, residual_directions(E, perf), 0.0), arms)


def synthetic_env(n=60, k=4, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    arms = rng.normal(size=(k, d))
    arms /= np.linalg.norm(arms, axis=1, keepdims=True)
    u = 0.3 * (X[:, None, :] * arms[None]).sum(-1) + 0.5
    env = DuelEnvironment("toy", np.array([f"q{i}" for i in range(n)]), [f"t{i}" for i in range(n)],
                          tuple(f"m{j}" for j in range(k)), u, np.clip(u, 0, 1), np.zeros((n, k)),
                          np.zeros((n, k)), np.array(["c0", "c1"] * (n // 2)))
    return env, {"toy": EmbeddingSet("toy", X, arms, 2.0, "none", np.eye(k), ["c0", "c1"])}


def test_grid_is_identical_for_any_jobs_and_report(tmp_path):
    env, embs = synthetic_env()
    spec = DuelSpec(rounds=60, seeds=2, embeddings=("toy",), sampler="laplace")
    with pytest.raises(ConfigError, match="unknown embeddings"):
        run_duel(env, spec, prepared=embs, progress=False)
    spec = DuelSpec(rounds=60, seeds=2, embeddings=("minilm",), sampler="laplace",
                    policies=("fgts-cdb", "uniform", "best-fixed", "eps-greedy", "maxinp", "dars-knn"))
    embs = {"minilm": embs["toy"]}
    r1 = run_duel(env, spec, prepared=embs, progress=False, jobs=1)
    r2 = run_duel(env, spec, prepared=embs, progress=False, jobs=2)
    assert len(r1.cells) == len(r2.cells) == 2 * 6
    for a, b in zip(r1.cells, r2.cells, strict=True):
        assert (a["policy"], a["seed"]) == (b["policy"], b["seed"])
        np.testing.assert_array_equal(a["average"], b["average"])
    rows = {(r["policy"], r["embeddings"]): r for r in r1.rows()}
    assert set(rows) == {("fgts-cdb", "minilm"), ("uniform", "none"), ("best-fixed", "none"),
                         ("eps-greedy", "minilm"), ("maxinp", "minilm"), ("dars-knn", "minilm")}
    for r in rows.values():
        assert r["rounds"] == 60 and r["seeds"] == 2 and r["regret_mean"] >= r["weak_regret_mean"] >= 0
        assert r["late_rounds"] == 12 and r["late_per_round_mean"] >= 0
        # learners are also scored as single-model routers (their point estimate, played greedily)
        assert ("greedy_late_mean" in r) == (r["policy"] in ("fgts-cdb", "eps-greedy", "maxinp"))
    late = np.mean([c["average"][-12:].mean() for c in r1.cells if c["policy"] == "uniform"])
    assert rows[("uniform", "none")]["late_per_round_mean"] == pytest.approx(float(late), rel=1e-5)
    assert r1.meta["arms"]["minilm"]["K"] == 4 and "full_info_logistic" in r1.meta["per_round_regret_reference"]
    # best-fixed plays one arm: average regret == weak regret
    assert rows[("best-fixed", "none")]["regret_mean"] == pytest.approx(rows[("best-fixed", "none")]["weak_regret_mean"])
    # the cumulative curve of a cell is the running sum of its per-round regret
    cum = r1.curves("average")[("uniform", "none")]
    assert cum.shape == (2, 60) and cum[0, -1] == pytest.approx(float(r1.cells[1]["average"].astype(float).sum()))
    paths = write_report(r1, tmp_path / "rep")
    for key in ("regret", "weak_regret", "table", "rows", "meta", "curves"):
        assert paths[key].exists() and paths[key].stat().st_size > 0
    assert paths["regret"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # named for what ran, with its settings (issue 24.1)
    table = paths["table"].read_text()
    assert "| FGTS.CDB (Laplace+importance, η 0.25, μ 1/√T) | minilm | 60 |" in table
    assert "sampler laplace (importance feel-good), η 0.25, μ 1/√T = 0.1291, arm component γ 0" in table


@pytest.mark.shared
def test_shared_sources(shared_data, pandalm_file):
    rb = load_environment(data=shared_data / "routerdc_7llm_repeated" / "routerbench0shot_subset_long.parquet")
    assert rb.n_models == 11 and sorted(set(rb.categories)) == ["arc-challenge", "mbpp", "winogrande"]
    assert rb.meta["dropped_unscored_queries"] == 14 and rb.n_queries == 3150
    assert np.isfinite(rb.utilities).all() and (rb.cost >= 0).all() and rb.cost.max() <= 1
    pl = load_environment(data=pandalm_file, label="pandalm7b")
    assert pl.n_queries == 170 and pl.n_models == 5 and pl.meta["n_pairs"] == 999
    assert ((pl.labels != 0).sum(axis=(1, 2)) > 0).all()          # every instruction has a recorded pair


def test_environment_from_a_duckdb_store(tmp_path):
    from caproute.data.source import read_source
    from caproute.data.store import ObservationStore

    obs = read_source("builtin")
    two = pd.concat([obs, obs.assign(dataset="copy")], ignore_index=True)
    with ObservationStore(tmp_path / "obs.duckdb") as store:
        store.upsert(two, source="test")
    env = load_environment(store=tmp_path / "obs.duckdb")
    assert sorted(set(env.categories)) == sorted(set(two["dataset"]))          # one category per dataset
    assert env.n_queries == 2 * obs["query_id"].nunique()
    one = load_environment(store=tmp_path / "obs.duckdb", dataset="copy")
    direct = load_environment(data="builtin")
    np.testing.assert_allclose(one.utilities, direct.utilities)


def test_first_seed_runs_the_later_seeds_of_a_longer_run():
    # tuning and reported runs keep their seed ranges apart (issue 24.2): first_seed = 1, one seed
    # replays exactly seed 1 of a two-seed run (same stream, same policy seed), and nothing else
    env, embs = synthetic_env()
    embs = {"minilm": embs["toy"]}
    spec = DuelSpec(rounds=40, seeds=2, embeddings=("minilm",), sampler="laplace", policies=("fgts-cdb", "uniform"),
                    references=False)
    both = run_duel(env, spec, prepared=embs, progress=False)
    late = run_duel(env, DuelSpec(rounds=40, seeds=1, first_seed=1, embeddings=("minilm",), sampler="laplace",
                                  policies=("fgts-cdb", "uniform"), references=False), prepared=embs, progress=False)
    assert sorted({c["seed"] for c in late.cells}) == [1]
    for c in late.cells:
        twin = next(b for b in both.cells if (b["policy"], b["seed"]) == (c["policy"], 1))
        np.testing.assert_array_equal(c["average"], twin["average"])
    seed0 = next(b for b in both.cells if (b["policy"], b["seed"]) == ("fgts-cdb", 0))
    assert not np.array_equal(seed0["pairs"], late.cells[0]["pairs"])
    with pytest.raises(ConfigError, match="first_seed"):
        DuelSpec(first_seed=-1).validate()


def test_subsample_seed_fixes_the_pool_while_the_split_varies():
    cats = np.array(["a"] * 30 + ["b"] * 50)
    fixed = [pool_and_split(80, cats, DuelSpec(max_queries=40, split_seed=s, subsample_seed=0)) for s in (1, 2)]
    np.testing.assert_array_equal(fixed[0][0], fixed[1][0])              # the same 40 queries
    assert not np.array_equal(fixed[0][1], fixed[1][1])                    # split differently
    for keep, off, on in fixed:
        assert keep.size == 40 and np.array_equal(np.sort(np.concatenate([off, on])), np.arange(40))
        assert (cats[keep][off] == "a").sum() == 5 == (cats[keep][off] == "b").sum()   # max(20 % of 15 / 25, 5)
    # default: the subsample follows split_seed, and equals the old two-step rule
    a, b = (pool_and_split(80, cats, DuelSpec(max_queries=40, split_seed=s)) for s in (1, 2))
    assert not np.array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[0], stratified_subsample(80, cats, 40, 1))
    np.testing.assert_array_equal(a[1], split_offline(40, cats[a[0]], 0.2, 5, 1)[0])


def test_split_per_seed_runs_each_seed_on_its_own_split():
    # the results page's protocol (issue 24.2): seed s on offline split s; each seed equals a one-seed
    # run with first_seed = split_seed = s, and the meta keeps every seed's split
    env, embs = synthetic_env()
    embs = {"minilm": embs["toy"]}
    common = dict(rounds=30, embeddings=("minilm",), sampler="laplace", policies=("fgts-cdb", "uniform"),
                  references=False, max_queries=None)
    per = run_duel(env, DuelSpec(seeds=2, first_seed=3, split_per_seed=True, **common), prepared=embs, progress=False)
    assert [s["split_seed"] for s in per.meta["splits"]] == [3, 4] and [s["seed"] for s in per.meta["splits"]] == [3, 4]
    assert per.meta["splits"][0]["offline_queries"] != per.meta["splits"][1]["offline_queries"]
    for s in (3, 4):
        one = run_duel(env, DuelSpec(seeds=1, first_seed=s, split_seed=s, **common), prepared=embs, progress=False)
        assert one.meta["offline_queries"] == per.meta["splits"][s - 3]["offline_queries"]
        for c in one.cells:
            twin = next(p for p in per.cells if (p["policy"], p["seed"]) == (c["policy"], s))
            np.testing.assert_array_equal(c["average"], twin["average"])
    shared = run_duel(env, DuelSpec(seeds=2, first_seed=3, split_seed=3, **common), prepared=embs, progress=False)
    seed4 = next(c for c in shared.cells if (c["policy"], c["seed"]) == ("fgts-cdb", 4))
    assert not np.array_equal(seed4["pairs"], next(c for c in per.cells if (c["policy"], c["seed"]) == ("fgts-cdb", 4))["pairs"])
    assert {r["seeds"] for r in per.rows()} == {2}
    for bad in ("split_seed", "subsample_seed"):
        with pytest.raises(ConfigError, match=bad):
            DuelSpec(**{bad: -1}).validate()
