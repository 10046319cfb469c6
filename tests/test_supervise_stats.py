"""Hand-computed checks of the DARS statistics, normalisation, utility and labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from caproute.supervise.labels import hard_labels, pairwise_preferences, soft_labels
from caproute.supervise.normalize import CostNormalizer, min_max
from caproute.supervise.stats import capability_stats
from caproute.supervise.supervision import from_stats
from caproute.supervise.utility import UtilityConfig, utility


def obs_frame(rows):
    cols = ["dataset", "split", "query_id", "model", "prompt_variant_id", "decode_id", "score", "cost"]
    df = pd.DataFrame(rows, columns=cols)
    df["observation_type"] = np.where(df["prompt_variant_id"] >= 0, "prompt_variation", "decoding_variation")
    return df


@pytest.fixture
def grid():
    # query q1, model A: 2 rewrites x 2 decodes with scores [[1, 0], [1, 1]]; costs 1, 2, 3, 4
    # query q1, model B: one observation, score 0.5, cost 0
    rows = [
        ("d", "train", "q1", "A", 0, 0, 1.0, 1.0),
        ("d", "train", "q1", "A", 0, 1, 0.0, 2.0),
        ("d", "train", "q1", "A", 1, 0, 1.0, 3.0),
        ("d", "train", "q1", "A", 1, 1, 1.0, 4.0),
        ("d", "train", "q1", "B", 0, 0, 0.5, 0.0),
    ]
    return obs_frame(rows)


def test_capability_stats_hand_computed(grid):
    cost = CostNormalizer().fit(grid).transform(grid)   # min 0, max 4 -> c/4
    np.testing.assert_allclose(cost, [0.25, 0.5, 0.75, 1.0, 0.0])
    st = capability_stats(grid, cost).set_index("model")
    a = st.loc["A"]
    assert a["n"] == 4 and a["n_rewrites"] == 2
    assert a["mu_q"] == pytest.approx(0.75)
    assert a["mu_c"] == pytest.approx(0.625)
    # sample std of [1, 0, 1, 1]: mean .75, squared deviations .0625*3 + .5625 = .75, /3 = .25
    assert a["sigma_q"] == pytest.approx(0.5)
    # population variance .75/4 = .1875; rewrite means .5 and 1 -> between = ((.25)^2 + (.25)^2)/2
    assert a["var_total"] == pytest.approx(0.1875)
    assert a["var_input"] == pytest.approx(0.0625)
    # within: rewrite 0 var_pop([1,0]) = .25, rewrite 1 = 0 -> mean .125
    assert a["var_output"] == pytest.approx(0.125)
    # rewrite risk: sample std of [.5, 1] = sqrt(.125); decode risk: mean(std([1,0]), std([1,1]))
    assert a["sigma_rewrite"] == pytest.approx(np.sqrt(0.125))
    assert a["sigma_decode"] == pytest.approx(np.sqrt(0.5) / 2)
    b = st.loc["B"]
    assert b["n"] == 1 and b["sigma_q"] == 0.0 and b["var_total"] == 0.0
    assert b["mu_q"] == 0.5 and b["mu_c"] == 0.0


def test_utility_and_overrides():
    assert utility(0.75, 0.625, 0.5) == pytest.approx(0.75 - 0.05 * 0.625 - 0.2 * 0.5)
    cfg = UtilityConfig(overrides={"gpqa": {"beta": 0.1}})
    assert cfg.for_dataset("gpqa") == (0.05, 0.1)
    assert cfg.for_dataset("math") == (0.05, 0.2)
    with pytest.raises(ValueError):
        UtilityConfig(lam=-1).for_dataset("x")


def test_cost_normaliser_fits_train_only_and_is_reused():
    train = obs_frame([("d", "train", "q", "A", 0, 0, 1, 2.0), ("d", "train", "q", "B", 0, 0, 1, 6.0)])
    test = obs_frame([("d", "test", "t", "A", -1, 0, 1, 10.0)])
    norm = CostNormalizer().fit(train)
    assert norm.ranges_ == {"d": (2.0, 6.0)}
    # test cost above the training max maps above 1: the map is reused, not refitted
    assert norm.transform(test)[0] == pytest.approx(2.0)
    assert min_max(np.array([3.0]), 3.0, 3.0)[0] == 0.0
    assert CostNormalizer.from_dict(norm.to_dict()).ranges_ == norm.ranges_


def test_hard_labels_tie_rule():
    u = np.array([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9], [0.3, 0.3, 0.3]])
    c = np.array([[0.9, 0.1, 0.0], [0.0, 0.5, 0.5], [0.2, 0.2, 0.2]])
    # row 0: tie A/B, B cheaper; row 1: tie B/C same cost -> first (B); row 2: all tie -> A
    np.testing.assert_array_equal(hard_labels(u, c), [1, 1, 0])
    np.testing.assert_array_equal(hard_labels(u), [0, 1, 0])


def test_soft_labels_hand_computed():
    p = soft_labels(np.array([[0.0, 0.1]]), tau=0.1)
    e = np.exp([0.0, 1.0])
    np.testing.assert_allclose(p[0], e / e.sum())
    np.testing.assert_allclose(soft_labels(np.random.default_rng(0).random((5, 4))).sum(axis=1), 1.0)
    with pytest.raises(ValueError):
        soft_labels(np.zeros((1, 2)), tau=0)


def test_pairwise_preferences():
    pref = pairwise_preferences(np.array([[0.5, 0.2, 0.5]]))
    assert list(zip(pref["a"], pref["b"], pref["label"], strict=True)) == [
        (0, 1, 1.0), (0, 2, 0.5), (1, 2, 0.0)]
    np.testing.assert_allclose(pref["margin"], [0.3, 0.0, -0.3])


def test_from_stats_matrices_and_missing_pairs(grid):
    st = capability_stats(grid, np.zeros(len(grid)))
    sup = from_stats(st)
    assert sup.models == ("A", "B") and list(sup.query_ids) == ["q1"]
    np.testing.assert_allclose(sup.mu_q, [[0.75, 0.5]])
    incomplete = pd.concat([st, st.assign(query_id="q2").iloc[:1]])
    from caproute.errors import DataError

    with pytest.raises(DataError, match=r"\(q2, B\)"):
        from_stats(incomplete)
    sup2 = from_stats(incomplete, drop_incomplete=True)
    assert sup2.n_queries == 1 and sup2.meta["dropped_incomplete_queries"] == 1


def test_vectorised_matches_pandas_reference():
    rng = np.random.default_rng(3)
    n = 4000
    df = obs_frame([])
    df = pd.DataFrame({
        "dataset": rng.choice(["x", "y"], n), "split": "train",
        "query_id": rng.integers(0, 40, n).astype(str), "model": rng.choice(list("ABC"), n),
        "prompt_variant_id": rng.integers(-1, 4, n), "decode_id": np.arange(n),
        "score": rng.random(n).round(2), "cost": rng.random(n)})
    st = capability_stats(df, df["cost"].to_numpy()).set_index(["dataset", "query_id", "model"]).sort_index()
    g = df.groupby(["dataset", "query_id", "model"])
    ref = pd.DataFrame({"mu_q": g["score"].mean(), "mu_c": g["cost"].mean(),
                        "sigma_q": g["score"].std(ddof=1).fillna(0.0), "n": g.size(),
                        "var_total": g["score"].var(ddof=0)}).sort_index()
    for col in ref.columns:
        np.testing.assert_allclose(st[col].to_numpy(float), ref[col].to_numpy(float), atol=1e-12)
    between = df.groupby(["dataset", "query_id", "model", "prompt_variant_id"])["score"].agg(["mean", "size"])
    # input variance = count-weighted variance of rewrite means around the pair mean
    merged = between.join(ref["mu_q"], on=["dataset", "query_id", "model"])
    vin = ((merged["mean"] - merged["mu_q"]) ** 2 * merged["size"]).groupby(
        level=[0, 1, 2]).sum() / ref["n"]
    np.testing.assert_allclose(st["var_input"].to_numpy(), vin.sort_index().to_numpy(), atol=1e-12)


def test_hard_labels_tie_break_only_where_a_row_ties():
    """Rows without a tie skip the cost tie-break; a row with a NaN utility ties no model, and must
    not hide a tie in another row."""
    u = np.array([[0.1, 0.7, 0.3], [np.nan, 0.2, 0.9], [0.4, 0.4 - 1e-13, 0.0]])
    c = np.array([[0.0, 0.9, 0.1], [0.0, 0.0, 0.0], [0.5, 0.1, 0.0]])
    # row 0: B alone; row 1: NaN -> no model tied -> the first; row 2: A and B within tol -> B, cheaper
    assert hard_labels(u, c).tolist() == [1, 0, 1]
    assert hard_labels(u[:1], c[:1]).tolist() == [1]
    assert hard_labels(u[1:], c[1:]).tolist() == [0, 1]     # one NaN row + two tied in the other
    assert hard_labels(np.zeros((0, 3)), np.zeros((0, 3))).tolist() == []

    def rule(ur, cr, tol=1e-12):   # the documented rule, one row at a time
        tied = [i for i, x in enumerate(ur) if not np.isnan(ur).any() and x >= max(ur) - tol]
        return min(tied, key=lambda i: (cr[i] > min(cr[j] for j in tied) + tol, i)) if tied else 0

    rng = np.random.default_rng(0)
    for _ in range(300):
        n, m = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        u, c = rng.integers(0, 3, (n, m)) / 2.0, rng.integers(0, 3, (n, m)).astype(float)
        if rng.random() < 0.3:
            u[rng.integers(n), rng.integers(m)] = np.nan
        assert hard_labels(u, c).tolist() == [rule(ur, cr) for ur, cr in zip(u, c, strict=True)]
