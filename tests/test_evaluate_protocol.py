"""The evaluation protocol: test views, reference rows, re-split and pooling (hand-computed)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import hypergeom

sys.path.insert(0, str(Path(__file__).parent))
from _evaluate_toy import EXPECTED, toy_observations  # noqa: E402
from caproute.errors import DataError  # noqa: E402
from caproute.evaluate.bench import reference_rows  # noqa: E402
from caproute.evaluate.protocol import (  # noqa: E402
    load_experiment,
    pool_datasets,
    prepare_experiment,
    resplit_decodes,
)


def test_views_hold_hand_computed_means():
    exp = prepare_experiment(toy_observations())
    assert exp.models == ("a", "b")
    assert exp.train_query_ids.tolist() == ["t0", "t1", "t2", "t3"]
    assert exp.test_query_ids.tolist() == ["s0", "s1"]
    rew, dec = exp.views["rewrite"], exp.views["decode"]
    assert rew.q == pytest.approx(np.array([[1 / 3, 2 / 3], [0, 1]]))
    assert rew.c == pytest.approx(np.array([[0, 0.5], [0, 0.5]]))     # cost map fitted on train rows
    assert dec.c == pytest.approx(np.array([[0, 1], [0, 1]]))
    assert dec.utility(0.05) == pytest.approx(np.array([[1, 2 / 3 - 0.05], [1 / 3, 2 / 3 - 0.05]]))
    assert rew.n_obs.tolist() == [[3, 3], [3, 3]]
    assert rew.rows.tolist() == [0, 1]
    # the router reads the original question, never a rewrite
    assert exp.train_texts[0] == "question t0 about topic 0"


def test_reference_rows_by_hand():
    exp = prepare_experiment(toy_observations())
    ref = reference_rows(exp, 0.05).set_index(["router", "view"])
    for view in ("rewrite", "decode"):
        u, q, model = EXPECTED["best_fixed"][view]
        row = ref.loc[("best_fixed", view)]
        assert row["utility_mean"] == pytest.approx(u) and row["quality_mean"] == pytest.approx(q)
        assert row["model"] == model
        u, q = EXPECTED["oracle"][view]
        row = ref.loc[("oracle", view)]
        assert row["utility_mean"] == pytest.approx(u) and row["quality_mean"] == pytest.approx(q)


def test_one_view_dataset_reports_that_view():
    obs = toy_observations()
    obs = obs[~((obs["split"] == "test") & (obs["observation_type"] == "prompt_variation"))]
    exp = prepare_experiment(obs)
    assert list(exp.views) == ["decode"]


def test_test_query_missing_a_model_is_dropped_from_that_view():
    obs = toy_observations()
    obs = obs[~((obs["query_id"] == "s1") & (obs["model"] == "b") & (obs["observation_type"] == "decoding_variation"))]
    exp = prepare_experiment(obs)
    assert exp.views["decode"].query_ids.tolist() == ["s0"]
    assert exp.views["decode"].dropped == 1
    assert exp.views["rewrite"].query_ids.tolist() == ["s0", "s1"]


def test_training_query_missing_a_model_is_kept_with_its_coverage():
    """Partial grids are first-class (issue 22.1): the query stays, its missing pair is masked."""
    obs = toy_observations()
    obs = obs[~((obs["query_id"] == "t2") & (obs["model"] == "a"))]
    exp = prepare_experiment(obs)
    assert exp.train_query_ids.tolist() == ["t0", "t1", "t2", "t3"]
    assert exp.meta["train_queries_dropped"] == 0
    cov = exp.meta["train_coverage"]
    assert (cov["observed_pairs"], cov["total_pairs"]) == (7, 8)
    assert cov["per_model"] == {"a": 3, "b": 4}


def test_prepare_errors_name_the_problem():
    obs = toy_observations()
    with pytest.raises(DataError, match="no test rows"):
        prepare_experiment(obs[obs["split"] == "train"])
    with pytest.raises(DataError, match="no training rows"):
        prepare_experiment(obs[obs["split"] == "test"])
    both = obs.copy()
    both.loc[(both["split"] == "test") & (both["query_id"] == "s0"), "query_id"] = "t0"
    with pytest.raises(DataError, match="both splits"):
        prepare_experiment(both)
    with pytest.raises(DataError, match="one dataset at a time"):
        prepare_experiment(pd.concat([obs, toy_observations("other")]))


def _k_of_n(n_queries: int, k, n: int = 10, models=("m1", "m2")) -> pd.DataFrame:
    rows = []
    for qi in range(n_queries):
        for mi, m in enumerate(models):
            kk = k if np.isscalar(k) else k[(qi + mi) % len(k)]
            for d in range(n):
                rows.append({"dataset": "ds", "split": "train", "query_id": f"q{qi:04d}", "model": m,
                             "prompt_variant_id": -1, "decode_id": d, "observation_type": "decoding_variation",
                             "score": float(d < kk), "cost": 0.0, "question": f"q {qi}"})
    return pd.DataFrame(rows)


def test_resplit_counts_and_determinism():
    obs = _k_of_n(40, [0, 3, 7, 10])
    out = resplit_decodes(obs, test_fraction=0.5, test_decodes=3, seed=5)
    per_query = out.groupby("query_id")["split"].agg(set)
    assert all(len(s) == 1 for s in per_query)                    # a query is train or test
    assert (per_query.map(lambda s: next(iter(s))) == "test").sum() == 20
    sizes = out.groupby(["query_id", "model", "split"]).size().reset_index(name="n")
    assert set(sizes.loc[sizes["split"] == "train", "n"]) == {7}
    assert set(sizes.loc[sizes["split"] == "test", "n"]) == {3}
    again = resplit_decodes(obs.sample(frac=1.0, random_state=1), test_fraction=0.5, test_decodes=3, seed=5)
    key = ["query_id", "model", "decode_id"]
    assert out.sort_values(key).reset_index(drop=True)[key + ["split"]].equals(
        again.sort_values(key).reset_index(drop=True)[key + ["split"]])


def test_resplit_test_successes_are_exactly_hypergeometric():
    # 1500 pairs with k = 4 successes of 10; count successes in each pair's 3 held-out decodes
    obs = _k_of_n(750, 4)
    out = resplit_decodes(obs, test_fraction=0.5, test_decodes=3, seed=0)
    # every pair's held-out part: the test rows of test queries; for train queries the held-out part is
    # the complement of the 7 training rows, so its successes are 4 minus theirs
    tr = out[out["split"] == "train"].groupby(["query_id", "model"])["score"].sum()
    te = out[out["split"] == "test"].groupby(["query_id", "model"])["score"].sum()
    held_out = np.concatenate([te.to_numpy(), 4 - tr.to_numpy()]).astype(int)
    assert held_out.size == 1500
    freq = np.bincount(held_out, minlength=4) / held_out.size
    pmf = hypergeom(10, 4, 3).pmf(np.arange(4))        # 1/6, 1/2, 3/10, 1/30
    assert freq == pytest.approx(pmf, abs=0.04)


def test_resplit_rejects_too_few_observations():
    with pytest.raises(DataError, match="at least 4"):
        resplit_decodes(_k_of_n(4, 1, n=3), test_decodes=3)
    with pytest.raises(DataError, match="fraction"):
        resplit_decodes(_k_of_n(4, 1), test_fraction=1.0)


def test_pool_normalises_costs_per_dataset_on_training_rows():
    a = toy_observations("a")
    b = toy_observations("b")
    b["cost"] = b["cost"] * 10           # another price scale: after per-dataset min-max it is the same
    pooled, norm = pool_datasets(pd.concat([a, b], ignore_index=True), ["a", "b"])
    assert set(pooled["dataset"]) == {"a+b"}
    assert pooled["query_id"].str.startswith(("a/", "b/")).all()
    assert norm.ranges_ == {"a+b": (0.0, 1.0)}
    exp = prepare_experiment(pooled, normalizer=norm)
    assert exp.views["rewrite"].c[:, 1] == pytest.approx([0.5, 0.5, 0.5, 0.5])
    assert len(exp.train_query_ids) == 8


def test_load_experiment_builtin_and_dataset_errors(tmp_path):
    exp = load_experiment(data="builtin")
    assert exp.dataset == "tinypool-mix" and set(exp.views) == {"rewrite", "decode"}
    assert exp.grid_shape() == (3, 3)
    with pytest.raises(DataError, match="no dataset 'nope'"):
        load_experiment(data="builtin", dataset="nope")
    two = pd.concat([toy_observations("x"), toy_observations("y")], ignore_index=True)
    f = tmp_path / "two.parquet"
    two.to_parquet(f)
    with pytest.raises(DataError, match="several datasets"):
        load_experiment(data=str(f))
    assert load_experiment(data=str(f), dataset="y").dataset == "y"
    assert load_experiment(data=str(f), dataset="all").dataset == "x+y"
    with pytest.raises(DataError, match="exactly one"):
        load_experiment()


def test_load_experiment_from_a_store(tmp_path):
    from caproute.data.store import ObservationStore

    with ObservationStore(tmp_path / "obs.duckdb") as store:
        store.upsert(toy_observations(), source="toy")
    exp = load_experiment(store=tmp_path / "obs.duckdb")
    assert exp.dataset == "toy" and exp.models == ("a", "b")
    assert exp.views["decode"].q == pytest.approx(prepare_experiment(toy_observations()).views["decode"].q)
